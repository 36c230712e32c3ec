"""The TFLite flatbuffer schema, imported lazily from the `ai-edge-litert` wheel (the `litert` extra).

`ai_edge_litert.schema_py_generated` is the flatc-generated Python module for
tensorflow/compiler/mlir/lite/schema/schema.fbs: reader classes (`Model`) and the object API
(`ModelT`, `TensorT`, ... with `Pack` / `InitFromBuf`).  edgekiln writes and reads .tflite
files through it only; TensorFlow is never imported.
"""

from __future__ import annotations

from types import ModuleType

from edgekiln.optional import require

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3


def schema() -> ModuleType:
    """The generated schema module (MissingExtraError naming the `litert` extra when absent)."""
    return require("ai_edge_litert.schema_py_generated", "litert", "writing or reading a .tflite model")


def flatbuffers() -> ModuleType:
    return require("flatbuffers", "litert", "writing a .tflite model")
