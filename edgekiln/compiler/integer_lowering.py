"""Integer lowering: a QDQ graph (`qdq_format.py`) becomes a Program of integer kernels.

The graph is read only through `qdq_format.match_activation` / `match_weight`.  A node whose
activation inputs are DQ(Q(·)), whose weights are edgekiln weight chains and whose every
output is read by QuantizeLinear only becomes one integer call (`integer_kernels.py` says
what each computes) over int8 tensors; each int8 tensor is the QuantizeLinear output it
stands for, so it keeps that value's name and carries its `QuantParams`.  Every constant a
kernel needs (bias at the accumulator scale, fixed-point multipliers from
`requantize.quantize_multipliers`, clamp bounds, tables) is computed here, once.

Everything else stays float, exactly as `lowering.py` writes it, and the boundaries become
calls: `Quantize` where a float value (a graph input, a float node's output, a constant) is
quantized, `Dequantize` where an int8 tensor is read by a float node or is a graph output,
`DequantizeWeight` where a float node reads a quantized weight (weight-only int4).

Which nodes become which kernel:

    Conv / FusedConv{Relu,Clip}       QConv2D, or QDepthwiseConv2D when group == C_in == C_out;
                                      a fused Relu / Clip is the clamp [act_min, act_max]
    ConvTranspose                     QConvTranspose2D
    Gemm / MatMul (constant weight)   QFullyConnected (weight [N, K]); also FusedGemm / FusedMatMul
    MatMul (two activations)          QMatMul
    Add / Sub / Mul                   QAdd / QMul (a non-scalar constant operand is quantized
                                      here with its own min/max range)
    unary functions, and Add / Sub / Mul / Div / Pow / Max / Min with a scalar constant
                                      QLookupTable, table[i] = Q(f(DQ(i − 128))) in float64,
                                      rounded half to even like QuantizeLinear
    GlobalAveragePool, AveragePool, ReduceMean, MaxPool, Softmax (last axis),
    LayerNormalization, Concat, Resize (nearest, linear), Pad
                                      QGlobalAveragePool, QAveragePool, QReduceMean, QMaxPool,
                                      QSoftmax, QLayerNorm, QConcat, QResizeNearest / QResizeBilinear, QPad
    Reshape, Flatten, Transpose, ...  the same op on int8 (parameters unchanged), followed by
                                      a QRequantize when the output is quantized differently

A graph output QuantizeGraphPass kept float on purpose (`metadata_props["edgekiln.float_output"]`
on its Conv / Gemm / MatMul) is the layer's own integer kernel with a float epilogue
(`float_output` in integer_kernels.py): the exact int32 accumulator acc = b_q + Σ (x_q − zp)·W_q,
then y = float32(acc) · float32(s_in · s_w[o]), one float32 rounding.  The int8 weights are
read by the int8 GEMM as they are (never dequantized at run time); |acc| < 2^24 is checked so
that float32(acc) is exact and y equals what the float graph Dequantize -> Conv -> Mul on the
same integers gives.

A node that could be integer but is not (say, Softmax over axis 1) stays a float island;
`IntegerLowering.float_reasons` says why for each.  A QDQ spelling lowering cannot read (a
DequantizeLinear of something that is neither a QuantizeLinear output nor an edgekiln weight,
a per-channel or uint8 activation quantizer) is a `QuantizationError` naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from edgekiln.compiler import bilinear_taps, fused_ops
from edgekiln.compiler import integer_kernels as ik
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.lowering import (
    BLOCK_KEY,
    GraphLowering,
    claim_unique,
)
from edgekiln.compiler.program import KernelCall, Program, QuantParams, TensorSpec
from edgekiln.compiler.qdq_format import (
    FLOAT_OUTPUT_KEY,
    QuantizedActivation,
    QuantizedWeight,
    match_activation,
    match_weight,
)
from edgekiln.compiler.requantize import (
    INT8_MAX,
    INT8_MIN,
    activation_params,
    quantize,
    quantize_multiplier,
)
from edgekiln.errors import QuantizationError

_DEFAULT = ("", "ai.onnx")
_INT32 = (-(2**31), 2**31 - 1)


def lower_quantized_graph(graph: Graph, *, alignment: int = 64) -> Program:
    """Lower a QDQ graph (static shapes, topologically sorted) to an integer Program."""
    return IntegerLowering(graph).lower(alignment)


@dataclass(frozen=True)
class _Act:
    """An int8 operand: its tensor name and parameters."""

    name: str
    scale: float
    zero_point: int


# -- float64 reference functions for lookup tables ------------------------------------------
def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _hard_sigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.clip(alpha * x + beta, 0.0, 1.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def _unary_function(node: ir.Node) -> Callable[[np.ndarray], np.ndarray] | None:
    """f for a one-input elementwise node, in float64; None when the op is not one."""
    op, attr = node.op_type, node.attributes
    f = lambda key, default: float(attr[key].value) if key in attr else default
    if node.domain == fused_ops.DOMAIN:
        if op == "Gelu":
            return lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
        if op == "GeluTanh":
            return lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return None
    if node.domain not in _DEFAULT:
        return None
    if op == "Gelu":
        if attr.get("approximate") is not None and attr["approximate"].value == "tanh":
            return lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    table: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "Relu": lambda x: np.maximum(x, 0.0),
        "LeakyRelu": lambda x: np.where(x >= 0, x, f("alpha", 0.01) * x),
        "HardSigmoid": lambda x: _hard_sigmoid(x, f("alpha", 0.2), f("beta", 0.5)),
        "HardSwish": lambda x: x * _hard_sigmoid(x, 1 / 6, 0.5),
        "Sigmoid": _sigmoid,
        "Tanh": np.tanh,
        "Elu": lambda x: np.where(x >= 0, x, f("alpha", 1.0) * np.expm1(np.minimum(x, 0))),
        "Selu": lambda x: f("gamma", 1.0507009873554805) * np.where(
            x > 0, x, f("alpha", 1.6732632423543772) * np.expm1(np.minimum(x, 0))),
        "Softplus": lambda x: np.logaddexp(0.0, x),
        "Softsign": lambda x: x / (1.0 + np.abs(x)),
        "Erf": _erf,
        "Exp": np.exp,
        "Abs": np.abs,
        "Neg": np.negative,
        "Floor": np.floor,
        "Ceil": np.ceil,
        "Round": np.rint,
        "Sign": np.sign,
        "Identity": lambda x: x,
    }
    return table.get(op)


_SCALAR_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
    "Max": np.maximum, "Min": np.minimum,
}


def lookup_table(f: Callable[[np.ndarray], np.ndarray], x: _Act | QuantizedActivation, scale: float,
                 zero_point: int) -> np.ndarray | None:
    """table[i] = quantize(f(dequantize(i − 128))), float64, half to even; None if f is not finite."""
    q = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.float64)
    with np.errstate(all="ignore"):
        y = f(float(np.float32(x.scale)) * (q - x.zero_point))
    if not np.all(np.isfinite(y)):
        return None
    return np.clip(np.rint(y / float(np.float32(scale))) + zero_point, INT8_MIN, INT8_MAX).astype(np.int8)


def _multiplier(real: float, node: ir.Node, what: str) -> tuple[int, int]:
    try:
        return quantize_multiplier(float(real))
    except ValueError as exc:
        raise QuantizationError(f"node {node.name!r} ({node.op_type}): the {what} rescale {real:g} cannot be "
                                f"represented ({exc}); the activation ranges around it are degenerate — "
                                "recalibrate or keep this node in float") from exc


def _clamp_bounds(node: ir.Node, out: _Act) -> tuple[int, int]:
    """[act_min, act_max] for the fused Relu / Clip of a fused node (the full int8 range otherwise)."""
    low, high = -math.inf, math.inf
    parsed = fused_ops.parse_fused_op_type(node.op_type) if node.domain == fused_ops.DOMAIN else None
    steps = parsed[1] if parsed else ()
    if "Relu" in steps:
        low = 0.0
    if "Clip" in steps:
        low = float(node.attributes["act_min"].value) if "act_min" in node.attributes else -math.inf
        high = float(node.attributes["act_max"].value) if "act_max" in node.attributes else math.inf

    def bound(v: float, default: int) -> int:
        if not math.isfinite(v):
            return default
        return int(quantize(np.array(v), out.scale, out.zero_point))

    return max(INT8_MIN, bound(low, INT8_MIN)), min(INT8_MAX, bound(high, INT8_MAX))


def _attr(node: ir.Node, key: str, default: Any) -> Any:
    value = node.attributes.get(key)
    if value is None:
        return default
    v = value.value
    return list(v) if isinstance(v, (tuple, list)) else v


def _fused_steps(node: ir.Node) -> tuple[str, tuple[str, ...]] | None:
    if node.domain == fused_ops.DOMAIN:
        return fused_ops.parse_fused_op_type(node.op_type)
    if node.domain in _DEFAULT and node.op_type in ("Conv", "Gemm", "MatMul"):
        return "Fused" + node.op_type, ()
    return None


class IntegerLowering(GraphLowering):
    """One lowering of a QDQ graph.  `float_reasons[node name]` says why a node stayed float."""

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph)
        self.weights: dict[int, QuantizedWeight] = {}    # id(value read by a node) -> its weight chain
        self.chain_nodes: set[int] = set()               # ids of the nodes inside weight chains
        self.integer: set[int] = set()                   # ids of the nodes lowered to integer kernels
        self.float_reasons: dict[str, str] = {}
        self._pending: list[tuple[str, _Act, ir.Value]] = []  # extra QuantizeLinear readers to requantize for

    def lower(self, alignment: int) -> Program:
        self._analyse()
        program = self.run(alignment)
        return program

    # -- analysis -------------------------------------------------------------------------
    def _analyse(self) -> None:
        for node in self.graph.main:
            for value in node.inputs:
                if value is not None and (weight := match_weight(value)) is not None:
                    self.weights[id(value)] = weight
                    self.chain_nodes.update(id(n) for n in _chain_nodes(value))
        for node in self.graph.main:
            if id(node) in self.chain_nodes or _is_qdq(node) or node.op_type == "Constant":
                continue
            reason = self._integer_reason(node)
            if reason is None:
                self.integer.add(id(node))
            else:
                self.float_reasons[node.name] = reason

    def _integer_reason(self, node: ir.Node) -> str | None:
        """None when `node` lowers to integer kernels, else why it stays float."""
        if FLOAT_OUTPUT_KEY in node.metadata_props:
            return _float_output_reason(self, node)
        outputs = [v for v in node.outputs if v.uses() or v.is_graph_output()]
        if not outputs:
            return "no output is read"
        if node.op_type == "Split" and node.domain in _DEFAULT:
            needed = outputs
        elif outputs != [node.outputs[0]]:
            return "a secondary output is read"
        else:
            needed = outputs[:1]
        for value in needed:
            if value.is_graph_output() or not value.uses():
                return f"output {value.name!r} is not quantized"
            if not all(_is_default(user, "QuantizeLinear") and index == 0 for user, index in value.uses()):
                return f"output {value.name!r} is read in float"
        handler = _HANDLERS.get(self._kind(node))
        if handler is None:
            return f"no integer kernel for {node.op_type}"
        return handler[0](self, node)

    def _kind(self, node: ir.Node) -> str:
        fused = _fused_steps(node)
        if fused is not None:
            return fused[0]
        if node.domain in _DEFAULT and node.op_type in ik.DATA_MOVEMENT_OPS:
            return "movement"
        if _unary_function(node) is not None:
            return "unary"
        return node.op_type if node.domain in _DEFAULT else ""

    # -- node lowering (overrides lowering.GraphLowering) -------------------------------------
    def _lower_node(self, node: ir.Node, index: int) -> None:
        if id(node) in self.chain_nodes:
            return  # read through match_weight by each reader
        if _is_default(node, "QuantizeLinear"):
            return self._lower_quantize(node, self._call_name(node, index))
        if _is_default(node, "DequantizeLinear"):
            return self._lower_dequantize(node, self._call_name(node, index))
        if id(node) not in self.integer:
            return super()._lower_node(node, index)
        name = self._call_name(node, index)
        if FLOAT_OUTPUT_KEY in node.metadata_props:
            return _float_output_lower(self, node, name)
        _HANDLERS[self._kind(node)][1](self, node, name)
        block = node.metadata_props.get(BLOCK_KEY)
        for extra_name, source, q_value in self._pending:
            out = self._int8_tensor(q_value, extra_name)
            self._requantize_call(f"{name}/requantize", source, out, block)
        self._pending.clear()

    def _input_name(self, value: ir.Value | None) -> str:
        if value is not None and id(value) not in self.value_names and id(value) in self.weights:
            return self._dequantize_weight(value)
        return super()._input_name(value)

    def _emit(self, node: ir.Node, name: str, op: str, inputs: list[str], outputs: list[str],
              attrs: dict[str, Any]) -> None:
        self.calls.append(KernelCall(name=name, op=op, inputs=tuple(inputs), outputs=tuple(outputs),
                                     attrs=attrs, block=node.metadata_props.get(BLOCK_KEY)))

    # -- boundaries ---------------------------------------------------------------------
    def _lower_quantize(self, node: ir.Node, name: str) -> None:
        scale, zero_point = _quantizer_params(node)
        out = node.outputs[0]
        if id(out) in self.value_names:
            return  # an integer kernel writes it
        source = node.inputs[0]
        array = Graph.constant(source)
        if array is not None:
            if not np.all(np.isfinite(array)):
                raise QuantizationError(f"node {node.name!r}: constant {source.name!r} holds NaN or Inf")
            tensor = self._constant(out, quantize(array, scale, zero_point))
            self.tensors[tensor] = replace(self.tensors[tensor], quant=QuantParams((scale,), (zero_point,)))
            return
        x = self._input_name(source)
        y = self._int8_tensor(out, name)
        self._emit(node, name, "Quantize", [x], [y.name], {"scale": scale, "zero_point": zero_point})

    def _lower_dequantize(self, node: ir.Node, name: str) -> None:
        source = node.inputs[0]
        q = source.producer()
        if q is None or not _is_default(q, "QuantizeLinear"):
            raise QuantizationError(
                f"node {node.name!r} (DequantizeLinear) reads {source.name!r}, which is neither a QuantizeLinear "
                "output nor an edgekiln weight (a DequantizeLinear with edgekiln.precision metadata): this graph was "
                "not quantized by edgekiln; quantize the float model with edgekiln instead")
        found = match_activation(node.outputs[0])
        if found is None or (found.scale, found.zero_point) != _quantizer_params(q):
            raise QuantizationError(f"node {node.name!r} (DequantizeLinear): its scale / zero point are not "
                                    f"constants equal to those of {q.name!r}; re-run the quantization pass")
        out = node.outputs[0]
        readers_float = any(id(user) not in self.integer for user, _ in out.uses())
        if not (readers_float or out.is_graph_output()):
            return
        x = self.value_names[id(source)]
        kind = "output" if out.is_graph_output() else "intermediate"
        y = self._activation(out, kind, node=node, call_name=name)
        self._emit(node, name, "Dequantize", [x], [y],
                   {"scale": found.scale, "zero_point": found.zero_point})

    def _dequantize_weight(self, value: ir.Value) -> str:
        weight = self.weights[id(value)]
        dq = next(n for n in _chain_nodes(value) if _is_default(n, "DequantizeLinear"))
        base = value.name or "weight"
        call_name = claim_unique(f"{dq.name or base}/DequantizeWeight", self.call_names)
        w = self._weight_constant(weight, base)
        scale = self._plain_constant(np.ascontiguousarray(weight.scale, np.float32), f"{base}_scale")
        y = self._activation(value, "intermediate", node=dq, call_name=call_name)
        attrs: dict[str, Any] = {"transpose": bool(weight.transposed)}
        if weight.group_size is not None:
            attrs["group_size"] = int(weight.group_size)
        self._emit(dq, call_name, "DequantizeWeight", [w, scale], [y], attrs)
        return y

    # -- tensors ----------------------------------------------------------------------------
    def _int8_tensor(self, q_value: ir.Value, call_name: str) -> _Act:
        """The int8 tensor a QuantizeLinear output stands for, with its QuantParams."""
        q = q_value.producer()
        scale, zero_point = _quantizer_params(q)
        kind = "output" if q_value.is_graph_output() else "intermediate"
        name = self._activation(q_value, kind, node=q, call_name=call_name)
        self.tensors[name] = replace(self.tensors[name], quant=QuantParams((scale,), (zero_point,)))
        return _Act(name, scale, zero_point)

    def _temp_int8(self, like: ir.Value, params: _Act, hint: str) -> _Act:
        """A fresh int8 intermediate with `params`, shaped like `like`."""
        name = claim_unique(hint, self.taken_names)
        shape = Graph.static_shape(like)
        layout = {4: "NCHW", 2: "NC"}.get(len(shape), "any")
        self.tensors[name] = TensorSpec(name=name, dtype="int8", shape=shape, layout=layout, kind="intermediate",
                                        quant=QuantParams((params.scale,), (params.zero_point,)))
        return _Act(name, params.scale, params.zero_point)

    def _output(self, node: ir.Node, name: str, index: int = 0) -> _Act:
        """Claim the int8 output of `node` (the first QuantizeLinear reader's output); other readers
        with the same parameters alias it, others get a QRequantize after the call."""
        value = node.outputs[index]
        readers = [user for user, _ in value.uses()]
        out = self._int8_tensor(readers[0].outputs[0], name)
        for other in readers[1:]:
            params = _quantizer_params(other)
            if params == (out.scale, out.zero_point):
                self.value_names[id(other.outputs[0])] = out.name
            else:
                self._pending.append((name, out, other.outputs[0]))
        return out

    def _act(self, value: ir.Value) -> _Act:
        found = match_activation(value)
        return _Act(self.value_names[id(found.quantized)], found.scale, found.zero_point)

    def _plain_constant(self, array: np.ndarray, hint: str, quant: QuantParams | None = None) -> str:
        name = claim_unique(hint, self.taken_names)
        array = np.asarray(array, order="C")
        self.constants[name] = array
        self.tensors[name] = TensorSpec(name=name, dtype=array.dtype.name, shape=tuple(array.shape), layout="any",
                                        kind="constant", quant=quant)
        return name

    def _weight_constant(self, weight: QuantizedWeight, hint: str, values: np.ndarray | None = None) -> str:
        scale = tuple(float(s) for s in np.reshape(weight.scale, -1))
        quant = QuantParams(scale, (0,) * len(scale), axis=0, bits=weight.bits, group_size=weight.group_size)
        return self._plain_constant(np.ascontiguousarray(weight.q_values if values is None else values, np.int8),
                                    f"{hint}_quantized", quant)

    def _requantize_call(self, name: str, source: _Act, out: _Act, block: str | None) -> None:
        m, sh = quantize_multiplier(source.scale / out.scale)
        self.calls.append(KernelCall(name=claim_unique(name, self.call_names), op="QRequantize",
                                     inputs=(source.name,), outputs=(out.name,),
                                     attrs={"input_zero_point": source.zero_point,
                                            "output_zero_point": out.zero_point, "multiplier": m, "shift": sh},
                                     block=block))

    # -- shared pieces of the weight kernels ----------------------------------------------
    def _weight_side(self, node: ir.Node, name: str, weight: QuantizedWeight, x: _Act, out: _Act,
                     bias: ir.Value | None, alpha: float = 1.0, beta: float = 1.0,
                     per_input_channel: int | None = None) -> tuple[list[str], dict[str, Any]]:
        """(bias, multiplier, shift[, ratio]) constant names and the group attrs of a weight kernel.

        `per_input_channel` (ConvTranspose): the number of output channels, the weight scales
        running along the input channels instead."""
        rows, s_ref = _reference_scales(weight, per_input_channel)
        ratios = per_input_channel is not None and rows.size > 1 and not np.all(rows == rows.flat[0])
        frac = _acc_frac_bits(weight) if ratios or weight.group_size is not None else 0
        s_acc = float(np.float32(x.scale)) * s_ref * alpha
        real = s_acc / float(np.float32(out.scale)) / 2.0**frac
        pairs = [_multiplier(r, node, "output") for r in real]
        multiplier = np.array([p[0] for p in pairs], np.int32)
        shift = np.array([p[1] for p in pairs], np.int32)
        bias_q = self._bias(node, bias, s_acc, len(s_ref), beta)
        if np.any(bias_q < _INT32[0]) or np.any(bias_q > _INT32[1]):
            raise QuantizationError(f"node {node.name!r}: bias {bias.name!r} overflows int32 at the accumulator "
                                    "scale (input scale x weight scale is tiny); recalibrate or keep it float")
        names = [self._plain_constant(bias_q.astype(np.int32), f"{name}_bias"),
                 self._plain_constant(multiplier, f"{name}_multiplier"),
                 self._plain_constant(shift, f"{name}_shift")]
        attrs: dict[str, Any] = {}
        if ratios:
            ratio = np.rint(rows.reshape(-1) / s_ref[0] * (1 << ik.RATIO_BITS)).astype(np.int32)
            names.append(self._plain_constant(ratio, f"{name}_channel_ratio"))
            attrs["acc_frac_bits"] = frac
        elif per_input_channel is None and weight.group_size is not None:
            ratio = np.rint(rows / s_ref[:, None] * (1 << ik.RATIO_BITS)).astype(np.int32)
            names.append(self._plain_constant(ratio, f"{name}_group_ratio"))
            attrs["group_size"] = int(weight.group_size)
            attrs["acc_frac_bits"] = frac
        return names, attrs

    def _bias(self, node: ir.Node, bias: ir.Value | None, s_acc: np.ndarray, channels: int,
              beta: float) -> np.ndarray:
        """The bias as integers (int64) at the accumulator scale; an int32 QDQ bias at that scale is kept as is."""
        if bias is None:
            return np.zeros(channels, np.int64)
        weight = self.weights.get(id(bias))
        if weight is not None:
            q_b = np.broadcast_to(weight.q_values.reshape(-1).astype(np.int64), (channels,))
            s_b = np.broadcast_to(np.asarray(weight.scale, np.float64).reshape(-1), (channels,))
            if beta == 1.0 and np.allclose(s_b, s_acc, rtol=1e-6, atol=0):
                return q_b.copy()
            real = q_b * s_b
        else:
            real = np.broadcast_to(np.asarray(Graph.constant(bias), np.float64).reshape(-1), (channels,))
        if not np.all(np.isfinite(real)):
            raise QuantizationError(f"node {node.name!r}: bias {bias.name!r} holds NaN or Inf")
        with np.errstate(all="ignore"):
            q = np.rint(beta * real / s_acc)
        return np.where(np.isfinite(q), q, np.sign(q) * 2.0**62).clip(-2.0**62, 2.0**62).astype(np.int64)

    def _bias_reason(self, node: ir.Node, weight: QuantizedWeight, bias: ir.Value | None, channels: int,
                     alpha: float = 1.0, beta: float = 1.0, per_input_channel: int | None = None) -> str | None:
        """Why the bias cannot be an int32 at the accumulator scale, else None."""
        if bias is None:
            return None
        if id(bias) in self.weights:
            w = self.weights[id(bias)]
            if w.q_values.size not in (1, channels) or w.group_size is not None:
                return "bias is not per channel"
        else:
            array = Graph.constant(bias)
            if array is None:
                return f"bias {bias.name!r} is not a constant"
            if array.size not in (1, channels) or array.squeeze().ndim > 1:
                return "bias is not per channel"
        x = match_activation(node.inputs[0])
        _, s_ref = _reference_scales(weight, per_input_channel)
        q = self._bias(node, bias, float(np.float32(x.scale)) * s_ref * alpha, len(s_ref), beta)
        if np.any(q < _INT32[0]) or np.any(q > _INT32[1]):
            return "the bias overflows int32 at the accumulator scale (a near-constant input: tiny input scale)"
        return None


# -- handlers: (reason(lowering, node) -> str | None, lower(lowering, node, call name)) ----------
def _inputs_quantized(node: ir.Node, indices: tuple[int, ...]) -> str | None:
    for i in indices:
        if i >= len(node.inputs) or node.inputs[i] is None or match_activation(node.inputs[i]) is None:
            return f"input {i} is not a quantized activation"
    return None


def _epilogue_reason(node: ir.Node) -> str | None:
    steps = _fused_steps(node)[1]
    if any(s not in ("Relu", "Clip") for s in steps):
        return f"epilogue {list(steps)} is not a clamp (quantized pipelines fuse Relu / Clip only)"
    return None


# Conv / FusedConv
def _conv_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if (r := _inputs_quantized(node, (0,))) or (r := _epilogue_reason(node)):
        return r
    weight = self.weights.get(id(node.inputs[1])) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if weight is None or weight.transposed or weight.q_values.ndim != 4:
        return "the weight is not a quantized 2-D convolution weight"
    if len(Graph.static_shape(node.inputs[0]) or ()) != 4:
        return "not a 2-D convolution"
    if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return "auto_pad is set (make pads explicit first)"
    return self._bias_reason(node, weight, node.inputs[2] if len(node.inputs) > 2 else None,
                             weight.q_values.shape[0])


def _conv_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x, weight = self._act(node.inputs[0]), self.weights[id(node.inputs[1])]
    out = self._output(node, name)
    o, cg = weight.q_values.shape[:2]
    c_in = Graph.static_shape(node.inputs[0])[1]
    group = int(_attr(node, "group", 1))
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    consts, attrs = self._weight_side(node, name, weight, x, out, bias)
    w = self._weight_constant(weight, name)
    lo, hi = _clamp_bounds(node, out)
    attrs.update({
        "strides": [int(v) for v in _attr(node, "strides", [1, 1])],
        "pads": [int(v) for v in _attr(node, "pads", [0, 0, 0, 0])],
        "dilations": [int(v) for v in _attr(node, "dilations", [1, 1])],
        "group": group, "input_zero_point": x.zero_point, "output_zero_point": out.zero_point,
        "act_min": lo, "act_max": hi,
    })
    op = "QDepthwiseConv2D" if group == c_in == o and cg == 1 else "QConv2D"
    self._emit(node, name, op, [x.name, w, *consts], [out.name], attrs)


# ConvTranspose
def _convt_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if r := _inputs_quantized(node, (0,)):
        return r
    weight = self.weights.get(id(node.inputs[1])) if len(node.inputs) > 1 else None
    if weight is None or weight.transposed or weight.q_values.ndim != 4 or weight.group_size is not None:
        return "the weight is not a per-tensor / per-input-channel quantized 2-D weight"
    if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET") or "output_shape" in node.attributes:
        return "auto_pad / output_shape are set"
    group = int(_attr(node, "group", 1))
    channels = weight.q_values.shape[1] * group
    return self._bias_reason(node, weight, node.inputs[2] if len(node.inputs) > 2 else None, channels,
                             per_input_channel=channels)


def _convt_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x, weight = self._act(node.inputs[0]), self.weights[id(node.inputs[1])]
    out = self._output(node, name)
    group = int(_attr(node, "group", 1))
    channels = weight.q_values.shape[1] * group
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    consts, attrs = self._weight_side(node, name, weight, x, out, bias, per_input_channel=channels)
    w = self._weight_constant(weight, name)
    self._emit(node, name, "QConvTranspose2D", [x.name, w, *consts], [out.name], {**attrs,
        "strides": [int(v) for v in _attr(node, "strides", [1, 1])],
        "pads": [int(v) for v in _attr(node, "pads", [0, 0, 0, 0])],
        "dilations": [int(v) for v in _attr(node, "dilations", [1, 1])],
        "output_padding": [int(v) for v in _attr(node, "output_padding", [0, 0])],
        "group": group, "input_zero_point": x.zero_point, "output_zero_point": out.zero_point,
        "act_min": INT8_MIN, "act_max": INT8_MAX,
    })


# Gemm / MatMul and their fused forms
def _matrix_operands(node: ir.Node) -> tuple[float, float, ir.Value | None]:
    """(alpha, beta, bias value) of a Gemm / MatMul-like node."""
    base = _fused_steps(node)[0]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if base == "FusedGemm":
        return float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0)), bias
    return 1.0, 1.0, bias


def _matrix_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if (r := _inputs_quantized(node, (0,))) or (r := _epilogue_reason(node)):
        return r
    base = _fused_steps(node)[0]
    weight = self.weights.get(id(node.inputs[1])) if node.inputs[1] is not None else None
    if weight is None:
        if base == "FusedMatMul" and node.op_type == "MatMul" and match_activation(node.inputs[1]) is not None:
            return None  # activation x activation: QMatMul
        return "the second operand is neither a quantized weight nor a quantized activation (or a bias with it)"
    if weight.q_values.ndim != 2:
        return "the weight is not a matrix"
    if base == "FusedGemm":
        if int(_attr(node, "transA", 0)):
            return "Gemm with transA"
        if bool(int(_attr(node, "transB", 0))) == weight.transposed:
            return "the Gemm weight is not stored [N, K]"
        alpha, _, _ = _matrix_operands(node)
        if alpha <= 0:
            return "Gemm alpha <= 0"
    elif not weight.transposed:
        return "the MatMul weight is not stored [N, K]"
    alpha, beta, bias = _matrix_operands(node)
    return self._bias_reason(node, weight, bias, weight.q_values.shape[0], alpha, beta)


def _matrix_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x = self._act(node.inputs[0])
    out = self._output(node, name)
    lo, hi = _clamp_bounds(node, out)
    weight = self.weights.get(id(node.inputs[1]))
    if weight is None:  # QMatMul
        b = self._act(node.inputs[1])
        m, sh = _multiplier(x.scale * b.scale / out.scale, node, "output")
        self._emit(node, name, "QMatMul", [x.name, b.name], [out.name], {
            "a_zero_point": x.zero_point, "b_zero_point": b.zero_point, "output_zero_point": out.zero_point,
            "multiplier": m, "shift": sh, "act_min": lo, "act_max": hi})
        return
    alpha, beta, bias = _matrix_operands(node)
    consts, attrs = self._weight_side(node, name, weight, x, out, bias, alpha=alpha, beta=beta)
    w = self._weight_constant(weight, name)
    attrs.update({"input_zero_point": x.zero_point, "output_zero_point": out.zero_point,
                  "act_min": lo, "act_max": hi})
    self._emit(node, name, "QFullyConnected", [x.name, w, *consts], [out.name], attrs)


# Add / Sub / Mul and scalar arithmetic
def _scalar_constant(value: ir.Value | None) -> float | None:
    array = Graph.constant(value)
    return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None


def _binary_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if len(node.inputs) != 2:
        return "not a binary op"
    a, b = node.inputs
    quantized = [match_activation(v) is not None for v in (a, b)]
    constant = [Graph.constant(v) is not None for v in (a, b)]
    if not any(quantized):
        return "no operand is a quantized activation"
    if all(quantized) and node.op_type in ("Add", "Sub", "Mul"):
        return None
    other = 1 if quantized[0] else 0
    if not constant[other]:
        return f"input {other} is neither quantized nor constant"
    scalar = _scalar_constant(node.inputs[other])
    if scalar is not None:
        if not math.isfinite(scalar):
            return "the constant operand is not finite"
        table = lookup_table(_binary_function(node, other, scalar), match_activation(node.inputs[1 - other]),
                             *_quantizer_params(_first_reader(node.outputs[0])))
        return None if table is not None else "the function is not finite on the input range"
    if node.op_type not in ("Add", "Sub", "Mul"):
        return f"{node.op_type} with a non-scalar constant"
    array = Graph.constant(node.inputs[other])
    return None if np.all(np.isfinite(array)) else "the constant operand holds NaN or Inf"


def _binary_function(node: ir.Node, const_index: int, c: float) -> Callable[[np.ndarray], np.ndarray]:
    op = _SCALAR_BINARY[node.op_type]
    return (lambda x: op(x, c)) if const_index == 1 else (lambda x: op(c, x))


def _binary_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    a_value, b_value = node.inputs
    quantized = [match_activation(v) is not None for v in (a_value, b_value)]
    if not all(quantized):
        other = 1 if quantized[0] else 0
        scalar = _scalar_constant(node.inputs[other])
        if scalar is not None:
            return _emit_table(self, node, name, node.inputs[1 - other], _binary_function(node, other, scalar),
                               f"{node.op_type}({scalar:g})")
    out = self._output(node, name)
    operands = []
    for value in (a_value, b_value):
        if match_activation(value) is not None:
            operands.append(self._act(value))
            continue
        array = np.asarray(Graph.constant(value), np.float32)
        scale, zero_point = activation_params(float(array.min()), float(array.max()))
        const = self._plain_constant(quantize(array, scale, zero_point), f"{name}_{value.name or 'const'}",
                                     QuantParams((scale,), (zero_point,)))
        operands.append(_Act(const, scale, zero_point))
    a, b = operands
    attrs: dict[str, Any] = {"a_zero_point": a.zero_point, "b_zero_point": b.zero_point,
                             "output_zero_point": out.zero_point, "act_min": INT8_MIN, "act_max": INT8_MAX}
    if node.op_type == "Mul":
        attrs["multiplier"], attrs["shift"] = _multiplier(a.scale * b.scale / out.scale, node, "output")
        op = "QMul"
    else:
        s_a, s_b = float(np.float32(a.scale)), float(np.float32(b.scale))
        twice = 2.0 * max(s_a, s_b)
        attrs["a_multiplier"], attrs["a_shift"] = _multiplier(s_a / twice, node, "input a")
        attrs["b_multiplier"], attrs["b_shift"] = _multiplier(s_b / twice, node, "input b")
        attrs["multiplier"], attrs["shift"] = _multiplier(
            twice / ((1 << ik.LEFT_SHIFT_ADD) * float(np.float32(out.scale))), node, "output")
        attrs["left_shift"] = ik.LEFT_SHIFT_ADD
        attrs["subtract"] = node.op_type == "Sub"
        op = "QAdd"
    self._emit(node, name, op, [a.name, b.name], [out.name], attrs)


# unary functions -> lookup table
def _unary_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if r := _inputs_quantized(node, (0,)):
        return r
    f = _unary_or_clip(node)
    if f is None:
        return "Clip bounds are not constant"
    table = lookup_table(f, match_activation(node.inputs[0]), *_quantizer_params(_first_reader(node.outputs[0])))
    return None if table is not None else "the function is not finite on the input range"


def _clip_function(node: ir.Node) -> Callable[[np.ndarray], np.ndarray] | None:
    bounds = []
    for i in (1, 2):
        value = node.inputs[i] if len(node.inputs) > i else None
        if value is None:
            bounds.append(None)
        elif (array := Graph.constant(value)) is None:
            return None
        else:
            bounds.append(float(array.reshape(-1)[0]))
    low = bounds[0] if bounds[0] is not None else _attr(node, "min", None)
    high = bounds[1] if bounds[1] is not None else _attr(node, "max", None)
    return lambda x: np.clip(x, -np.inf if low is None else low, np.inf if high is None else high)


def _unary_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    _emit_table(self, node, name, node.inputs[0], _unary_or_clip(node), node.op_type)


def _unary_or_clip(node: ir.Node) -> Callable[[np.ndarray], np.ndarray] | None:
    if _is_default(node, "Clip"):
        return _clip_function(node)
    return _unary_function(node)


def _emit_table(self: IntegerLowering, node: ir.Node, name: str, source: ir.Value,
                f: Callable[[np.ndarray], np.ndarray], function: str) -> None:
    x = self._act(source)
    out = self._output(node, name)
    table = lookup_table(f, x, out.scale, out.zero_point)
    self._emit(node, name, "QLookupTable", [x.name, self._plain_constant(table, f"{name}_table")], [out.name],
               {"function": function})


# pooling and reductions
def _pool_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if r := _inputs_quantized(node, (0,)):
        return r
    rank = len(Graph.static_shape(node.inputs[0]) or ())
    op = node.op_type
    if op == "ReduceMean":
        return None if _reduce_axes(node, rank) is not None else "ReduceMean axes are not constant"
    if rank != 4:
        return f"{op} on a rank-{rank} tensor"
    if op in ("AveragePool", "MaxPool"):
        if int(_attr(node, "ceil_mode", 0)) or _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            return "ceil_mode / auto_pad"
        if op == "AveragePool" and any(int(d) != 1 for d in _attr(node, "dilations", [1, 1])):
            return "dilated AveragePool"
    return None


def _reduce_axes(node: ir.Node, rank: int) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = Graph.constant(node.inputs[1])
        if axes is None:
            return None
        axes = [int(a) for a in axes.reshape(-1)]
    else:
        axes = [int(a) for a in _attr(node, "axes", [])]
    if not axes:
        return [] if int(_attr(node, "noop_with_empty_axes", 0)) else list(range(rank))
    return sorted(a % rank for a in axes)


def _pool_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x = self._act(node.inputs[0])
    shape = Graph.static_shape(node.inputs[0])
    op = node.op_type
    if op == "MaxPool":
        attrs = {"kernel_shape": [int(v) for v in _attr(node, "kernel_shape", [1, 1])],
                 "strides": [int(v) for v in _attr(node, "strides", [1, 1])],
                 "pads": [int(v) for v in _attr(node, "pads", [0, 0, 0, 0])],
                 "dilations": [int(v) for v in _attr(node, "dilations", [1, 1])]}
        return _emit_movement(self, node, name, "QMaxPool", [x.name], attrs, x)
    out = self._output(node, name)
    attrs = {"input_zero_point": x.zero_point, "output_zero_point": out.zero_point}
    if op == "AveragePool":
        kernel = [int(v) for v in _attr(node, "kernel_shape", [1, 1])]
        window = kernel[0] * kernel[1]
        pairs = [(0, 0)] + [_multiplier(x.scale / (n * out.scale), node, "output") for n in range(1, window + 1)]
        multipliers = self._plain_constant(np.array([p[0] for p in pairs], np.int32), f"{name}_multipliers")
        shifts = self._plain_constant(np.array([p[1] for p in pairs], np.int32), f"{name}_shifts")
        attrs.update({"kernel_shape": kernel, "strides": [int(v) for v in _attr(node, "strides", [1, 1])],
                      "pads": [int(v) for v in _attr(node, "pads", [0, 0, 0, 0])],
                      "count_include_pad": int(_attr(node, "count_include_pad", 0))})
        return self._emit(node, name, "QAveragePool", [x.name, multipliers, shifts], [out.name], attrs)
    if op == "GlobalAveragePool":
        count, kernel = shape[2] * shape[3], "QGlobalAveragePool"
    else:
        axes = _reduce_axes(node, len(shape))
        count, kernel = math.prod(shape[a] for a in axes), "QReduceMean"
        attrs.update({"axes": axes, "keepdims": int(_attr(node, "keepdims", 1))})
    attrs["multiplier"], attrs["shift"] = _multiplier(x.scale / (count * out.scale), node, "output")
    self._emit(node, name, kernel, [x.name], [out.name], attrs)


# Softmax and LayerNormalization
def _softmax_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if r := _inputs_quantized(node, (0,)):
        return r
    shape = Graph.static_shape(node.inputs[0])
    default = -1 if self.graph.opset() >= 13 else 1
    if int(_attr(node, "axis", default)) % len(shape) != len(shape) - 1:
        return "Softmax over an axis other than the last"
    return None if shape[-1] <= ik.SOFTMAX_MAX_D else "Softmax axis longer than 2^20"


def _softmax_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x = self._act(node.inputs[0])
    out = self._output(node, name)
    d = np.arange(256, dtype=np.float64)
    table = np.rint(np.exp(-d * float(np.float32(x.scale))) * (1 << ik.SOFTMAX_EXP_BITS)).astype(np.int32)
    m, sh = _multiplier(2.0**-ik.SOFTMAX_PROB_BITS / float(np.float32(out.scale)), node, "output")
    self._emit(node, name, "QSoftmax", [x.name, self._plain_constant(table, f"{name}_exp_table")], [out.name],
               {"output_zero_point": out.zero_point, "multiplier": m, "shift": sh})


def _float_constant(self: IntegerLowering, value: ir.Value | None) -> np.ndarray | None:
    """A float constant, or a quantized weight's dequantized values."""
    if value is None:
        return None
    if id(value) in self.weights:
        w = self.weights[id(value)]
        rows = w.q_values.reshape(w.q_values.shape[0], -1).astype(np.float64)
        s = np.asarray(w.scale, np.float64)
        if w.group_size is None:
            real = rows * s.reshape(-1, 1)
        else:
            real = (rows.reshape(rows.shape[0], -1, w.group_size) * s.reshape(rows.shape[0], -1, 1)).reshape(rows.shape)
        real = real.reshape(w.q_values.shape)
        return real.T if w.transposed else real
    array = Graph.constant(value)
    return None if array is None else np.asarray(array, np.float64)


def _layernorm_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if r := _inputs_quantized(node, (0,)):
        return r
    shape = Graph.static_shape(node.inputs[0])
    axis = int(_attr(node, "axis", -1)) % len(shape)
    d = math.prod(shape[axis:])
    if d > ik.LAYERNORM_MAX_D:
        return f"LayerNormalization over {d} > {ik.LAYERNORM_MAX_D} elements"
    for i in (1, 2):
        value = node.inputs[i] if len(node.inputs) > i else None
        if value is not None and _float_constant(self, value) is None:
            return "scale / bias are not constants"
    return None


def _layernorm_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x = self._act(node.inputs[0])
    out = self._output(node, name)
    shape = Graph.static_shape(node.inputs[0])
    axis = int(_attr(node, "axis", -1)) % len(shape)
    d = math.prod(shape[axis:])
    gamma = np.broadcast_to(_float_constant(self, node.inputs[1]), shape[axis:]).reshape(-1)
    b = _float_constant(self, node.inputs[2] if len(node.inputs) > 2 else None)
    beta = np.zeros(d) if b is None else np.broadcast_to(b, shape[axis:]).reshape(-1)
    s_x, s_y = float(np.float32(x.scale)), float(np.float32(out.scale))
    eps = float(_attr(node, "epsilon", 1e-5))
    eps_term = min(round(eps * d**3 / s_x**2), 1 << 62)
    g_real = gamma * math.sqrt(d) / s_y
    b_real = beta / s_y
    frac = ik.LAYERNORM_FRAC_BITS
    g_bits = 30 - max(0, math.ceil(math.log2(max(float(np.abs(g_real).max()), 1e-30) + 1)))
    b_bits = 60 - frac - max(0, math.ceil(math.log2(max(float(np.abs(b_real).max()), 1e-30) + 1)))
    bits = max(0, min(30, g_bits, b_bits))
    gamma_q = np.rint(g_real * 2.0**bits).astype(np.int32)
    beta_q = np.array([round(v * 2.0 ** (frac + bits)) for v in b_real], np.int64)
    self._emit(node, name, "QLayerNorm", [x.name, self._plain_constant(gamma_q, f"{name}_gamma"),
                                          self._plain_constant(beta_q, f"{name}_beta")], [out.name],
               {"eps_term": int(eps_term), "frac_bits": frac, "out_shift": frac + bits,
                "output_zero_point": out.zero_point})


# Concat, Resize, Pad and data movement
def _concat_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    for i, value in enumerate(node.inputs):
        if match_activation(value) is None and Graph.constant(value) is None:
            return f"input {i} is neither quantized nor constant"
    return None if any(match_activation(v) is not None for v in node.inputs) else "no quantized input"


def _concat_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    out = self._output(node, name)
    inputs, zero_points, rescales = [], [], []
    for value in node.inputs:
        if match_activation(value) is not None:
            x = self._act(value)
        else:
            array = quantize(np.asarray(Graph.constant(value), np.float32), out.scale, out.zero_point)
            x = _Act(self._plain_constant(array, f"{name}_{value.name or 'const'}",
                                          QuantParams((out.scale,), (out.zero_point,))), out.scale, out.zero_point)
        inputs.append(x.name)
        zero_points.append(x.zero_point)
        same = (float(np.float32(x.scale)), x.zero_point) == (float(np.float32(out.scale)), out.zero_point)
        rescales.append(None if same else list(_multiplier(x.scale / out.scale, node, "input")))
    rank = len(Graph.static_shape(node.outputs[0]))
    self._emit(node, name, "QConcat", inputs, [out.name],
               {"axis": int(_attr(node, "axis", 0)) % rank, "input_zero_points": zero_points,
                "output_zero_point": out.zero_point, "requantize": rescales})


def _text_attr(node: ir.Node, key: str, default: str) -> str:
    value = _attr(node, key, default)
    return value.decode() if isinstance(value, bytes) else value


def _resize_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if r := _inputs_quantized(node, (0,)):
        return r
    mode = _text_attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize mode {mode!r} (only nearest and linear are integer)"
    if _text_attr(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return "tf_crop_and_resize"
    if any(v is not None and Graph.constant(v) is None for v in node.inputs[1:]):
        return "roi / scales / sizes are not constants"
    shape, out_shape = Graph.static_shape(node.inputs[0]), Graph.static_shape(node.outputs[0])
    if len(shape) != 4 or shape[:2] != out_shape[:2]:
        return "Resize of other than the two spatial axes"
    return _bilinear_reason(node) if mode == "linear" else None


def _bilinear_reason(node: ir.Node) -> str | None:
    """Why a linear Resize has no QResizeBilinear (bilinear_taps.py reads four transformations)."""
    transform = _text_attr(node, "coordinate_transformation_mode", "half_pixel")
    if transform not in bilinear_taps.MODES:
        return f"linear Resize with coordinate_transformation_mode {transform!r} (integer: {', '.join(bilinear_taps.MODES)})"
    if node.attributes.get("axes") is not None:
        return "linear Resize with an axes attribute"
    if _text_attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return "linear Resize with keep_aspect_ratio_policy other than stretch"
    in_hw, out_hw = Graph.static_shape(node.inputs[0])[2:], Graph.static_shape(node.outputs[0])[2:]
    if int(_attr(node, "antialias", 0)) and any(o < i for i, o in zip(in_hw, out_hw)):
        return "antialiased linear downscale (a wider filter than bilinear)"
    return None


def _resize_scales(node: ir.Node) -> tuple[float | None, float | None]:
    """The ONNX `scales` of H and W, or None where `sizes` define them (scale = out / in)."""
    scales = Graph.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if scales is None or scales.size == 0:
        return None, None
    flat = np.asarray(scales, np.float64).reshape(-1)
    return float(flat[2]), float(flat[3])


def _resize_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    if _text_attr(node, "mode", "nearest") == "linear":
        _resize_bilinear_lower(self, node, name)
    else:
        _resize_nearest_lower(self, node, name)


def _resize_bilinear_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x = self._act(node.inputs[0])
    h, w = Graph.static_shape(node.inputs[0])[2:]
    out_h, out_w = Graph.static_shape(node.outputs[0])[2:]
    transform = _text_attr(node, "coordinate_transformation_mode", "half_pixel")
    scale_h, scale_w = _resize_scales(node)
    taps_h = bilinear_taps.onnx_taps(h, out_h, transform, scale_h)
    taps_w = bilinear_taps.onnx_taps(w, out_w, transform, scale_w)
    _emit_movement(self, node, name, "QResizeBilinear",
                   [x.name, self._plain_constant(taps_h, f"{name}_taps_h"),
                    self._plain_constant(taps_w, f"{name}_taps_w")], {}, x)


def _resize_nearest_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    x = self._act(node.inputs[0])
    h, w = Graph.static_shape(node.inputs[0])[2:]
    # Nearest resize is separable: resize an iota image and read back where each pixel came from.
    iota = np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w)
    feeds, names = {"x": iota}, ["x"]
    for i, value in enumerate(node.inputs[1:], start=1):
        if value is None:
            names.append("")
            continue
        array = np.asarray(Graph.constant(value))
        if i == 3:  # sizes: keep N, C at 1
            array = np.array([1, 1, *array.reshape(-1)[2:]], np.int64)
        feeds[f"i{i}"], names = array, names + [f"i{i}"]
    attrs = {k: a.value.decode() if isinstance(a.value, bytes) else a.value for k, a in node.attributes.items()}
    graph = helper.make_graph(
        [helper.make_node("Resize", names, ["y"], **attrs)], "resize",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(self.graph.opset(), 13))])
    (y,) = ReferenceEvaluator(model).run(None, feeds)
    index = y[0, 0].astype(np.int64)
    index_h = (index[:, 0] // w).astype(np.int32)
    index_w = (index[0, :] % w).astype(np.int32)
    _emit_movement(self, node, name, "QResizeNearest",
                   [x.name, self._plain_constant(index_h, f"{name}_index_h"),
                    self._plain_constant(index_w, f"{name}_index_w")], {}, x)


def _pad_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if r := _inputs_quantized(node, (0,)):
        return r
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        return "Pad with axes"
    if any(v is not None and Graph.constant(v) is None for v in node.inputs[1:3]):
        return "pads / value are not constants"
    return None


def _pad_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x = self._act(node.inputs[0])
    pads = [int(v) for v in Graph.constant(node.inputs[1]).reshape(-1)]
    value = _scalar_constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else 0.0
    mode = _attr(node, "mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pad_value = int(quantize(np.array(value), x.scale, x.zero_point))
    _emit_movement(self, node, name, "QPad", [x.name], {"pads": pads, "mode": mode, "pad_value": pad_value}, x)


def _movement_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    if r := _inputs_quantized(node, (0,)):
        return r
    if any(v is not None and Graph.constant(v) is None for v in node.inputs[1:]):
        return "shape / index inputs are not constants"
    return None


def _movement_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    x = self._act(node.inputs[0])
    extra = [self._input_name(v) for v in node.inputs[1:]]
    attrs = {key: _json(attr) for key, attr in node.attributes.items()}
    _emit_movement(self, node, name, node.op_type, [x.name, *extra], attrs, x)


def _json(attr: ir.Attr) -> Any:
    v = attr.value
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (tuple, list)):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    if hasattr(v, "numpy"):
        return v.numpy().tolist()
    return v


def _emit_movement(self: IntegerLowering, node: ir.Node, name: str, op: str, inputs: list[str],
                   attrs: dict[str, Any], x: _Act) -> None:
    """A parameter-preserving op; a QRequantize follows for each output quantized differently."""
    outputs, rescale = [], []
    for index, value in enumerate(node.outputs):
        if not value.uses():
            outputs.append("")
            continue
        out = self._output(node, name, index)
        if (float(np.float32(out.scale)), out.zero_point) == (float(np.float32(x.scale)), x.zero_point):
            outputs.append(out.name)
        else:
            temp = self._temp_int8(value, x, f"{out.name}_unscaled")
            outputs.append(temp.name)
            rescale.append((temp, out))
    self._emit(node, name, op, inputs, outputs, attrs)
    for temp, out in rescale:
        self._requantize_call(f"{name}/requantize", temp, out, node.metadata_props.get(BLOCK_KEY))


_HANDLERS: dict[str, tuple[Callable[[IntegerLowering, ir.Node], str | None],
                           Callable[[IntegerLowering, ir.Node, str], None]]] = {
    "FusedConv": (_conv_reason, _conv_lower),
    "ConvTranspose": (_convt_reason, _convt_lower),
    "FusedGemm": (_matrix_reason, _matrix_lower),
    "FusedMatMul": (_matrix_reason, _matrix_lower),
    **{op: (_binary_reason, _binary_lower) for op in _SCALAR_BINARY},
    "Clip": (_unary_reason, _unary_lower),
    "unary": (_unary_reason, _unary_lower),
    **{op: (_pool_reason, _pool_lower) for op in ("GlobalAveragePool", "AveragePool", "MaxPool", "ReduceMean")},
    "Softmax": (_softmax_reason, _softmax_lower),
    "LayerNormalization": (_layernorm_reason, _layernorm_lower),
    "Concat": (_concat_reason, _concat_lower),
    "Resize": (_resize_reason, _resize_lower),
    "Pad": (_pad_reason, _pad_lower),
    "movement": (_movement_reason, _movement_lower),
}


# A weighted graph output kept float (module docstring)
def _float_output_reason(self: IntegerLowering, node: ir.Node) -> str | None:
    out = node.outputs[0]
    if not out.is_graph_output() or out.uses() or len(node.outputs) != 1:
        return f"output {out.name!r} is marked float but is read inside the graph"
    kind = self._kind(node)
    if kind not in ("FusedConv", "FusedGemm", "FusedMatMul") or _fused_steps(node)[1]:
        return "only a Conv / Gemm / MatMul without epilogue has a float output"
    reason = _HANDLERS[kind][0](self, node)
    if reason is not None:
        return reason
    weight = self.weights.get(id(node.inputs[1]))
    if weight is None or weight.group_size is not None:
        return "a float output needs a weight with one scale per output channel"
    _, _, bias_q = _float_output_parts(self, node, weight)
    bound = 255 * np.abs(weight.q_values.reshape(weight.q_values.shape[0], -1).astype(np.int64)).sum(axis=1)
    if np.any(bound + np.abs(bias_q) >= 2**24):
        return "its accumulator can exceed 2^24, where float32 stops being exact"
    return None


def _float_output_parts(self: IntegerLowering, node: ir.Node,
                        weight: QuantizedWeight) -> tuple[QuantizedActivation, np.ndarray, np.ndarray]:
    """(input, float32 accumulator scale s_in · s_w[o], int64 bias at that scale)."""
    x = match_activation(node.inputs[0])
    alpha, beta, bias = _matrix_operands(node) if self._kind(node) != "FusedConv" else (1.0, 1.0, (
        node.inputs[2] if len(node.inputs) > 2 else None))
    _, s_ref = _reference_scales(weight, None)
    s_acc = float(np.float32(x.scale)) * s_ref * alpha
    return x, s_acc.astype(np.float32), self._bias(node, bias, s_acc, len(s_ref), beta)


def _float_output_lower(self: IntegerLowering, node: ir.Node, name: str) -> None:
    """The layer's own integer kernel (QConv2D, QDepthwiseConv2D or QFullyConnected) with a float
    epilogue: int32 accumulator (bias included) times float32(s_in · s_w[o]), no weight dequantized."""
    weight = self.weights[id(node.inputs[1])]
    _, acc_scale, bias_q = _float_output_parts(self, node, weight)
    x = self._act(node.inputs[0])
    w = self._weight_constant(weight, name)
    bias = self._plain_constant(bias_q.astype(np.int32), f"{name}_bias")
    scale = self._plain_constant(acc_scale.reshape(-1), f"{name}_output_scale")
    y = self._node_output(node.outputs[0], node, name)
    attrs: dict[str, Any] = {"input_zero_point": x.zero_point, "float_output": True}
    op = "QFullyConnected"
    if self._kind(node) == "FusedConv":
        o, cg = weight.q_values.shape[:2]
        group = int(_attr(node, "group", 1))
        attrs.update({"strides": [int(v) for v in _attr(node, "strides", [1, 1])],
                      "pads": [int(v) for v in _attr(node, "pads", [0, 0, 0, 0])],
                      "dilations": [int(v) for v in _attr(node, "dilations", [1, 1])], "group": group})
        op = "QDepthwiseConv2D" if group == Graph.static_shape(node.inputs[0])[1] == o and cg == 1 else "QConv2D"
    self._emit(node, name, op, [x.name, w, bias, scale], [y], attrs)


# -- helpers ------------------------------------------------------------------------------
def _acc_frac_bits(weight: QuantizedWeight) -> int:
    """F for a ratio-weighted accumulator: as many fraction bits (<= 8) as keep |acc| < 2^31."""
    q = weight.q_values
    k = q.size // q.shape[0] if q.ndim > 1 else 1
    if q.ndim == 4 and weight.group_size is None:  # ConvTranspose: an output sums over C·kh·kw at most
        k = q.shape[0] * q.shape[2] * q.shape[3]
    bound = k * 255 * max(1, int(np.abs(q.astype(np.int32)).max()))
    return max(0, min(ik.MAX_ACC_FRAC_BITS, 30 - bound.bit_length()))


def _reference_scales(weight: QuantizedWeight, per_input_channel: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(scale rows [O, groups], s_ref [O]): the accumulator's weight scale per output channel.

    Per channel s_ref = s_w; per group the largest group scale of the row; with scales along
    the input channels (ConvTranspose) the largest of all, for every output channel."""
    s_w = np.asarray(weight.scale, np.float64)
    rows = s_w.reshape(s_w.shape[0], -1) if s_w.ndim > 1 else s_w.reshape(-1, 1)
    if per_input_channel is not None:
        top = rows.max()
        return rows, np.full(per_input_channel, top if top > 0 else 1.0)
    s_ref = rows.max(axis=1)
    return rows, np.where(s_ref > 0, s_ref, 1.0)


def _first_reader(value: ir.Value) -> ir.Node:
    return next(iter(value.uses()))[0]


def _is_default(node: ir.Node, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in _DEFAULT


def _is_qdq(node: ir.Node) -> bool:
    return _is_default(node, "QuantizeLinear") or _is_default(node, "DequantizeLinear")


def _quantizer_params(node: ir.Node) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor int8 QuantizeLinear, or a QuantizationError naming it."""
    scale = Graph.constant(node.inputs[1]) if len(node.inputs) > 1 else None
    zero = Graph.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if scale is None or scale.size != 1 or zero is None or zero.size != 1 or zero.dtype != np.int8:
        raise QuantizationError(
            f"node {node.name!r} ({node.op_type}): edgekiln's integer kernels take per-tensor int8 activations "
            "with constant scale and int8 zero point; this quantizer is not in edgekiln's QDQ spelling. "
            "Quantize the float model with edgekiln")
    value = float(scale.reshape(()))
    if not math.isfinite(value) or value <= 0:
        raise QuantizationError(f"node {node.name!r} ({node.op_type}): scale {value} is not finite and positive")
    return value, int(zero.reshape(()))


def _chain_nodes(value: ir.Value) -> list[ir.Node]:
    """The nodes of the weight chain ending at `value` (as `match_weight` walks it)."""
    nodes = []
    producer = value.producer()
    if producer is not None and _is_default(producer, "Transpose"):
        nodes.append(producer)
        value = producer.inputs[0]
        producer = value.producer()
    if producer is not None and _is_default(producer, "Reshape"):
        nodes.append(producer)
        value = producer.inputs[0]
        producer = value.producer()
    if producer is not None and _is_default(producer, "DequantizeLinear"):
        nodes.append(producer)
        group = producer.inputs[0].producer()
        if group is not None and _is_default(group, "Reshape"):
            nodes.append(group)
    return nodes
