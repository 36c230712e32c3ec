"""im2col for a 2-D Conv node: the input patch each output position sees.

    patches[m, c, i*kw + j] = x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]

for the output positions m = (n, oh, ow) asked for.  With these, a group-1 Conv is the
matrix product  y[m, o] = sum_{c,k} patches[m, c, k] * W[o, c, k] + b[o], which is what the
reconstruction-error importance and the least-squares re-fit work on.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgekiln.passes.graph_edits import ints_attr


def conv_geometry(node: ir.Node, input_hw: tuple[int, int], kernel: tuple[int, int]):
    """(strides, dilations, pads as [top, left, bottom, right]) with auto_pad resolved."""
    strides = ints_attr(node, "strides", [1, 1])
    dilations = ints_attr(node, "dilations", [1, 1])
    pads = ints_attr(node, "pads", [0, 0, 0, 0])
    auto_pad = node.attributes.get("auto_pad")
    mode = auto_pad.value if auto_pad is not None else "NOTSET"
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for d in range(2):
            out = -(-input_hw[d] // strides[d])
            total = max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - input_hw[d])
            small, large = total // 2, total - total // 2
            pads[d], pads[d + 2] = (small, large) if mode == "SAME_UPPER" else (large, small)
    elif mode == "VALID":
        pads = [0, 0, 0, 0]
    return strides, dilations, pads


def output_hw(input_hw, kernel, strides, dilations, pads) -> tuple[int, int]:
    return tuple((input_hw[d] + pads[d] + pads[d + 2] - (kernel[d] - 1) * dilations[d] - 1) // strides[d] + 1
                 for d in range(2))


def conv_patches(node: ir.Node, x: np.ndarray, kernel: tuple[int, int], positions: np.ndarray) -> np.ndarray:
    """The patches [len(positions), C, kh*kw] of `x` [N, C, H, W] at flat output positions (n*OH + oh)*OW + ow."""
    strides, dilations, pads = conv_geometry(node, x.shape[2:], kernel)
    oh_count, ow_count = output_hw(x.shape[2:], kernel, strides, dilations, pads)
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n, rest = np.divmod(positions, oh_count * ow_count)
    oh, ow = np.divmod(rest, ow_count)
    ki, kj = np.meshgrid(np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij")
    rows = oh[:, None] * strides[0] + ki.ravel()[None, :] * dilations[0]
    cols = ow[:, None] * strides[1] + kj.ravel()[None, :] * dilations[1]
    # [M, K] index pairs gathered for every channel: [M, C, K]
    return padded[n[:, None, None], np.arange(x.shape[1])[None, :, None], rows[:, None, :], cols[:, None, :]]
