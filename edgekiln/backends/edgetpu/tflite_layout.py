"""ONNX (NCHW) to TFLite (NHWC) layout, decided at compile time so the file holds no TRANSPOSE.

Every 4-D activation of a Program is NCHW; its TFLite tensor is NHWC.  A `TensorLayout`
records how a TFLite tensor's elements relate to the Program tensor's:

    tflite = transpose(program.reshape(source_shape), perm).reshape(tflite_shape)

* 4-D activations: source = the NCHW shape, perm = (0, 2, 3, 1), tflite shape NHWC;
* everything else: identity;
* a Flatten / Reshape of an NCHW tensor to [1, K] read only by fully-connected layers keeps
  the NHWC element order (perm (0, 2, 3, 1) over the 4-D source) and the FC weight columns are
  permuted instead (`fc_column_order`), exactly what a TRANSPOSE before the flatten would do.

Weights: conv OIHW -> OHWI, depthwise [C, 1, kh, kw] -> [1, kh, kw, C].  Axes of concat,
mean, pad and softmax go through `nhwc_axis`.

Padding: TFLite has SAME and VALID only.  SAME pads total = max((ceil(in/s) − 1)·s + k_eff − in, 0),
with total // 2 before and the rest after (k_eff = (k − 1)·d + 1).  ONNX pads that equal one of
them map to it; any other pads become an explicit PAD before the op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


@dataclass(frozen=True)
class TensorLayout:
    program_shape: tuple[int, ...]
    source_shape: tuple[int, ...]
    perm: tuple[int, ...]
    tflite_shape: tuple[int, ...]

    @classmethod
    def for_shape(cls, shape: tuple[int, ...]) -> TensorLayout:
        """The default layout: NHWC for 4-D tensors, identity otherwise."""
        shape = tuple(shape)
        if len(shape) == 4:
            return cls(shape, shape, NCHW_TO_NHWC, tuple(shape[i] for i in NCHW_TO_NHWC))
        return cls(shape, shape, tuple(range(len(shape))), shape)

    @property
    def is_nhwc(self) -> bool:
        return len(self.program_shape) == 4 and self.perm == NCHW_TO_NHWC and self.source_shape == self.program_shape

    @property
    def keeps_order(self) -> bool:
        """True when the TFLite tensor holds the elements in the Program's C order (a reshape of it)."""
        moved = [axis for axis in self.perm if self.source_shape[axis] != 1]
        return moved == sorted(moved)

    def to_tflite(self, array: np.ndarray) -> np.ndarray:
        return np.transpose(np.asarray(array).reshape(self.source_shape), self.perm).reshape(self.tflite_shape)

    def from_tflite(self, array: np.ndarray) -> np.ndarray:
        inner = tuple(self.source_shape[axis] for axis in self.perm)
        return np.transpose(np.asarray(array).reshape(inner), np.argsort(self.perm)).reshape(self.program_shape)


def nhwc_axis(axis: int, rank: int) -> int:
    """The TFLite axis of Program axis `axis` for a tensor of `rank` in the default layout."""
    axis %= rank
    return NCHW_TO_NHWC.index(axis) if rank == 4 else axis


def fc_column_order(layout: TensorLayout) -> np.ndarray:
    """Index j -> the Program column that TFLite column j holds (for a flattened NCHW input)."""
    k = math.prod(layout.source_shape)
    return layout.to_tflite(np.arange(k)).reshape(-1)


def conv_weight_ohwi(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, (0, 2, 3, 1)))


def depthwise_weight_1hwc(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0)))


def same_pads(in_size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    out = -(-in_size // stride)
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


def padding_mode(pads: list[int], in_hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
                 dilations: tuple[int, int] = (1, 1)) -> str | None:
    """"VALID", "SAME", or None when ONNX `pads` [top, left, bottom, right] are neither."""
    if not any(pads):
        return "VALID"
    top, bottom = same_pads(in_hw[0], kernel[0], strides[0], dilations[0])
    left, right = same_pads(in_hw[1], kernel[1], strides[1], dilations[1])
    return "SAME" if list(pads) == [top, left, bottom, right] else None
