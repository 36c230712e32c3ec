"""`TorchPrefix`: the part of an ONNX graph that computes some values, re-expressed as torch ops.

Data-free calibration (zeroq.py) needs gradients of the activations entering each
BatchNormalization with respect to the model input; onnxruntime has no backward pass, so
the nodes those activations depend on (their ancestors, nothing more) are translated with
a small op table.  Weights become constant tensors; only the input has a gradient.

The graph has a static batch B0 (usually 1) but runs here with a batch of N samples, so an
op may not mix the batch axis with the others: Reshape / Flatten keep axis 0 and take the
rest of the static output shape; Transpose, Concat, Slice, Squeeze, Unsqueeze and
reductions must leave axis 0 alone.  `unsupported` lists the first node that breaks this
or whose op is not in the table, so the caller can fall back with a clear message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph


def _attr(node: ir.Node, name: str, default: Any = None) -> Any:
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


class PrefixError(Exception):
    """A node the op table cannot translate (caught by the caller, which falls back)."""

    def __init__(self, node: ir.Node, reason: str) -> None:
        super().__init__(f"node {node.name!r} ({node.op_type}): {reason}")


class TorchPrefix:
    """Computes `targets` (value names) from the graph inputs with torch; see the module docstring."""

    def __init__(self, graph: Graph, targets: Sequence[str]) -> None:
        import torch  # the caller has required the torch extra

        self.torch = torch
        self.graph = graph
        self.targets = list(targets)
        self.nodes = self._needed_nodes()
        self.batch = {v.name: (v.shape[0] if v.shape is not None and len(v.shape) else None) for v in graph.inputs}
        self.constants: dict[str, Any] = {}
        for node in self.nodes:
            self._check(node)

    def _needed_nodes(self) -> list[ir.Node]:
        producers = {out.name: node for node in self.graph.nodes for out in node.outputs}
        needed: set[int] = set()
        stack = [producers[t] for t in self.targets if t in producers]
        while stack:
            node = stack.pop()
            if id(node) in needed:
                continue
            needed.add(id(node))
            stack += [producers[i.name] for i in node.inputs if i is not None and i.name in producers]
        return [n for n in self.graph.nodes if id(n) in needed]  # graph order is topological

    def _check(self, node: ir.Node) -> None:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            raise PrefixError(node, "op not in the data-free calibration op table")
        check = CHECKS.get(node.op_type)
        if check is not None and (reason := check(self, node)):
            raise PrefixError(node, reason)

    # -- helpers the op functions use --------------------------------------------------------------------

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        return None if value is None else Graph.constant(value)

    def tensor(self, value: ir.Value) -> Any:
        if value.name not in self.constants:
            self.constants[value.name] = self.torch.from_numpy(np.array(Graph.constant(value)))
        return self.constants[value.name]

    @staticmethod
    def static_shape(value: ir.Value) -> tuple[int, ...] | None:
        return Graph.static_shape(value)

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        env: dict[str, Any] = dict(feeds)
        for node in self.nodes:
            args = []
            for value in node.inputs:
                if value is None or value.name == "":
                    args.append(None)
                elif value.name in env:
                    args.append(env[value.name])
                else:
                    args.append(self.tensor(value))
            outputs = OPS[node.op_type](self, node, args)
            for value, result in zip(node.outputs, outputs):
                env[value.name] = result
        return {t: env[t] for t in self.targets}


# -- padding ------------------------------------------------------------------------------------------

def _pads(node: ir.Node, in_shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> list[int]:
    """ONNX pads [begin..., end...], with auto_pad SAME_* made explicit from the static input shape."""
    auto = _attr(node, "auto_pad", "NOTSET")
    spatial = len(kernel)
    if auto in ("NOTSET", "VALID"):
        return list(_attr(node, "pads", [0] * 2 * spatial)) if auto == "NOTSET" else [0] * 2 * spatial
    begin, end = [], []
    for size, k, s, d in zip(in_shape[-spatial:], kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(large if auto == "SAME_LOWER" else small)
        end.append(small if auto == "SAME_LOWER" else large)
    return begin + end


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX [b1, b2, e1, e2] -> torch F.pad order (last axis first): [b2, e2, b1, e1]."""
    spatial = len(pads) // 2
    order = []
    for axis in reversed(range(spatial)):
        order += [pads[axis], pads[axis + spatial]]
    return order


def _symmetric(pads: Sequence[int]) -> bool:
    spatial = len(pads) // 2
    return list(pads[:spatial]) == list(pads[spatial:])


