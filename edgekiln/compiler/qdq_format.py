"""How a quantized model is written as ONNX (the QDQ graph), and how lowering reads it back.

The quantized graph is the *float reference*: onnxruntime runs it and its outputs are the
fake-quantized model's.  Integer lowering pattern-matches exactly these shapes, so the
quantization passes build them only through this module.

Activations (per tensor, asymmetric int8):

    producer -> v -> QuantizeLinear(v, s, zp:int8) -> DequantizeLinear(·, s, zp) -> readers

    Graph inputs and outputs are quantized the same way; an output keeps its name on the
    DequantizeLinear result, so the model's interface stays float.

Weights (symmetric, zero point 0, an int8 initializer holding the integer values):

    int8 per output channel:  W_q[O, ...] -> DequantizeLinear(axis=0, scale[O]) -> reader
    ternary per channel:      the same, with every value in {-1, 0, 1}
    int4 / ternary per group of g along the flattened reduction axis K = prod(W.shape[1:]):
        W_q[O, ...] -> Reshape[O·K/g, g] -> DequantizeLinear(axis=0, scale[O·K/g])
                    -> Reshape[W.shape] -> reader
    (opset 17 has neither the INT4 type nor blocked DequantizeLinear, which arrive in 21;
    this spelling is exact at 13+, and a backend packs the values two or four per byte.)

    For Gemm with transB=0 and MatMul the output channel is the LAST weight axis: the
    weight is stored transposed ([N, K]) and read through a Transpose(perm=[1, 0]) after
    the DequantizeLinear, so "axis 0 = output channel" holds for every weight.

    The DequantizeLinear node carries `metadata_props["edgekiln.precision"]`: "int8",
    "int4:g<g>", "ternary" or "ternary:g<g>".

Bias (int32, scale = input scale · weight scale per channel, zero point 0):

    b_q[O] int32 -> DequantizeLinear(axis=0, scale[O]) -> reader

Nodes kept in float simply read DequantizeLinear outputs and feed QuantizeLinear inputs.

A float graph output of a weighted node (QuantizeGraphPass `float_outputs`): the node reads
the usual int8 input, weight and int32 bias chains, its output has no Q/DQ, and the node
carries `metadata_props["edgekiln.float_output"] = "1"`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph

PRECISION_KEY = "edgekiln.precision"
FLOAT_OUTPUT_KEY = "edgekiln.float_output"


# -- builders ------------------------------------------------------------------------------------

def _constant(graph: Graph, array: np.ndarray, name: str) -> ir.Value:
    base, suffix = name, 1
    taken = set(graph.main.initializers)
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.main.register_initializer(value)
    return value


def _typed(value: ir.Value, shape: tuple[int, ...], dtype: ir.DataType, name: str) -> ir.Value:
    value.shape, value.type, value.name = ir.Shape(shape), ir.TensorType(dtype), name
    return value


def quantize_activation(graph: Graph, value: ir.Value, scale: float, zero_point: int) -> tuple[ir.Node, ir.Node]:
    """Insert QuantizeLinear -> DequantizeLinear on `value`; every reader reads the result.

    Returns the (Q, DQ) nodes.  A graph output keeps its name on the DQ result.
    """
    shape = tuple(value.shape) if value.shape is not None else ()
    base = value.name or "v"
    s = _constant(graph, np.array(scale, np.float32), f"{base}_scale")
    zp = _constant(graph, np.array(zero_point, np.int8), f"{base}_zero_point")
    q = ir.node("QuantizeLinear", [value, s, zp], name=f"{base}/QuantizeLinear")
    dq = ir.node("DequantizeLinear", [q.outputs[0], s, zp], name=f"{base}/DequantizeLinear")
    _typed(q.outputs[0], shape, ir.DataType.INT8, f"{base}_quantized")
    _typed(dq.outputs[0], shape, ir.DataType.FLOAT, f"{base}_dequantized")
    producer = value.producer()
    if producer is not None:
        graph.main.insert_after(producer, [q, dq])
    else:  # a graph input: before its first reader
        graph.main.insert_before(next(iter(graph.main)), [q, dq])
    output_name = value.name if value.is_graph_output() else None
    readers = [(user, index) for user, index in value.uses() if user is not q]
    for user, index in readers:
        user.replace_input_with(index, dq.outputs[0])
    if output_name is not None:
        outputs = graph.main.outputs
        for i, out in enumerate(outputs):
            if out is value:
                outputs[i] = dq.outputs[0]
        value.name = f"{output_name}_float"
        dq.outputs[0].name = output_name
    return q, dq


def dequantized_weight(graph: Graph, reader: ir.Node, q_values: np.ndarray, scale: np.ndarray, precision: str,
                       name: str, group_size: int | None = None, transposed: bool = False) -> ir.Value:
    """The float value a weight reader reads: int8 initializer -> [Reshape] -> DQ -> [Reshape] [-> Transpose].

    `q_values` has the output channel on axis 0 (for `transposed` weights: [N, K]).  `scale`
    is [O] (per channel) or [O, K/g] (per group).  The nodes are inserted before `reader`.
    """
    q_values = np.ascontiguousarray(q_values, dtype=np.int8)
    weight = _constant(graph, q_values, f"{name}_quantized")
    nodes: list[ir.Node] = []
    shape = q_values.shape
    source = weight
    if group_size is not None:
        rows = q_values.size // group_size
        target = _constant(graph, np.array([rows, group_size], np.int64), f"{name}_group_shape")
        flat = ir.node("Reshape", [source, target], name=f"{name}/GroupReshape")
        _typed(flat.outputs[0], (rows, group_size), ir.DataType.INT8, f"{name}_grouped")
        nodes.append(flat)
        source = flat.outputs[0]
    scale_value = _constant(graph, np.ascontiguousarray(np.reshape(scale, -1), np.float32), f"{name}_scale")
    zero = _constant(graph, np.zeros(scale_value.const_value.shape, np.int8), f"{name}_zero_point")
    dq = ir.node("DequantizeLinear", [source, scale_value, zero], attributes={"axis": 0},
                 name=f"{name}/DequantizeLinear", metadata_props={PRECISION_KEY: precision})
    dq_shape = (q_values.size // group_size, group_size) if group_size is not None else shape
    _typed(dq.outputs[0], dq_shape, ir.DataType.FLOAT, f"{name}_dequantized")
    nodes.append(dq)
    result = dq.outputs[0]
    if group_size is not None:
        target = _constant(graph, np.array(shape, np.int64), f"{name}_shape")
        back = ir.node("Reshape", [result, target], name=f"{name}/UngroupReshape")
        _typed(back.outputs[0], shape, ir.DataType.FLOAT, f"{name}_ungrouped")
        nodes.append(back)
        result = back.outputs[0]
    if transposed:
        flip = ir.node("Transpose", [result], attributes={"perm": [1, 0]}, name=f"{name}/Transpose")
        _typed(flip.outputs[0], shape[::-1], ir.DataType.FLOAT, f"{name}_dequantized_t")
        nodes.append(flip)
        result = flip.outputs[0]
    graph.main.insert_before(reader, nodes)
    return result


def dequantized_bias(graph: Graph, reader: ir.Node, q_bias: np.ndarray, scale: np.ndarray, name: str) -> ir.Value:
    """int32 bias initializer -> DequantizeLinear(axis=0, per-channel scale), inserted before `reader`."""
    bias = _constant(graph, np.ascontiguousarray(q_bias, np.int32), f"{name}_quantized")
    scale_value = _constant(graph, np.ascontiguousarray(np.reshape(scale, -1), np.float32), f"{name}_scale")
    zero = _constant(graph, np.zeros(scale_value.const_value.shape, np.int32), f"{name}_zero_point")
    dq = ir.node("DequantizeLinear", [bias, scale_value, zero], attributes={"axis": 0},
                 name=f"{name}/DequantizeLinear", metadata_props={PRECISION_KEY: "int32"})
    _typed(dq.outputs[0], q_bias.shape, ir.DataType.FLOAT, f"{name}_dequantized")
    graph.main.insert_before(reader, [dq])
    return dq.outputs[0]


# -- matchers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedActivation:
    """A value read through Q -> DQ: the float source, its int8 twin, and the parameters."""

    source: ir.Value         # the float value before QuantizeLinear
    quantized: ir.Value      # the int8 QuantizeLinear output
    scale: float
    zero_point: int


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight read through the chain above, as the integers and scales lowering needs."""

    q_values: np.ndarray     # int8, output channel on axis 0 ([N, K] for transposed weights)
    scale: np.ndarray        # float32 [O] or [O, K/g]
    precision: str           # "int8", "int4:g64", "ternary", "ternary:g32", "int32" (bias)
    group_size: int | None
    transposed: bool

    @property
    def bits(self) -> int:
        kind = self.precision.split(":")[0]
        return {"int8": 8, "int4": 4, "ternary": 2, "int32": 32}[kind]


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx") else None


