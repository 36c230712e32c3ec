"""What the peers store for the same weights: onnxruntime's QDQ model and a TFLite flatbuffer.

Used by `benchmarks.weight_bytes` for its peer columns; every count is against the same FP32
bytes (the float initializers of edgekiln's optimized float graph, BatchNorm folded).

* onnxruntime: `quantize_static` (QDQ, per channel, QInt8 activations; QInt8 or QInt4 weights)
  on the model ORT is given in `benchmarks.quantization_sqnr` (frontend-loaded, shapes pinned,
  `quant_pre_process`, whose graph optimizer folds BatchNorm into Conv), its ratio against the
  float initializers of that input (the same parameters as edgekiln's FP32 bytes where the
  folds agree; both are in the JSON).  Counted like edgekiln's QDQ graph: for every DequantizeLinear that reads an initializer, the values (int4 at 4 bits,
  as ONNX packs them), the scale and the zero point; plus every float initializer that no
  QuantizeLinear / DequantizeLinear reads (what stays float).  Activation scales and zero
  points are left out on both sides.
* TFLite: the int8 .tflite that edgekiln's EdgeTPU backend writes (TFLite's own quantization
  format, the same per-channel int8 weights as the arm_cpu blob): every constant tensor's
  buffer plus its quantization parameters as the schema stores them (float32 scale and int64
  zero point per channel, also for the int32 biases).  Models the EdgeTPU backend refuses
  (LayerNorm / 5-D transposes) have no column.  int8 only: TFLite has no int4 / ternary
  convolution.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import onnx
from onnx import numpy_helper

from benchmarks.quantization_sqnr import ort_quantize, prepare_for_ort
from edgekiln.errors import EdgekilnError
from edgekiln.passes.graph_edits import (
    FLOAT_TYPES,  # ir.DataType values are TensorProto codes
)

_PARAM_SLOTS = (1, 2)  # scale, zero point of QuantizeLinear / DequantizeLinear
_SUB_BYTE_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}


def _initializer_bytes(tensor: onnx.TensorProto) -> int:
    count = math.prod(tensor.dims)
    bits = _SUB_BYTE_BITS.get(tensor.data_type)
    if bits is not None:
        return math.ceil(count * bits / 8)
    return numpy_helper.to_array(tensor).nbytes


def onnx_qdq_weight_bytes(model: onnx.ModelProto) -> int:
    """Weight bytes of a QDQ model: DequantizeLinear chains of initializers + float initializers left over."""
    initializers = {t.name: t for t in model.graph.initializer}
    counted: set[str] = set()
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        params = [node.input[i] for i in _PARAM_SLOTS if i < len(node.input) and node.input[i]]
        counted.update(params)
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            counted.add(node.input[0])
            total += sum(_initializer_bytes(initializers[name]) for name in (node.input[0], *params))
    total += sum(_initializer_bytes(t) for name, t in initializers.items()
                 if name not in counted and t.data_type in FLOAT_TYPES)
    return total


def ort_weight_bytes(name: str, calib: list, weight_types: tuple[str, ...]) -> dict:
    """quantize_static (MinMax) of zoo model `name` with each of `weight_types`: the float bytes of
    ORT's input model ("fp32") and the weight bytes of each result."""
    with tempfile.TemporaryDirectory(prefix="ek-weight-bytes-") as folder:
        source, _ = prepare_for_ort(name, Path(folder))
        float_model = onnx.load(source)
        counts = {"fp32": sum(_initializer_bytes(t) for t in float_model.graph.initializer
                              if t.data_type in FLOAT_TYPES)}
        for weight_type in weight_types:
            target = Path(folder) / f"{weight_type}.onnx"
            ort_quantize(source, target, calib, "MinMax", weight_type=weight_type)
            counts[weight_type] = onnx_qdq_weight_bytes(onnx.load(target))
        return counts


def tflite_weight_bytes(data: bytes) -> int:
    """Constant buffers of a .tflite plus the quantization parameters of those tensors."""
    from edgekiln.backends.edgetpu.tflite_reader import read_tflite

    model = read_tflite(data)
    total = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer = model.buffers[tensor.buffer]
            if buffer.data is None or len(buffer.data) == 0:
                continue
            total += len(buffer.data)
            q = tensor.quantization
            if q is not None:
                total += 4 * len(q.scale if q.scale is not None else ()) + 8 * len(
                    q.zeroPoint if q.zeroPoint is not None else ())
    return total


def edgekiln_tflite_weight_bytes(path: Path, shapes: dict, calib: list) -> int | None:
    """Weight bytes of the int8 .tflite the edgetpu target writes, or None where it refuses the model."""
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.quant_options import QuantOptions

    options = QuantOptions(quant="int8", calib=calib, bias_correction=False)
    try:
        result = compile_model(path, "edgetpu", input_shapes=shapes, quantization=options, progress=False)
    except EdgekilnError:
        return None
    return tflite_weight_bytes(result.artifact.files["model.tflite"])


__all__ = ["edgekiln_tflite_weight_bytes", "onnx_qdq_weight_bytes", "ort_weight_bytes", "tflite_weight_bytes"]
