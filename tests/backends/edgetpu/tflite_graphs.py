"""Hand-made .tflite files for the Edge TPU report tests, written straight with the schema object API.

Independent of edgekiln's TFLite writer on purpose: the report must judge any converter's file.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as s

_TYPES = {"float32": s.TensorType.FLOAT32, "int8": s.TensorType.INT8, "int32": s.TensorType.INT32,
          "uint8": s.TensorType.UINT8}


class TinyTflite:
    """Tensors and ops appended in order; `finish()` returns the file bytes."""

    def __init__(self) -> None:
        self.model = s.ModelT()
        self.model.version = 3
        self.model.buffers = [s.BufferT()]
        self.model.operatorCodes = []
        self.graph = s.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str = "int8", data: np.ndarray | None = None,
               signature: tuple[int, ...] | None = None, scales: int = 1) -> int:
        t = s.TensorT()
        t.name, t.shape, t.type = name, list(shape), _TYPES[dtype]
        if signature is not None:
            t.shapeSignature = list(signature)
        t.buffer = 0
        if data is not None:
            buffer = s.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.model.buffers.append(buffer)
            t.buffer = len(self.model.buffers) - 1
        if dtype in ("int8", "uint8"):
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [0.05] * scales, [0] * scales
            t.quantization = q
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def weight(self, name: str, shape: tuple[int, ...], dtype: str = "int8") -> int:
        return self.tensor(name, shape, dtype, data=np.ones(shape, dtype=dtype))

    def op(self, name: str, inputs: list[int], outputs: list[int], version: int = 1,
           options: tuple[str, Any] | None = None) -> None:
        code = s.OperatorCodeT()
        builtin, _, custom = name.partition(":")  # "CUSTOM:edgetpu-custom-op" names a custom op
        code.builtinCode = getattr(s.BuiltinOperator, builtin)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
        if custom:
            code.customCode = custom
        code.version = version
        self.model.operatorCodes.append(code)
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = len(self.model.operatorCodes) - 1, inputs, outputs
        if options is not None:
            op.builtinOptionsType = getattr(s.BuiltinOptions, options[0])
            op.builtinOptions = options[1]
        self.graph.operators.append(op)

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        self.graph.inputs, self.graph.outputs = inputs, outputs
        self.model.subgraphs = [self.graph]
        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def conv_options(dilation: tuple[int, int] = (1, 1)) -> tuple[str, Any]:
    o = s.Conv2DOptionsT()
    o.padding, o.strideW, o.strideH = s.Padding.SAME, 1, 1
    o.dilationHFactor, o.dilationWFactor = dilation
    return "Conv2DOptions", o


def small_cnn(softmax_shape: tuple[int, ...] = (1, 10), float_io: bool = True, middle: str | None = None,
              conv_version: int = 3, batch: int = 1, dynamic_batch: bool = False) -> bytes:
    """[QUANTIZE] CONV_2D 3x3 8->8 on 8x8, [middle op], CONV_2D, MEAN(x,y), FULLY_CONNECTED 8->10,
    RESHAPE to `softmax_shape`, SOFTMAX, [DEQUANTIZE]."""
    b = TinyTflite()
    sig = (-1, 8, 8, 8) if dynamic_batch else None
    x = b.tensor("input", (batch, 8, 8, 8), "float32" if float_io else "int8", signature=sig)
    inputs = [x]
    if float_io:
        q = b.tensor("input_q", (batch, 8, 8, 8), signature=sig)
        b.op("QUANTIZE", [x], [q], version=2)
        x = q
    h = b.tensor("conv1", (batch, 8, 8, 8), signature=sig)
    b.op("CONV_2D", [x, b.weight("w1", (8, 3, 3, 8)), b.weight("b1", (8,), "int32")], [h], conv_version,
         conv_options())
    if middle is not None:
        m = b.tensor(f"{middle.lower()}_out", (batch, 8, 8, 8), signature=sig)
        if middle == "FLOAT_ADD":
            hf = b.tensor("conv1_float", (batch, 8, 8, 8), "float32")
            b.op("DEQUANTIZE", [h], [hf], version=2)
            mf = b.tensor("add_float", (batch, 8, 8, 8), "float32")
            b.op("ADD", [hf, hf], [mf])
            b.op("QUANTIZE", [mf], [m], version=2)
        else:
            b.op(middle, [h], [m])
        h = m
    h2 = b.tensor("conv2", (batch, 8, 8, 8), signature=sig)
    b.op("CONV_2D", [h, b.weight("w2", (8, 3, 3, 8)), b.weight("b2", (8,), "int32")], [h2], conv_version,
         conv_options())
    pooled = b.tensor("pooled", (batch, 8))
    mean = s.ReducerOptionsT()
    b.op("MEAN", [h2, b.tensor("axes", (2,), "int32", data=np.array([1, 2], np.int32))], [pooled], 2,
         ("ReducerOptions", mean))
    logits = b.tensor("logits", (batch, 10))
    b.op("FULLY_CONNECTED", [pooled, b.weight("fc_w", (10, 8)), b.weight("fc_b", (10,), "int32")], [logits], 4,
         ("FullyConnectedOptions", s.FullyConnectedOptionsT()))
    shaped = b.tensor("shaped", softmax_shape)
    b.op("RESHAPE", [logits, b.tensor("shape", (len(softmax_shape),), "int32",
                                      data=np.array(softmax_shape, np.int32))], [shaped])
    probs = b.tensor("probs", softmax_shape)
    b.op("SOFTMAX", [shaped], [probs], 2, ("SoftmaxOptions", s.SoftmaxOptionsT()))
    outputs = [probs]
    if float_io:
        out = b.tensor("probs_float", softmax_shape, "float32")
        b.op("DEQUANTIZE", [probs], [out], version=2)
        outputs = [out]
    return b.finish(inputs, outputs)