# -- the op table -------------------------------------------------------------------------------------

def _conv(p: TorchPrefix, node: ir.Node, args: list) -> list:
    F = p.torch.nn.functional
    x, w, b = (args + [None])[:3]
    spatial = w.dim() - 2
    strides = list(_attr(node, "strides", [1] * spatial))
    dilations = list(_attr(node, "dilations", [1] * spatial))
    kernel = list(_attr(node, "kernel_shape", w.shape[2:]))
    pads = _pads(node, p.static_shape(node.inputs[0]), kernel, strides, dilations)
    group = _attr(node, "group", 1)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    if _symmetric(pads):
        return [conv(x, w, b, strides, pads[:spatial], dilations, group)]
    return [conv(F.pad(x, _torch_pad(pads)), w, b, strides, 0, dilations, group)]


def _conv_transpose(p: TorchPrefix, node: ir.Node, args: list) -> list:
    F = p.torch.nn.functional
    x, w, b = (args + [None])[:3]
    spatial = w.dim() - 2
    strides = list(_attr(node, "strides", [1] * spatial))
    dilations = list(_attr(node, "dilations", [1] * spatial))
    pads = list(_attr(node, "pads", [0] * 2 * spatial))
    output_padding = list(_attr(node, "output_padding", [0] * spatial))
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[spatial]
    return [conv(x, w, b, strides, pads[:spatial], output_padding, _attr(node, "group", 1), dilations)]


def _check_conv_transpose(p: TorchPrefix, node: ir.Node) -> str | None:
    if _attr(node, "auto_pad", "NOTSET") != "NOTSET" or _attr(node, "output_shape") is not None:
        return "auto_pad / output_shape are not translated"
    pads = _attr(node, "pads")
    return None if pads is None or _symmetric(pads) else "asymmetric pads are not translated"


def _batch_norm(p: TorchPrefix, node: ir.Node, args: list) -> list:
    x, scale, bias, mean, var = args[:5]
    shape = [1, -1] + [1] * (x.dim() - 2)
    eps = _attr(node, "epsilon", 1e-5)
    inv = scale.reshape(shape) / p.torch.sqrt(var.reshape(shape) + eps)
    return [(x - mean.reshape(shape)) * inv + bias.reshape(shape)]


def _clip(p: TorchPrefix, node: ir.Node, args: list) -> list:
    x = args[0]
    low = p.const(node.inputs[1]) if len(node.inputs) > 1 else None
    high = p.const(node.inputs[2]) if len(node.inputs) > 2 else None
    return [p.torch.clamp(x, None if low is None else float(low), None if high is None else float(high))]


def _check_clip(p: TorchPrefix, node: ir.Node) -> str | None:
    for value in node.inputs[1:]:
        if value is not None and p.const(value) is None:
            return "min/max are not constants"
    return None


def _pool(p: TorchPrefix, node: ir.Node, args: list) -> list:
    F = p.torch.nn.functional
    x = args[0]
    kernel = list(_attr(node, "kernel_shape"))
    spatial = len(kernel)
    strides = list(_attr(node, "strides", [1] * spatial))
    dilations = list(_attr(node, "dilations", [1] * spatial))
    pads = _pads(node, p.static_shape(node.inputs[0]), kernel, strides, dilations)
    ceil = bool(_attr(node, "ceil_mode", 0))
    if node.op_type == "MaxPool":
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
        if not _symmetric(pads) or any(pads[i] > kernel[i] // 2 for i in range(spatial)):
            return [pool(F.pad(x, _torch_pad(pads), value=-math.inf), kernel, strides, 0, dilations, ceil)]
        return [pool(x, kernel, strides, pads[:spatial], dilations, ceil)]
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial]
    return [pool(x, kernel, strides, pads[:spatial], ceil, bool(_attr(node, "count_include_pad", 0)))]


