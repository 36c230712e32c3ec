"""Assemble one TFLite model (one subgraph) with the schema's object API and serialize it.

What the file looks like (schema.fbs, version 3):
* buffer 0 is the empty sentinel; every constant tensor has its own buffer, whose bytes
  are little-endian, C order, and start at a file offset that is a multiple of
  `BUFFER_ALIGNMENT` (16: what SIMD kernels and the EdgeTPU compiler's memory mapping want);
  activations point at buffer 0;
* each operator code is written with both `builtinCode` and `deprecatedBuiltinCode`
  (min(code, 127)), as the schema asks, so older readers (edgetpu_compiler) see the op;
* quantization: `scale`, `zeroPoint` (int64) and `quantizedDimension` for per-axis weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekiln.backends.edgetpu.tflite_schema import (
    FILE_IDENTIFIER,
    SCHEMA_VERSION,
    flatbuffers,
    schema,
)

BUFFER_ALIGNMENT = 16
_DEPRECATED_CODE_LIMIT = 127  # BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES

_TENSOR_TYPES = {"float32": "FLOAT32", "int8": "INT8", "int32": "INT32", "int64": "INT64", "uint8": "UINT8"}


@dataclass(frozen=True)
class TensorQuant:
    """Quantization of one TFLite tensor: real = scale·(q − zero_point), per tensor or along `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0


def _aligned_buffer_class(fb: Any) -> type:
    class AlignedBufferT(fb.BufferT):
        """A BufferT whose data vector starts at a BUFFER_ALIGNMENT-aligned file offset."""

        def Pack(self, builder: Any) -> int:
            data = None
            if self.data is not None and len(self.data):
                payload = np.ascontiguousarray(self.data, np.uint8).tobytes()
                builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            return fb.BufferEnd(builder)

    return AlignedBufferT


class TfliteModelBuilder:
    """Tensors, constant buffers, operator codes and operators of one subgraph."""

    def __init__(self) -> None:
        self.fb = schema()
        self._buffer_class = _aligned_buffer_class(self.fb)
        self.buffers: list[Any] = [self._buffer_class()]
        self.tensors: list[Any] = []
        self.tensor_names: dict[str, int] = {}
        self.operators: list[Any] = []
        self.opcodes: list[Any] = []
        self._opcode_index: dict[tuple[str, int], int] = {}

    # -- tensors ----------------------------------------------------------------------
    def tensor(self, name: str, shape: tuple[int, ...], dtype: str, quant: TensorQuant | None = None,
               data: np.ndarray | None = None) -> int:
        """Add a tensor (a constant when `data` is given); returns its index.  Names are made unique."""
        fb = self.fb
        t = fb.TensorT()
        t.name = self._unique(name)
        t.shape = [int(d) for d in shape]
        t.type = getattr(fb.TensorType, _TENSOR_TYPES[dtype])
        t.buffer = 0
        if data is not None:
            array = np.asarray(data, dtype=np.dtype(dtype).newbyteorder("<"))
            array = np.ascontiguousarray(array).reshape(array.shape)  # ascontiguousarray makes 0-d arrays 1-d
            if tuple(array.shape) != tuple(t.shape):
                raise ValueError(f"constant {name!r}: data shape {array.shape} != tensor shape {tuple(t.shape)}")
            buffer = self._buffer_class()
            buffer.data = np.frombuffer(array.tobytes(), np.uint8)
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            q = fb.QuantizationParametersT()
            q.scale = [float(np.float32(s)) for s in quant.scale]
            q.zeroPoint = [int(z) for z in quant.zero_point]
            q.quantizedDimension = int(quant.axis)
            t.quantization = q
        self.tensors.append(t)
        self.tensor_names[t.name] = len(self.tensors) - 1
        return len(self.tensors) - 1

    def _unique(self, name: str) -> str:
        if name not in self.tensor_names:
            return name
        n = 1
        while f"{name}_{n}" in self.tensor_names:
            n += 1
        return f"{name}_{n}"

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(self.tensors[index].shape)

    def quant(self, index: int) -> TensorQuant | None:
        q = self.tensors[index].quantization
        if q is None or q.scale is None:
            return None
        return TensorQuant(tuple(float(s) for s in q.scale), tuple(int(z) for z in q.zeroPoint),
                           int(q.quantizedDimension))

    # -- operators --------------------------------------------------------------------
    def operator(self, op: str, version: int, inputs: list[int], outputs: list[int],
                 options: Any = None, options_type: str | None = None) -> int:
        """Append an operator; `options_type` names the BuiltinOptions union member ("Conv2DOptions")."""
        fb = self.fb
        o = fb.OperatorT()
        o.opcodeIndex = self._opcode(op, version)
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        if options is not None:
            o.builtinOptionsType = getattr(fb.BuiltinOptions, options_type)
            o.builtinOptions = options
        self.operators.append(o)
        return len(self.operators) - 1

    def _opcode(self, op: str, version: int) -> int:
        key = (op, version)
        if key not in self._opcode_index:
            code = self.fb.OperatorCodeT()
            code.builtinCode = getattr(self.fb.BuiltinOperator, op)
            code.deprecatedBuiltinCode = min(code.builtinCode, _DEPRECATED_CODE_LIMIT)
            code.version = version
            self.opcodes.append(code)
            self._opcode_index[key] = len(self.opcodes) - 1
        return self._opcode_index[key]

    # -- file -------------------------------------------------------------------------
    def finish(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        fb = self.fb
        subgraph = fb.SubGraphT()
        subgraph.tensors, subgraph.operators = self.tensors, self.operators
        subgraph.inputs, subgraph.outputs = list(inputs), list(outputs)
        subgraph.name = "main"
        model = fb.ModelT()
        model.version = SCHEMA_VERSION
        model.description = description
        model.operatorCodes = self.opcodes
        model.subgraphs = [subgraph]
        model.buffers = self.buffers
        builder = flatbuffers().Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())
