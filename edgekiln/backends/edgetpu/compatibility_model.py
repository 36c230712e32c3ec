"""A read-only view of a `.tflite` file (ours or any converter's) for the Edge TPU report.

The file is a TFLite flatbuffer (`schema.fbs`); it is read with the schema module that
`ai-edge-litert` ships (`schema_py_generated`, object API), so no TensorFlow is needed.  Only
subgraph 0 is analysed: the Edge TPU compiler maps one subgraph, and converters put the
model's graph there.  Operators are listed in the file's order, which TFLite requires to be an
execution (topological) order.

Per tensor the view keeps what the Edge TPU rules look at: the static shape and the shape
signature (-1 marks a dynamic dim), the element type, whether it is a constant (it has a
non-empty buffer) and its byte size, and how many quantization scales it carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekiln.errors import EdgekilnError
from edgekiln.optional import require


class TfliteReadError(EdgekilnError):
    """The file is not a TFLite flatbuffer this reader understands."""


def schema() -> Any:
    """The flatbuffer schema module of ai-edge-litert (lazy: the extra is optional)."""
    return require("ai_edge_litert.schema_py_generated", "litert", "Reading .tflite files")


# Element sizes of the TFLite tensor types the report meets; others count as 4 bytes.
_TYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
               "INT8": 1, "FLOAT64": 8, "UINT32": 4, "UINT16": 2, "INT4": 1, "BFLOAT16": 2}


@dataclass
class TfliteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]  # -1 marks a dynamic dim; equals `shape` for static tensors
    dtype: str                  # TensorType name: "INT8", "FLOAT32", ...
    is_constant: bool
    data: bytes = b""
    scales: int = 0             # number of quantization scales (>1: per-axis)

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return len(self.data) if self.is_constant else self.elements * _TYPE_BYTES.get(self.dtype, 4)

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.signature)

    def values(self) -> np.ndarray | None:
        """The constant's values (int32/int64/float32 only: enough for axes and paddings)."""
        kinds = {"INT32": np.int32, "INT64": np.int64, "FLOAT32": np.float32, "INT8": np.int8, "UINT8": np.uint8}
        if not self.is_constant or self.dtype not in kinds:
            return None
        return np.frombuffer(self.data, dtype=kinds[self.dtype]).reshape(self.shape)


@dataclass
class TfliteOp:
    index: int
    name: str          # BuiltinOperator name ("CONV_2D"), or "CUSTOM:<code>"
    version: int
    inputs: list[TfliteTensor | None]  # None: an omitted optional input (-1)
    outputs: list[TfliteTensor]
    options: Any = None                 # the builtin options object (schema ...OptionsT), if any

    def option(self, attribute: str, default: Any = None) -> Any:
        return getattr(self.options, attribute, default) if self.options is not None else default


@dataclass
class TfliteGraph:
    ops: list[TfliteOp]
    tensors: list[TfliteTensor]
    inputs: list[TfliteTensor]
    outputs: list[TfliteTensor]
    subgraph_count: int = 1
    description: str = ""
    producers: dict[int, int] = field(default_factory=dict)  # tensor index -> op index

    @property
    def file_parameter_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.is_constant)


def _names(enum_class: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def read_tflite_graph(source: bytes | str | Path) -> TfliteGraph:
    """Parse a .tflite file (path or bytes) into a `TfliteGraph` of its first subgraph."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    label = str(source) if isinstance(source, (str, Path)) else "<tflite bytes>"
    # "TFL3" is the file identifier at bytes 4..8 of every TFLite flatbuffer.
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TfliteReadError(f"{label} is not a TFLite flatbuffer (no 'TFL3' identifier); "
                              "pass a .tflite file written by a TFLite converter")
    s = schema()
    try:
        model = s.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:
        raise TfliteReadError(f"{label}: cannot parse the TFLite flatbuffer ({exc})") from exc
    if not model.subgraphs:
        raise TfliteReadError(f"{label} has no subgraph")
    op_names, type_names = _names(s.BuiltinOperator), _names(s.TensorType)
    subgraph = model.subgraphs[0]
    tensors = [_tensor(i, t, model, data, type_names) for i, t in enumerate(subgraph.tensors or [])]
    ops, producers = [], {}
    for index, op in enumerate(subgraph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        # deprecatedBuiltinCode is an int8 that saturates at 127; builtinCode holds the real one.
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            name = f"CUSTOM:{custom}"
        inputs = [tensors[int(i)] if i >= 0 else None for i in (op.inputs if op.inputs is not None else [])]
        outputs = [tensors[int(i)] for i in (op.outputs if op.outputs is not None else [])]
        ops.append(TfliteOp(index, name, max(int(code.version), 1), inputs, outputs, op.builtinOptions))
        for t in outputs:
            producers[t.index] = index
    description = model.description.decode() if isinstance(model.description, bytes) else (model.description or "")
    # The object API hands index vectors over as numpy arrays: test for None, never truthiness.
    inputs = [tensors[int(i)] for i in (subgraph.inputs if subgraph.inputs is not None else [])]
    outputs = [tensors[int(i)] for i in (subgraph.outputs if subgraph.outputs is not None else [])]
    return TfliteGraph(ops=ops, tensors=tensors, inputs=inputs, outputs=outputs,
                       subgraph_count=len(model.subgraphs), description=description, producers=producers)


def _tensor(index: int, t: Any, model: Any, data: bytes, type_names: dict[int, str]) -> TfliteTensor:
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
    signature = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
    buffer = model.buffers[t.buffer] if model.buffers and 0 < t.buffer < len(model.buffers) else None
    raw = b""
    if buffer is not None:
        if buffer.data is not None and len(buffer.data):
            raw = bytes(np.asarray(buffer.data, dtype=np.uint8))
        elif buffer.offset and buffer.size:  # large models keep buffers after the flatbuffer
            raw = data[buffer.offset:buffer.offset + buffer.size]
    name = t.name.decode() if isinstance(t.name, bytes) else (t.name or f"tensor_{index}")
    quant = t.quantization
    scales = len(quant.scale) if quant is not None and quant.scale is not None else 0
    return TfliteTensor(index=index, name=name, shape=shape, signature=signature,
                        dtype=type_names.get(t.type, f"TYPE_{t.type}"), is_constant=bool(raw), data=raw,
                        scales=scales)
