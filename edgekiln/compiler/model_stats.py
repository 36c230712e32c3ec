"""Per-layer statistics of a shape-inferred `Graph`: parameters, MACs, ops, shapes, dynamic dims.

What is counted (one `LayerStats` per node of the main graph; Constant nodes are data, not
layers, and their tensors are attributed to the nodes that read them):

**Parameters** are the stored elements of constant tensors a node reads: initializers and
Constant-node outputs (PP-OCR exports keep their weights in Constant nodes).  A constant is
counted once, on the first node in graph order that reads it, however many nodes share it.
Floating-point and quantized-integer (int8/uint8/int4/uint4) tensors count; index and shape
tensors (int32/int64/bool: Reshape targets, Slice bounds, ...) do not, except the int32
quantized bias a DequantizeLinear reads.  0-d scalars (Clip bounds, the `6` of a decomposed
HardSwish) are not parameters.  BatchNormalization's mean and variance count: they are stored
weights until batch-norm folding removes them.

**MACs** (multiply-accumulates) of the dense-algebra ops, bias additions excluded:

    Conv           N·Cout·∏out_spatial · (Cin/group)·∏kernel    (depthwise: Cin/group = 1)
    ConvTranspose  N·Cin·∏in_spatial · (Cout/group)·∏kernel     (each input pixel scatters one window)
    Gemm           M·N·K
    MatMul         ∏output · K   (batch dims broadcast; a 1-D operand contributes no M or N)

ConvInteger/QLinearConv and MatMulInteger/QLinearMatMul count like their float forms.

**Ops** are the other arithmetic, one per element per elementary operation — a coarse
measure of the vector work between the MACs:

    elementwise ops and activations      numel(output)
    Conv/ConvTranspose/Gemm bias         numel(output)
    MaxPool, AveragePool, LpPool         numel(output)·∏kernel
    global pooling, Reduce*              numel(input)
    BatchNormalization                   2·numel(output)   (a scale and a shift once folded)
    Softmax, LogSoftmax                  3·numel(input)    (exp, sum, divide)
    LayerNormalization                   5·numel(input)    (mean, centre, variance, normalize, affine)
    Resize                               numel(output)

Data movement (Reshape, Transpose, Concat, Slice, Gather, Pad, Cast, Shape, ...) costs 0.

Where a shape the formula needs has a symbolic or unknown dimension, MACs and ops are `None`
("unknown") rather than a guess; so are ops with no formula here (Einsum, LSTM, ...) that do
real work.  Totals add the known values and say how many layers were unknown.  Subgraphs
(If/Loop bodies) are not descended into.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx_ir as ir

from edgekiln.compiler.graph import Graph

Dim = int | str
"""A dimension as reported: an int, the symbolic name, or "?" for an unnamed unknown."""

_PARAM_DTYPES = frozenset(
    {
        ir.DataType.FLOAT,
        ir.DataType.FLOAT16,
        ir.DataType.BFLOAT16,
        ir.DataType.DOUBLE,
        ir.DataType.INT8,
        ir.DataType.UINT8,
        ir.DataType.INT4,
        ir.DataType.UINT4,
    }
)

# op_type -> index of the weight input whose shape[1:] is the per-output reduction window.
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_MATMUL_LHS = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}

_ELEMENTWISE = frozenset(
    """Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift Ceil Celu Clip Cos Cosh Div Elu Equal
    Erf Exp Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish IsInf IsNaN LeakyRelu Less
    LessOrEqual Log Max Mean Min Mish Mod Mul Neg Not Or PRelu Pow Reciprocal Relu Round Selu
    Shrink Sigmoid Sign Sin Sinh Softplus Softsign Sqrt Sub Sum Tan Tanh ThresholdedRelu Where Xor
    QuantizeLinear DequantizeLinear""".split()
)
_WINDOW_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_FULL_REDUCTIONS = frozenset(
    """GlobalAveragePool GlobalMaxPool GlobalLpPool ReduceMean ReduceSum ReduceMax ReduceMin
    ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax ArgMin""".split()
)
_INPUT_FACTOR = {"Softmax": 3, "LogSoftmax": 3, "LayerNormalization": 5, "InstanceNormalization": 5}
_DATA_MOVEMENT = frozenset(
    """Cast CastLike Concat Constant ConstantOfShape DepthToSpace Dropout Expand Flatten Gather
    GatherElements GatherND Identity NonZero OneHot Pad Range Reshape ScatterElements ScatterND
    Shape Size Slice SpaceToDepth Split Squeeze Tile TopK Transpose Trilu Unsqueeze""".split()
)


@dataclass(frozen=True)
class LayerStats:
    """The cost and shape of one node.  `macs`/`ops` are None when unknown (dynamic shape)."""

    name: str
    op_type: str
    domain: str
    params: int
    macs: int | None
    ops: int | None
    output_shape: tuple[Dim, ...] | None
    dynamic: bool


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: its dims and which axes are dynamic."""

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None
    dynamic_axes: tuple[int, ...]

    @property
    def dynamic(self) -> bool:
        return self.shape is None or bool(self.dynamic_axes)


