"""Quantized (QDQ) test graphs built with `qdq_format`'s builders, independent of the quantization pass.

`quantized_zoo_graph(name)` runs the float pipeline a quantized compile runs (simplify, then
epilogue fusion of Relu / Clip only, no residual Add), calibrates every float activation with
min/max over a few inputs in onnxruntime, and writes the QDQ graph: per-tensor asymmetric int8
activations, per-output-channel symmetric int8 weights (int4 groups on request), int32 biases.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from edgekiln.compiler import fused_ops
from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_manager import PassManager
from edgekiln.compiler.pipelines import simplify
from edgekiln.compiler.qdq_format import dequantized_bias, dequantized_weight, match_weight, quantize_activation
from edgekiln.compiler.requantize import activation_params, quantize
from edgekiln.passes.fuse_epilogue import FuseEpiloguePass

WEIGHTED = {"Conv", "Gemm", "MatMul", "ConvTranspose", "FusedConv", "FusedGemm", "FusedMatMul"}


def quantized_float_graph(name: str) -> Graph:
    """The float graph a quantized compile calibrates: simplify, then Relu / Clip-only fusion."""
    from tests.zoo import input_shapes, model_path

    graph = load_model(model_path(name), input_shapes(name))
    graph = PassManager(simplify().passes, stage="simplify").run(graph)
    fuse = FuseEpiloguePass(activations=frozenset({"Relu", "Clip"}), residual=False)
    return PassManager([fuse], stage="fuse").run(graph)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def activation_values(graph: Graph) -> list[ir.Value]:
    """Graph inputs and float node outputs: every value that gets a Q/DQ."""
    values = [v for v in graph.inputs if v.const_value is None]
    for node in graph.main:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or all(
                v is None or v.const_value is not None or _weight_chain(v) for v in node.inputs):
            continue  # a weight chain or a constant subgraph, not an activation
        for value in node.outputs:
            if value.dtype == ir.DataType.FLOAT and (value.uses() or value.is_graph_output()):
                values.append(value)
    return values


def _weight_chain(value: ir.Value) -> bool:
    producer = value.producer()
    return producer is not None and producer.op_type in ("DequantizeLinear", "Reshape", "Transpose") and all(
        v is None or v.const_value is not None or _weight_chain(v) for v in producer.inputs)


def calibrate(graph: Graph, feeds_list: list[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """min/max of every activation value over `feeds_list`, computed by onnxruntime."""
    names = [v.name for v in activation_values(graph)]
    proto = graph.to_proto()
    known = {o.name for o in proto.graph.output}
    for name in names:
        if name not in known and name not in {i.name for i in proto.graph.input}:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = session(proto)
    outputs = [o.name for o in sess.get_outputs()]
    ranges: dict[str, tuple[float, float]] = {}
    for feeds in feeds_list:
        got = dict(zip(outputs, sess.run(outputs, feeds)))
        got.update(feeds)
        for name in names:
            low, high = float(np.min(got[name])), float(np.max(got[name]))
            old = ranges.get(name, (low, high))
            ranges[name] = (min(old[0], low), max(old[1], high))
    return ranges


def _base(node: ir.Node) -> str:
    if node.domain == fused_ops.DOMAIN:
        parsed = fused_ops.parse_fused_op_type(node.op_type)
        return parsed[0].removeprefix("Fused") if parsed else ""
    return node.op_type


def _weight_rows(w: np.ndarray, bits: int, group: int | None) -> tuple[np.ndarray, np.ndarray]:
    qmax = 127 if bits == 8 else 7
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    if group is not None:
        rows = rows.reshape(-1, group)
    scale = np.abs(rows).max(axis=1) / qmax
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(rows / scale[:, None]), -qmax, qmax).astype(np.int8).reshape(w.shape)
    return q, scale.reshape(w.shape[0], -1) if group is not None else scale


def quantize_graph(graph: Graph, ranges: dict[str, tuple[float, float]], *, weight_bits: int = 8,
                   group_size: int | None = None) -> Graph:
    """Write the QDQ graph in place: weights (per channel, or int4 groups), biases, then activations."""
    params = {name: activation_params(*r) for name, r in ranges.items()}
    values = activation_values(graph)
    for node in list(graph.main):
        base = _base(node)
        if base not in {"Conv", "Gemm", "MatMul", "ConvTranspose"} or len(node.inputs) < 2:
            continue
        if node.inputs[0].name not in params:
            continue
        w = Graph.constant(node.inputs[1])
        chain = match_weight(node.inputs[1])
        if w is not None:
            trans_b = node.attributes.get("transB")
            transposed = base == "MatMul" or (base == "Gemm" and not (trans_b is not None and trans_b.value))
            if base == "MatMul" and w.ndim != 2:
                continue
            stored = w.T if transposed else w
            k = int(np.prod(stored.shape[1:]))
            group = group_size if group_size is not None and k % group_size == 0 and base != "ConvTranspose" else None
            bits = weight_bits if group is not None or group_size is None else 8
            q, scale = _weight_rows(stored, bits, group)
            precision = "int8" if bits == 8 else (f"int4:g{group}" if group else "int4")
            name = node.inputs[1].name or f"{node.name}_w"
            node.replace_input_with(1, dequantized_weight(graph, node, q, scale, precision, name, group, transposed))
        elif chain is not None:  # quantized by the test itself
            scale = chain.scale
        else:
            continue
        # The bias at the accumulator scale s_x·s_w (per group: the row's largest group scale).
        bias = Graph.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        rows = np.asarray(scale, np.float32).reshape(np.shape(scale)[0], -1).max(axis=1)
        if bias is not None and base != "ConvTranspose" and bias.size == rows.size:
            s_x = np.float32(params[node.inputs[0].name][0])
            s_b = (s_x * rows).astype(np.float32)
            with np.errstate(all="ignore"):
                q_b = np.rint(bias.reshape(-1).astype(np.float64) / s_b)
            if not np.all(np.abs(q_b) < 2**31 - 1):
                continue  # a near-constant input: the bias stays float (lowering keeps the node float)
            node.replace_input_with(2, dequantized_bias(graph, node, q_b.astype(np.int32), s_b,
                                                        f"{node.inputs[2].name}_b"))
    for value in values:
        if value.name in params:
            quantize_activation(graph, value, *params[value.name])
    # A non-scalar float constant added / multiplied / concatenated with activations is an int8
    # operand too (as in TFLite); a scalar one is folded into a lookup table by lowering.
    for node in list(graph.main):
        if node.op_type in ("Add", "Sub", "Mul", "Concat") and node.domain == "":
            for index, value in enumerate(node.inputs):
                array = Graph.constant(value)
                if array is not None and array.size > 1 and array.dtype == np.float32:
                    quantize_activation(graph, value, *activation_params(float(array.min()),
                                                                                 float(array.max())))
    return graph


def model_feeds(name: str, count: int = 4) -> list[dict[str, np.ndarray]]:
    """Calibration inputs: the model's sample input under a few seeds."""
    from tests.zoo import sample_input

    feeds = []
    for seed in range(count):
        try:
            feeds.append(sample_input(name, seed=seed))
        except TypeError:
            feeds.append(sample_input(name))
            break
    return feeds