def match_activation(value: ir.Value | None) -> QuantizedActivation | None:
    """`value` = DQ(Q(source)) with per-tensor constant parameters, else None."""
    dq = _producer(value, "DequantizeLinear")
    q = _producer(dq.inputs[0], "QuantizeLinear") if dq is not None else None
    if q is None:
        return None
    scale, zero_point = Graph.constant(dq.inputs[1]), Graph.constant(dq.inputs[2]) if len(dq.inputs) > 2 else None
    if scale is None or scale.size != 1 or (zero_point is not None and zero_point.size != 1):
        return None
    return QuantizedActivation(q.inputs[0], q.outputs[0], float(scale.reshape(())),
                               int(zero_point.reshape(())) if zero_point is not None else 0)


def match_weight(value: ir.Value | None) -> QuantizedWeight | None:
    """`value` read through the weight / bias chain of the module docstring, else None."""
    transposed = False
    flip = _producer(value, "Transpose")
    if flip is not None:
        transposed, value = True, flip.inputs[0]
    ungroup = _producer(value, "Reshape")
    dq = _producer(ungroup.inputs[0] if ungroup is not None else value, "DequantizeLinear")
    if dq is None or PRECISION_KEY not in dq.metadata_props:
        return None
    group = _producer(dq.inputs[0], "Reshape")
    q_source = group.inputs[0] if group is not None else dq.inputs[0]
    q_values, scale = Graph.constant(q_source), Graph.constant(dq.inputs[1])
    if q_values is None or scale is None:
        return None
    group_size = None
    if group is not None:
        group_size = int(Graph.constant(group.inputs[1])[-1])
        scale = scale.reshape(q_values.shape[0], -1)
    return QuantizedWeight(q_values, scale.astype(np.float32), dq.metadata_props[PRECISION_KEY], group_size,
                           transposed)