@dataclass(frozen=True)
class ModelSummary:
    """Totals over `layer_stats`, the op histogram and the model's interface."""

    name: str
    opsets: dict[str, int]
    layers: int
    constant_nodes: int
    params: int
    macs: int
    ops: int
    unknown_cost_layers: int
    dynamic_layers: int
    op_histogram: dict[str, int]
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)

    @property
    def param_bytes_fp32(self) -> int:
        return 4 * self.params

    @property
    def dynamic_inputs(self) -> dict[str, list[tuple[int, Dim]]]:
        """{input name: [(axis, dim label), ...]} for every input with a dynamic dim."""
        return {
            t.name: [(axis, t.shape[axis]) for axis in t.dynamic_axes] if t.shape is not None else []
            for t in self.inputs
            if t.dynamic
        }


# -- shapes ----------------------------------------------------------------------------


def dims(value: ir.Value | None) -> tuple[Dim, ...] | None:
    """The value's shape with symbolic dims as their name ("?" when unnamed); None if unknown."""
    if value is None or value.shape is None:
        return None
    out: list[Dim] = []
    for d in value.shape:
        if isinstance(d, int) and d >= 0:
            out.append(d)
        else:
            # A negative int is how some exporters (PP-OCR's cls model) spell "unknown", and
            # "unk__N" is ONNX shape inference's placeholder: neither is a name a user gave.
            name = getattr(d, "value", None)
            named = isinstance(name, str) and name and not name.startswith("unk__")
            out.append(name if named else "?")
    return tuple(out)


def is_dynamic(value: ir.Value | None) -> bool:
    shape = dims(value)
    return shape is None or any(not isinstance(d, int) for d in shape)


def _static(value: ir.Value | None) -> tuple[int, ...] | None:
    shape = dims(value)
    if shape is None or any(not isinstance(d, int) for d in shape):
        return None
    return shape  # type: ignore[return-value]


def _numel(shape: Sequence[int] | None) -> int | None:
    return None if shape is None else math.prod(shape)


def tensor_info(value: ir.Value) -> TensorInfo:
    shape = dims(value)
    axes = () if shape is None else tuple(i for i, d in enumerate(shape) if not isinstance(d, int))
    dtype = _dtype_name(value.dtype)
    return TensorInfo(value.name or "", dtype, shape, axes)


def _dtype_name(dtype: ir.DataType | None) -> str:
    """numpy spelling ("float32", "int8") where numpy has one, else the ONNX name."""
    if dtype is None:
        return "?"
    try:
        name = str(dtype.numpy())
    except (TypeError, ValueError, ImportError):
        name = "object"
    return dtype.name.lower() if name == "object" else name


# -- parameters ------------------------------------------------------------------------


def is_constant_tensor(value: ir.Value | None) -> bool:
    """An initializer or the output of a Constant node: data fixed when the model is saved."""
    if value is None:
        return False
    if value.const_value is not None:
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx")


def _param_count(node: ir.Node, index: int, value: ir.Value) -> int:
    if not is_constant_tensor(value):
        return 0
    shape = _static(value)
    if shape is None and value.const_value is not None:
        shape = tuple(value.const_value.shape)
    if not shape:  # unknown or 0-d
        return 0
    dtype = value.dtype
    if dtype is None and value.const_value is not None:
        dtype = value.const_value.dtype
    quantized_bias = dtype == ir.DataType.INT32 and node.op_type == "DequantizeLinear" and index == 0
    if dtype not in _PARAM_DTYPES and not quantized_bias:
        return 0
    return math.prod(shape)


# -- MACs and ops ----------------------------------------------------------------------