def quantized_zoo_graph(name: str, **options) -> tuple[Graph, Graph, list[dict[str, np.ndarray]]]:
    """(float graph, QDQ graph, calibration feeds) for zoo / PP-OCR model `name`."""
    float_graph = quantized_float_graph(name)
    feeds = model_feeds(name)
    ranges = calibrate(float_graph, feeds)
    return float_graph, quantize_graph(float_graph.clone(), ranges, **options), feeds


def lsb_agreement(expected: np.ndarray, actual: np.ndarray, scale: float) -> tuple[float, float]:
    """(share equal, share within 1 LSB) of two dequantized outputs with output scale `scale`."""
    steps = np.rint(np.abs(np.asarray(actual, np.float64) - expected) / scale)
    return float(np.mean(steps == 0)), float(np.mean(steps <= 1))


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return quantize(x, scale, zero_point)


def quantize_with_pass(float_graph: Graph, feeds: list[dict[str, np.ndarray]], quant: str = "int8") -> Graph:
    """The QDQ graph written by edgekiln's own QuantizeGraphPass (same ranges as the helper)."""
    from edgekiln.passes.quantize_graph import QuantizeGraphPass
    from edgekiln.quantization.quant_config import QuantConfig

    graph = float_graph.clone()
    QuantizeGraphPass(QuantConfig.from_options(quant=quant), calibrate(float_graph, feeds)).run(graph)
    return graph


def isolated_kernel_agreement(qdq: Graph, program, feeds: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Each integer kernel fed onnxruntime's own int8 inputs, compared with onnxruntime's int8 output.

    Returns {op: [elements, equal, within 1 LSB, max difference]}: differences here are the
    kernels', not ones that propagated from earlier layers.
    """
    from edgekiln.backends.reference.interpreter import KERNELS

    names = {v.name for node in qdq.main for v in node.outputs}
    int8 = [t for t, spec in program.tensors.items() if spec.dtype == "int8" and spec.kind != "constant"
            and t in names]
    proto = qdq.to_proto()
    for name in int8:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT8, None))
    sess = session(proto)
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    stats: dict[str, list[int]] = {}
    for call in program.calls:
        if call.op not in KERNELS or call.op in ("Quantize", "Dequantize", "DequantizeWeight"):
            continue
        if call.outputs[0] not in ref or not all(not n or n in ref or n in program.constants for n in call.inputs):
            continue
        args = [ref[n] if n in ref else (program.constants[n] if n else None) for n in call.inputs]
        diff = np.abs(KERNELS[call.op](call, args)[0].astype(np.int64) - ref[call.outputs[0]].astype(np.int64))
        entry = stats.setdefault(call.op, [0, 0, 0, 0])
        entry[0] += diff.size
        entry[1] += int((diff == 0).sum())
        entry[2] += int((diff <= 1).sum())
        entry[3] = max(entry[3], int(diff.max()))
    return stats