def _check_pool(p: TorchPrefix, node: ir.Node) -> str | None:
    if node.op_type == "MaxPool" and len(node.outputs) > 1:
        return "MaxPool indices output is not translated"
    if node.op_type == "AveragePool":
        kernel = list(_attr(node, "kernel_shape"))
        strides = list(_attr(node, "strides", [1] * len(kernel)))
        pads = _pads(node, p.static_shape(node.inputs[0]), kernel, strides, [1] * len(kernel))
        if not _symmetric(pads) or any(pads[i] > kernel[i] // 2 for i in range(len(kernel))):
            return "asymmetric or large pads are not translated"
    return None


def _gemm(p: TorchPrefix, node: ir.Node, args: list) -> list:
    a, b, c = (args + [None])[:3]
    a = a.T if _attr(node, "transA", 0) else a
    b = b.T if _attr(node, "transB", 0) else b
    y = _attr(node, "alpha", 1.0) * (a @ b)
    return [y if c is None else y + _attr(node, "beta", 1.0) * c]


def _check_gemm(p: TorchPrefix, node: ir.Node) -> str | None:
    return "transA moves the batch axis" if _attr(node, "transA", 0) else None


def _reshape_like_output(p: TorchPrefix, node: ir.Node, args: list) -> list:
    """Reshape / Flatten / Squeeze / Unsqueeze: keep the batch axis, take the rest of the static output shape."""
    out = p.static_shape(node.outputs[0])
    return [args[0].reshape(args[0].shape[0], *out[1:])]


def _check_keeps_batch(p: TorchPrefix, node: ir.Node) -> str | None:
    in_shape, out_shape = p.static_shape(node.inputs[0]), p.static_shape(node.outputs[0])
    if in_shape is None or out_shape is None or not in_shape or not out_shape:
        return "needs static input and output shapes"
    if in_shape[0] != out_shape[0]:
        return f"changes the batch axis ({list(in_shape)} -> {list(out_shape)})"
    if node.op_type in ("Squeeze", "Unsqueeze"):
        axes = p.const(node.inputs[1]) if len(node.inputs) > 1 else _attr(node, "axes")
        if axes is None or any(int(a) % max(len(in_shape), len(out_shape)) == 0 for a in np.atleast_1d(axes)):
            return "squeezes or unsqueezes the batch axis"
    if node.op_type == "Flatten" and _attr(node, "axis", 1) % len(in_shape) == 0:
        return "flattens the batch axis away"
    return None


def _axis_not_batch(name: str, default: Any = None) -> Callable[[TorchPrefix, ir.Node], str | None]:
    def check(p: TorchPrefix, node: ir.Node) -> str | None:
        shape = p.static_shape(node.inputs[0])
        axis = _attr(node, name, default)
        if shape is None or axis is None or int(axis) % len(shape) == 0:
            return f"{name}={axis} touches the batch axis"
        return None
    return check


def _concat(p: TorchPrefix, node: ir.Node, args: list) -> list:
    return [p.torch.cat([a for a in args if a is not None], dim=_attr(node, "axis"))]


def _transpose(p: TorchPrefix, node: ir.Node, args: list) -> list:
    perm = _attr(node, "perm") or list(reversed(range(args[0].dim())))
    return [args[0].permute(*perm)]


def _check_transpose(p: TorchPrefix, node: ir.Node) -> str | None:
    perm = _attr(node, "perm")
    return None if perm and perm[0] == 0 else "moves the batch axis"


def _resize(p: TorchPrefix, node: ir.Node, args: list) -> list:
    F = p.torch.nn.functional
    out = p.static_shape(node.outputs[0])
    x = args[0]
    if _attr(node, "mode", "nearest") == "nearest":
        return [F.interpolate(x, size=list(out[2:]), mode="nearest")]
    corners = _attr(node, "coordinate_transformation_mode", "half_pixel") == "align_corners"
    mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[x.dim()]
    return [F.interpolate(x, size=list(out[2:]), mode=mode, align_corners=corners)]


def _check_resize(p: TorchPrefix, node: ir.Node) -> str | None:
    in_shape, out_shape = p.static_shape(node.inputs[0]), p.static_shape(node.outputs[0])
    if in_shape is None or out_shape is None or list(in_shape[:2]) != list(out_shape[:2]):
        return "needs static shapes that keep batch and channels"
    mode = _attr(node, "mode", "nearest")
    transform = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        # torch's nearest is ONNX asymmetric + floor; integer upscaling is the same under every mode.
        integer = all(o % i == 0 for i, o in zip(in_shape[2:], out_shape[2:]))
        if integer or (transform == "asymmetric" and _attr(node, "nearest_mode", "round_prefer_floor") == "floor"):
            return None
        return f"nearest resize with {transform} / {_attr(node, 'nearest_mode')} at a non-integer scale"
    if mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return None
    return f"resize mode {mode} with {transform} is not translated"


def _pad(p: TorchPrefix, node: ir.Node, args: list) -> list:
    pads = [int(v) for v in p.const(node.inputs[1])]
    value = p.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else 0.0
    rank = args[0].dim()
    spatial_pads = pads[2:rank] + pads[rank + 2:]
    return [p.torch.nn.functional.pad(args[0], _torch_pad(spatial_pads), value=float(np.asarray(value)))]


def _check_pad(p: TorchPrefix, node: ir.Node) -> str | None:
    pads = p.const(node.inputs[1])
    if pads is None or (len(node.inputs) > 3 and node.inputs[3] is not None):
        return "pads are not constant, or axes are given"
    rank = len(pads) // 2
    if any(pads[i] or pads[i + rank] for i in (0, 1)) or _attr(node, "mode", "constant") != "constant":
        return "pads batch/channel axes or is not constant mode"
    return None


def _reduce_mean(p: TorchPrefix, node: ir.Node, args: list) -> list:
    axes = p.const(node.inputs[1]) if len(node.inputs) > 1 else _attr(node, "axes")
    return [args[0].mean(dim=[int(a) for a in axes], keepdim=bool(_attr(node, "keepdims", 1)))]


def _check_reduce(p: TorchPrefix, node: ir.Node) -> str | None:
    axes = p.const(node.inputs[1]) if len(node.inputs) > 1 else _attr(node, "axes")
    shape = p.static_shape(node.inputs[0])
    if axes is None or shape is None or any(int(a) % len(shape) == 0 for a in axes):
        return "reduces over the batch axis (or all axes)"
    return None


def _unary(fn: Callable[[TorchPrefix, Any, ir.Node], Any]) -> Callable[[TorchPrefix, ir.Node, list], list]:
    return lambda p, node, args: [fn(p, args[0], node)]


def _binary(fn: Callable[[Any, Any], Any]) -> Callable[[TorchPrefix, ir.Node, list], list]:
    return lambda p, node, args: [fn(args[0], args[1])]


OPS: dict[str, Callable[[TorchPrefix, ir.Node, list], list]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "Relu": _unary(lambda p, x, n: p.torch.relu(x)),
    "LeakyRelu": _unary(lambda p, x, n: p.torch.nn.functional.leaky_relu(x, _attr(n, "alpha", 0.01))),
    "Clip": _clip,
    "Sigmoid": _unary(lambda p, x, n: p.torch.sigmoid(x)),
    "Tanh": _unary(lambda p, x, n: p.torch.tanh(x)),
    "HardSigmoid": _unary(lambda p, x, n: p.torch.clamp(_attr(n, "alpha", 0.2) * x + _attr(n, "beta", 0.5), 0, 1)),
    "HardSwish": _unary(lambda p, x, n: p.torch.nn.functional.hardswish(x)),
    "Erf": _unary(lambda p, x, n: p.torch.erf(x)),
    "Sqrt": _unary(lambda p, x, n: p.torch.sqrt(x)),
    "Identity": _unary(lambda p, x, n: x),
    "Softmax": _unary(lambda p, x, n: p.torch.softmax(x, dim=_attr(n, "axis", -1))),
    "Add": _binary(lambda a, b: a + b),
    "Sub": _binary(lambda a, b: a - b),
    "Mul": _binary(lambda a, b: a * b),
    "Div": _binary(lambda a, b: a / b),
    "Pow": _binary(lambda a, b: a**b),
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _unary(lambda p, x, n: x.mean(dim=list(range(2, x.dim())), keepdim=True)),
    "GlobalMaxPool": _unary(lambda p, x, n: x.amax(dim=list(range(2, x.dim())), keepdim=True)),
    "Gemm": _gemm,
    "MatMul": _binary(lambda a, b: a @ b),
    "Flatten": _reshape_like_output,
    "Reshape": _reshape_like_output,
    "Squeeze": _reshape_like_output,
    "Unsqueeze": _reshape_like_output,
    "Concat": _concat,
    "Transpose": _transpose,
    "Resize": _resize,
    "Pad": _pad,
    "ReduceMean": _reduce_mean,
}

CHECKS: dict[str, Callable[[TorchPrefix, ir.Node], str | None]] = {
    "ConvTranspose": _check_conv_transpose,
    "Clip": _check_clip,
    "MaxPool": _check_pool,
    "AveragePool": _check_pool,
    "Gemm": _check_gemm,
    "Flatten": _check_keeps_batch,
    "Reshape": _check_keeps_batch,
    "Squeeze": _check_keeps_batch,
    "Unsqueeze": _check_keeps_batch,
    "Concat": _axis_not_batch("axis"),
    "Softmax": _axis_not_batch("axis", -1),
    "Transpose": _check_transpose,
    "Resize": _check_resize,
    "Pad": _check_pad,
    "ReduceMean": _check_reduce,
}