def _attr_ints(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return None if attr is None else list(attr.value)


def _macs(node: ir.Node) -> int | None:
    """MACs of the dense-algebra ops; 0 for every other op."""
    op = node.op_type
    out = _static(node.outputs[0]) if node.outputs else None
    if op in _CONV_WEIGHT:
        w = _static(_input(node, _CONV_WEIGHT[op]))
        return None if out is None or w is None else math.prod(out) * math.prod(w[1:])
    if op == "ConvTranspose":
        x, w = _static(_input(node, 0)), _static(_input(node, 1))
        return None if x is None or w is None else math.prod(x) * math.prod(w[1:])
    if op == "Gemm":
        a = _static(_input(node, 0))
        if out is None or a is None:
            return None
        trans_a = node.attributes.get("transA")
        k = a[0] if trans_a is not None and trans_a.value else a[1]
        return math.prod(out) * k
    if op in _MATMUL_LHS:
        a = _static(_input(node, _MATMUL_LHS[op]))
        return None if out is None or a is None else math.prod(out) * a[-1]
    return 0


def _ops(node: ir.Node) -> int | None:
    """Non-MAC arithmetic, per the table in the module docstring."""
    op = node.op_type
    out = _numel(_static(node.outputs[0])) if node.outputs else None
    inp = _numel(_static(_input(node, 0)))
    if op in _CONV_WEIGHT or op in ("ConvTranspose", "Gemm"):
        bias_index = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, "QLinearConv": 8}.get(op)
        has_bias = bias_index is not None and _input(node, bias_index) is not None
        return out if has_bias else 0
    if op in _MATMUL_LHS or op in _DATA_MOVEMENT:
        return 0
    if op in _ELEMENTWISE or op == "Resize" or op == "Upsample":
        return out
    if op == "BatchNormalization":
        return None if out is None else 2 * out
    if op in _WINDOW_POOLS:
        kernel = _attr_ints(node, "kernel_shape")
        return None if out is None or kernel is None else out * math.prod(kernel)
    if op in _FULL_REDUCTIONS:
        return inp
    if op in _INPUT_FACTOR:
        return None if inp is None else _INPUT_FACTOR[op] * inp
    return None  # an op this table does not model (Einsum, LSTM, ...): unknown, not free


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


# -- public API ------------------------------------------------------------------------


def layer_stats(graph: Graph) -> list[LayerStats]:
    """One `LayerStats` per node of the main graph, in graph order (Constant nodes skipped)."""
    seen: set[int] = set()  # ids of constant values already counted
    stats: list[LayerStats] = []
    for node in graph.main:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        params = 0
        for index, value in enumerate(node.inputs):
            if value is None or id(value) in seen:
                continue
            count = _param_count(node, index, value)
            if count:
                seen.add(id(value))
                params += count
        standard = node.domain in ("", "ai.onnx")
        values = [v for v in (*node.inputs, *node.outputs) if v is not None]
        stats.append(
            LayerStats(
                name=node.name or "",
                op_type=node.op_type,
                domain=node.domain,
                params=params,
                macs=_macs(node) if standard else None,
                ops=_ops(node) if standard else None,
                output_shape=dims(node.outputs[0]) if node.outputs else None,
                dynamic=any(is_dynamic(v) for v in values if not is_constant_tensor(v)),
            )
        )
    return stats


def op_key(op_type: str, domain: str) -> str:
    """The histogram key: the op type, prefixed by its domain when not the default one."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}::{op_type}"


def model_summary(graph: Graph, layers: list[LayerStats] | None = None) -> ModelSummary:
    """Totals, op histogram and inputs/outputs (with their dynamic dims) of the graph."""
    layers = layer_stats(graph) if layers is None else layers
    histogram: dict[str, int] = {}
    for layer in layers:
        key = op_key(layer.op_type, layer.domain)
        histogram[key] = histogram.get(key, 0) + 1
    constants = sum(1 for n in graph.main if n.op_type == "Constant" and n.domain in ("", "ai.onnx"))
    return ModelSummary(
        name=graph.main.name or "",
        opsets=dict(sorted(graph.model.opset_imports.items())),
        layers=len(layers),
        constant_nodes=constants,
        params=sum(layer.params for layer in layers),
        macs=sum(layer.macs or 0 for layer in layers),
        ops=sum(layer.ops or 0 for layer in layers),
        unknown_cost_layers=sum(1 for layer in layers if layer.macs is None or layer.ops is None),
        dynamic_layers=sum(1 for layer in layers if layer.dynamic),
        op_histogram=dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
        inputs=[tensor_info(v) for v in graph.inputs if not is_constant_tensor(v)],
        outputs=[tensor_info(v) for v in graph.outputs],
    )
