"""QuantizeGraphPass: the float graph becomes its QDQ (fake-quantized) form, node by node.

Input: the final float graph (after the fuse stage of a quantized pipeline), a `QuantConfig`
and activation ranges {value name: (low, high)} calibrated on that same graph.  Output: the
QDQ graph of `compiler/qdq_format.py`, built only through its builders, which onnxruntime runs
as the float reference.

Per node, with p = config.precision_of(node):

    quantized (p int8 / int4* / ternary*):
        every float activation input is read through Q/DQ, the output is Q/DQ'd;
        a constant weight becomes  int8 values -> DQ (per channel or per group) -> reader,
        its bias int32 with scale s_in · s_w[o] (s_w[o] = max over o's groups), rounded half
        to even.  A channel whose bias would overflow int32 (a nearly dead channel: tiny
        weights, ordinary bias) gets its weight scale raised until |b| <= 2^30 · s_in · s_w;
        what still overflows (ConvTranspose's shared scale) is clamped with a warning.
    weight only (p w4a16:g<g>): int4 weights, float activations and float bias.
    float (p fp32, an op with no integer kernel, a fused epilogue that is not a clamp):
        the node reads whatever its producers give (dequantized values of quantized
        producers); its output is Q/DQ'd only when a quantized node reads it.

Float outputs (`float_outputs=True`, what a compile for a target that runs fp32 asks): a
graph output written by a weighted node (Conv / Gemm / MatMul with a constant weight, no fused
epilogue, int8 weights) and read by nothing else keeps no Q/DQ: the node reads
int8 inputs, weights and an int32 bias as usual and its output stays float.  Integer lowering
computes it exactly (`integer_lowering._float_output_lower`): the integer accumulator, then
one float32 multiply by s_in · s_w[o].  Quantizing a model's last output to int8 adds a
rounding and clips every value outside the calibrated range, the largest single error of most
classifiers (the calibration set rarely reaches the extreme logits), and nothing downstream
needs it as int8.  Only when the accumulator is provably exact in float32,
|b_q[o]| + 255 · Σ_k |W_q[o, k]| < 2^24 for every channel, else the output is Q/DQ'd as before.
The node is marked (`metadata_props["edgekiln.float_output"]`) so a second run keeps it so.

Activation parameters (per tensor, asymmetric: `requantize.activation_params`):

    own range      Conv / Gemm / MatMul (plain or Fused<Relu|Clip>), Add, Mul, Sub, Concat,
                   AveragePool, GlobalAveragePool, ReduceMean, Softmax, LayerNormalization,
                   HardSwish, HardSigmoid, Sigmoid, Tanh, Relu, Clip, LeakyRelu, edgekiln Gelu:
                   the calibrated range of the output value.
    shared         Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Slice, Resize (nearest),
                   Pad, MaxPool only move or select values, so the output reuses the input's
                   scale and zero point (output range := input range): the integer kernel then
                   copies int8 values with no requantization.  Resize (linear) joins them: its
                   outputs are convex combinations of its inputs, inside the input's range, and
                   the integer kernel interpolates the raw int8 values (QResizeBilinear).
    constants      a constant operand of Add / Mul / Sub / Concat is quantized like an
                   activation, with the range of its own values.

Weight layouts: Conv weights have the output channel on axis 0 already; Gemm with transB=0 and
MatMul weights [K, N] are stored transposed ([N, K], `transposed=True`).  ConvTranspose
weights [C_in, C_out/g, ...] have no per-output-channel axis 0, so they are quantized int8 per
tensor (the one scale repeated along axis 0), whatever precision was asked.  LayerNormalization
keeps its scale and bias in float (the integer kernel normalizes in fixed point and applies
them after).

A second run changes nothing: values already read through Q/DQ, weights already read through
a DequantizeLinear chain and nodes computing only from constants are skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import Pass, PassResult, node_label
from edgekiln.compiler.qdq_format import (
    FLOAT_OUTPUT_KEY,
    dequantized_bias,
    dequantized_weight,
    match_activation,
    match_weight,
    quantize_activation,
)
from edgekiln.compiler.requantize import INT32_MAX, INT32_MIN, activation_params
from edgekiln.errors import QuantizationError
from edgekiln.passes.graph_edits import drop_if_unused, int_attr
from edgekiln.quantization.quant_config import (
    QuantConfig,
    base_op,
    precision_kind,
    quantizes_activations,
)
from edgekiln.quantization.weights import (
    QuantizedWeightValues,
    quantize_weight,
    with_scale_floor,
)

_DEFAULT = ("", "ai.onnx")
SHARED_PARAMS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Resize", "Pad",
                           "MaxPool"})
OWN_RANGE = frozenset({"Add", "Mul", "Sub", "Concat", "AveragePool", "GlobalAveragePool", "ReduceMean", "Softmax",
                       "LayerNormalization", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Relu", "Clip",
                       "LeakyRelu"})
ALL_INPUTS = frozenset({"Add", "Mul", "Sub", "Concat"})  # every input is an activation (constants too)
CLAMP_EPILOGUES = ((), ("Relu",), ("Clip",))
Params = tuple[float, int]
FLOAT32_EXACT = 2**24  # every integer of magnitude below this is a float32 value, and so is every partial sum
UINT8_SPAN = 255       # the most |x_q - zp| can be for an int8 activation


@dataclass
class _Plan:
    """What the pass will do to one node."""

    node: ir.Node
    precision: str
    activations: bool                  # int8 activations (inputs and output Q/DQ'd)
    data_inputs: list[ir.Value] = field(default_factory=list)
    weight: ir.Value | None = None     # a constant weight to quantize
    bias_index: int | None = None


class QuantizeGraphPass(Pass):
    name = "quantize-graph"

    def __init__(self, config: QuantConfig, ranges: Mapping[str, Any], float_outputs: bool = False) -> None:
        self.config = config
        self.ranges = ranges
        self.float_outputs = float_outputs

    def run(self, graph: Graph) -> PassResult:
        result = PassResult(graph, changed=False)
        precisions = self.config.assign(graph)
        constant = _constant_derived(graph)
        plans: list[_Plan] = []
        for node in graph.main:
            if _is_qdq_machinery(node) or all(v is None or id(v) in constant for v in node.inputs):
                continue
            plan, reason = self._plan(node, precisions.get(node.name, self.config.default))
            if plan is None:
                result.not_applied.append(f"{node_label(node)}: kept float: {reason}")
            else:
                plans.append(plan)
        params = self._activation_params(plans)  # every range problem raises before anything changes
        weights: dict[tuple[int, str], tuple[ir.Value, QuantizedWeightValues]] = {}
        for plan in plans:
            messages = []
            if plan.weight is not None:
                messages.append(self._quantize_weight(graph, plan, weights, params))
                if self.float_outputs and _float_output_candidate(plan):
                    if _exact_in_float32(plan.node):
                        plan.node.metadata_props[FLOAT_OUTPUT_KEY] = "1"
                        messages.append("float output (exact int32 accumulator x scale)")
                    else:
                        messages.append("int8 output (the accumulator could exceed float32's exact integers)")
            todo = [v for v in (*plan.data_inputs, *_float_outputs(plan.node)) if id(v) in params] \
                if plan.activations else []
            if plan.activations and todo:
                shared = plan.node.op_type in SHARED_PARAMS and plan.node.domain in _DEFAULT
                messages.append("int8 activations" + (" (output shares the input's scale)" if shared else ""))
            elif plan.weight is not None and not plan.activations:
                messages.append("float activations")
            if messages:
                label = f"{plan.precision}: " if base_op(plan.node) is not None else ""
                result.applied.append(f"{node_label(plan.node)}: {label}{', '.join(messages)}")
        done: set[int] = set()
        for plan in plans:
            if not plan.activations:
                continue
            for value in (*plan.data_inputs, *_float_outputs(plan.node)):
                if id(value) in params and id(value) not in done:
                    done.add(id(value))
                    quantize_activation(graph, value, *params[id(value)])
        result.changed = bool(done) or bool(weights)
        return result

    # -- planning --------------------------------------------------------------------------
    def _plan(self, node: ir.Node, precision: str) -> tuple[_Plan | None, str | None]:
        if precision_kind(precision) == "fp32":
            return None, "precision fp32 (--keep-float)"
        if any(v is not None and v.dtype not in (ir.DataType.FLOAT, None) for v in node.outputs[:1]):
            return None, "its output is not float32"
        base = base_op(node)
        if base is not None:
            return self._plan_weighted(node, base, precision)
        if not quantizes_activations(precision):
            return None, f"precision {precision}: weight-only, activations stay float"
        op = node.op_type if node.domain in _DEFAULT else None
        if node.domain == fused_ops.DOMAIN and node.op_type in ("Gelu", "GeluTanh"):
            op = "Gelu"
        elif op not in SHARED_PARAMS and op not in OWN_RANGE:
            return None, f"{node.domain + '.' if node.domain not in _DEFAULT else ''}{node.op_type} has no integer kernel"
        if op == "Resize":
            mode = node.attributes.get("mode")
            if mode is not None and mode.value not in ("nearest", "linear"):
                return None, f"Resize mode {mode.value!r} is not requantization-free (only 'nearest' and 'linear' are)"
        inputs = [v for v in node.inputs if v is not None] if op in ALL_INPUTS else [node.inputs[0]]
        return _Plan(node, precision, True, [v for v in inputs if _is_float(v)]), None

    def _plan_weighted(self, node: ir.Node, base: str, precision: str) -> tuple[_Plan | None, str | None]:
        if node.domain == fused_ops.DOMAIN:
            steps = fused_ops.parse_fused_op_type(node.op_type)[1]
            if steps not in CLAMP_EPILOGUES:
                return None, (f"fused epilogue {'+'.join(steps)} is not an integer clamp (fuse with "
                              f"FuseEpiloguePass(activations={{'Relu', 'Clip'}}, residual=False) when quantizing)")
        activations = quantizes_activations(precision)
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        weight_array = Graph.constant(weight)
        weight_done = match_weight(weight) is not None
        data = [node.inputs[0]]
        if base in ("Gemm",) and (_float_attr(node, "alpha") != 1.0 or _float_attr(node, "beta") != 1.0):
            return None, "Gemm with alpha or beta != 1 (fold them into the weights first)"
        if weight_array is None and not weight_done:
            if base != "MatMul":
                return None, f"its weight {weight.name if weight is not None else None!r} is not a constant"
            if not activations:
                return None, f"precision {precision}: weight-only, and the right operand is an activation"
            data.append(weight)  # activation x activation (attention): both operands Q/DQ'd
            weight = None
        elif weight_array is not None and base == "MatMul" and weight_array.ndim != 2:
            return None, f"MatMul weight of rank {weight_array.ndim} (only [K, N] weights are quantized)"
        bias_index = 2 if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if bias_index is not None and weight is not None and not weight_done:
            bias = Graph.constant(node.inputs[2])
            out_channels = _out_channels(node, base, weight_array)
            if bias is None:
                return None, f"its bias {node.inputs[2].name!r} is not a constant"
            if bias.size not in (1, out_channels) or (bias.ndim > 1 and bias.shape[-1] != bias.size):
                return None, f"its bias of shape {list(bias.shape)} is not one value per output channel"
        if weight_done:
            weight = None
        return _Plan(node, precision, activations, [v for v in data if _is_float(v)], weight, bias_index), None

    def _activation_params(self, plans: list[_Plan]) -> dict[int, Params]:
        """(scale, zero point) for every value to Q/DQ, by id; missing ranges raise here."""
        params: dict[int, Params] = {}
        sharing = {id(p.node.outputs[0]): p for p in plans
                   if p.activations and p.node.op_type in SHARED_PARAMS and p.node.domain in _DEFAULT}
        for plan in plans:
            if not plan.activations:
                continue
            for value in (*plan.data_inputs, *_float_outputs(plan.node)):
                self._params_of(value, plan.node, sharing, params)
        return params

    def _params_of(self, value: ir.Value, node: ir.Node, sharing: dict[int, _Plan],
                   params: dict[int, Params]) -> Params:
        if id(value) in params:
            return params[id(value)]
        existing = _existing_params(value)
        if existing is not None:  # quantized by an earlier run: reuse, do not redo
            return existing
        if id(value) in sharing:
            source = sharing[id(value)].node.inputs[0]
            found = self._params_of(source, sharing[id(value)].node, sharing, params)
        else:
            array = Graph.constant(value)
            if array is not None:
                _check_finite(array, value.name, node)
                found = activation_params(float(np.min(array)), float(np.max(array)))
            else:
                found = activation_params(*self._range(value, node))
        params[id(value)] = found
        return found

    def _range(self, value: ir.Value, node: ir.Node) -> tuple[float, float]:
        entry = self.ranges.get(value.name)
        if entry is None:
            raise QuantizationError(
                f"no calibration range for value {value.name!r} (read or written by node {node_label(node)}); "
                f"calibrate the same graph that is quantized (after the fuse stage)")
        low, high = (entry.low, entry.high) if hasattr(entry, "low") else tuple(entry)
        low, high = float(low), float(high)
        if not (np.isfinite(low) and np.isfinite(high)):
            raise QuantizationError(f"the calibration range of value {value.name!r} (node {node_label(node)}) "
                                    f"is [{low}, {high}]: NaN/Inf reached it; check the calibration data")
        return low, high

    # -- rewriting ---------------------------------------------------------------------------
    def _quantize_weight(self, graph: Graph, plan: _Plan, cache: dict, params: dict[int, Params]) -> str:
        node, weight = plan.node, plan.weight
        base = base_op(node)
        array = Graph.constant(weight)
        _check_finite(array, weight.name, node)
        transposed = base == "MatMul" or (base == "Gemm" and int_attr(node, "transB", 0) == 0)
        stored = array.T if transposed else array
        key = (id(weight), f"{plan.precision}:{transposed}")
        if key in cache:
            read, values = cache[key]
        else:
            if base == "ConvTranspose":
                values = _per_tensor_int8(stored)
            else:
                values = quantize_weight(stored, plan.precision, self.config.method, weight.name)
                if plan.bias_index is not None and plan.activations:
                    values = with_scale_floor(stored, values, self._bias_scale_floor(plan, values, params))
            read = dequantized_weight(graph, node, values.q, values.scale, values.precision, weight.name,
                                      values.group_size, transposed)
            cache[key] = (read, values)
        node.replace_input_with(1, read)
        drop_if_unused(graph, weight)
        message = f"{values.precision} weights"
        if base == "ConvTranspose" and plan.precision != "int8":
            message += f" (ConvTranspose weights are int8 per tensor, not {plan.precision})"
        elif values.note:
            message += f" ({values.note})"
        if plan.bias_index is not None and plan.activations:
            message += self._quantize_bias(graph, plan, values, params)
        return message

    @staticmethod
    def _bias_scale_floor(plan: _Plan, values: QuantizedWeightValues, params: dict[int, Params]) -> np.ndarray:
        """The smallest weight scale per channel at which the bias still fits int32 (with 2x headroom)."""
        bias = np.abs(Graph.constant(plan.node.inputs[plan.bias_index]).astype(np.float64).reshape(-1))
        channels = values.scale.shape[0]
        bias = np.broadcast_to(bias, (channels,)) if bias.size in (1, channels) else np.zeros(channels)
        return (bias / (params[id(plan.node.inputs[0])][0] * (INT32_MAX / 2))).astype(np.float32)

    def _quantize_bias(self, graph: Graph, plan: _Plan, weight: QuantizedWeightValues,
                       params: dict[int, Params]) -> str:
        node = plan.node
        bias_value = node.inputs[plan.bias_index]
        bias = Graph.constant(bias_value).astype(np.float64).reshape(-1)
        _check_finite(bias, bias_value.name, node)
        weight_scale = weight.scale.reshape(weight.scale.shape[0], -1).max(axis=1).astype(np.float64)
        input_scale = params[id(node.inputs[0])][0]
        scale = (np.float32(input_scale) * weight_scale.astype(np.float32)).astype(np.float32)
        if base_op(node) == "ConvTranspose":
            scale = np.full(bias.size, scale[0], np.float32)  # per tensor weights: one scale
        if bias.size == 1 and scale.size > 1:
            bias = np.full(scale.size, bias[0])
        q = np.rint(bias / scale.astype(np.float64))
        clamped = int(np.count_nonzero((q < INT32_MIN) | (q > INT32_MAX)))
        note = ""
        if clamped:
            warnings.warn(f"node {node_label(node)}: {clamped} bias value(s) of {bias_value.name!r} overflow int32 "
                          f"at scale input·weight and were clamped", stacklevel=3)
            note = f", {clamped} bias value(s) clamped to int32"
        q = np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)
        read = dequantized_bias(graph, node, q, scale, bias_value.name)
        node.replace_input_with(plan.bias_index, read)
        drop_if_unused(graph, bias_value)
        return f", int32 bias{note}"


# -- helpers ---------------------------------------------------------------------------------
def _is_float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype in (ir.DataType.FLOAT, None)


def _float_outputs(node: ir.Node) -> list[ir.Value]:
    """The output to Q/DQ: the first, when float and not kept float on purpose (FLOAT_OUTPUT_KEY)."""
    if FLOAT_OUTPUT_KEY in node.metadata_props:
        return []
    return [v for v in node.outputs[:1] if _is_float(v)]


def _float_output_candidate(plan: _Plan) -> bool:
    """A weighted node with int8 activations whose output only leaves the graph (module docstring)."""
    node = plan.node
    out = node.outputs[0]
    if not plan.activations or not out.is_graph_output() or out.uses() or len(node.outputs) != 1:
        return False
    if node.domain == fused_ops.DOMAIN and fused_ops.parse_fused_op_type(node.op_type)[1]:
        return False  # a fused clamp would have to run in float after the multiply
    weight = match_weight(node.inputs[1])
    # int8 only: the first/last guard keeps a low-bit model's last layer int8 anyway, and backends
    # unpack int8 weights for float kernels (DequantizeWeight) wherever they run float layers.
    return weight is not None and weight.precision == "int8" and base_op(node) in ("Conv", "Gemm", "MatMul")


def _exact_in_float32(node: ir.Node) -> bool:
    """|b_q[o]| + 255 · Σ_k |W_q[o, k]| < 2^24 for every output channel o (QDQ weights and bias)."""
    weight = match_weight(node.inputs[1])
    rows = np.abs(weight.q_values.reshape(weight.q_values.shape[0], -1).astype(np.int64)).sum(axis=1)
    bound = UINT8_SPAN * rows
    bias = match_weight(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if bias is not None:
        bound = bound + np.abs(bias.q_values.reshape(-1).astype(np.int64))
    return bool(np.all(bound < FLOAT32_EXACT))


def _float_attr(node: ir.Node, name: str) -> float:
    attr = node.attributes.get(name)
    return float(attr.value) if attr is not None else 1.0


def _is_qdq_machinery(node: ir.Node) -> bool:
    return node.domain in _DEFAULT and node.op_type in ("QuantizeLinear", "DequantizeLinear")


def _constant_derived(graph: Graph) -> set[int]:
    """ids of values computed from constants only: initializers and the weight DQ chains."""
    constant = {id(v) for v in graph.main.initializers.values() if not v.is_graph_input()}
    for node in graph.main:
        if node.inputs and all(v is None or id(v) in constant for v in node.inputs):
            constant |= {id(v) for v in node.outputs}
    return constant


def _existing_params(value: ir.Value) -> Params | None:
    """The (scale, zero point) of a value already read through Q/DQ, else None."""
    found = match_activation(value)
    if found is not None:
        return found.scale, found.zero_point
    for user, index in value.uses():
        if _is_qdq_machinery(user) and user.op_type == "QuantizeLinear" and index == 0:
            scale, zero = Graph.constant(user.inputs[1]), Graph.constant(user.inputs[2])
            if scale is not None and zero is not None:
                return float(scale.reshape(())), int(zero.reshape(()))
    return None


def _check_finite(array: np.ndarray, name: str, node: ir.Node) -> None:
    if not np.all(np.isfinite(array)):
        raise QuantizationError(f"tensor {name!r} of node {node_label(node)} holds NaN/Inf values; "
                                f"fix the model before quantizing")


def _out_channels(node: ir.Node, base: str, weight: np.ndarray) -> int:
    if base == "Conv":
        return int(weight.shape[0])
    if base == "ConvTranspose":
        return int(weight.shape[1]) * int_attr(node, "group", 1)
    if base == "Gemm":
        return int(weight.shape[0] if int_attr(node, "transB", 0) else weight.shape[1])
    return int(weight.shape[-1])


def _per_tensor_int8(w: np.ndarray) -> QuantizedWeightValues:
    """ConvTranspose: one int8 scale for the whole tensor, repeated along axis 0 (see docstring)."""
    peak = float(np.max(np.abs(w)))
    scale = np.float32(peak / 127 if peak > 0 else 1.0)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return QuantizedWeightValues(q, np.full(w.shape[0], scale, np.float32), "int8", None)
