"""Read a .tflite file back through the schema (object API), and small questions about it.

`read_tflite(data) -> ModelT` is the one entry point the EdgeTPU report and the tests use.
`buffer_data_offsets` answers where each buffer's bytes start in the file (the writer
promises 16-byte alignment, so a runtime may map weights in place).
"""

from __future__ import annotations

from typing import Any

from edgekiln.backends.edgetpu.tflite_schema import FILE_IDENTIFIER, schema
from edgekiln.errors import ArtifactError


def read_tflite(data: bytes) -> Any:
    """The schema's `ModelT` for the bytes of a .tflite file."""
    fb = schema()
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ArtifactError("not a TFLite flatbuffer (the file identifier at bytes 4..8 is not 'TFL3')")
    return fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))


def buffer_data_offsets(data: bytes) -> list[int | None]:
    """File offset of each buffer's first data byte (None for an empty buffer)."""
    fb = schema()
    model = fb.Model.GetRootAsModel(bytes(data), 0)
    offsets: list[int | None] = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        field = buffer._tab.Offset(4)  # vtable slot of `data` (the first field)
        if not field or buffer.DataLength() == 0:
            offsets.append(None)
        else:
            offsets.append(buffer._tab.Vector(field))
    return offsets


def builtin_op_names(model: Any) -> list[str]:
    """The builtin op name of every operator of subgraph 0, in order (for reports and tests)."""
    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    codes = model.operatorCodes
    return [names[max(codes[op.opcodeIndex].builtinCode, codes[op.opcodeIndex].deprecatedBuiltinCode)]
            for op in model.subgraphs[0].operators]
