"""The edgetpu backend: an int8 Program becomes `model.tflite`, run by the `litert` runner.

    check_options(quantization)             before any work: EdgeTPU compiles are int8 only
    lower(program, target, options) -> {"model.tflite": ...}     options: {"float_io": bool}

The Coral Edge TPU runs fully 8-bit quantized TFLite models only, so a float compile, a
low-bit one (int4, ternary, weight-only w4a16) or one that keeps layers in float is refused
with the flags that fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgekiln.backends.edgetpu.tflite_writer import write_tflite
from edgekiln.compiler.program import Program
from edgekiln.errors import OptionError

TFLITE_FILE = "model.tflite"


def check_options(quantization: Any, target_name: str = "edgetpu") -> None:
    """OptionError unless `quantization` asks for plain int8 (QuantOptions or None)."""
    if quantization is None:
        raise OptionError(f"target {target_name} runs fully int8 models only: add --quant int8 --calib DATA "
                          "(or quant='int8', calib=... in the Python API)")
    if quantization.quant != "int8" or quantization.weights:
        asked = quantization.quant if quantization.quant != "int8" else f"--weights {list(quantization.weights)}"
        raise OptionError(f"target {target_name} runs int8 only, not {asked}: compile with --quant int8 and no "
                          "low-bit --weights rules")
    if quantization.keep_float:
        raise OptionError(f"target {target_name} needs every layer quantized; drop --keep-float "
                          f"{list(quantization.keep_float)}")


def lower(program: Program, target: Any = None, options: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The backend files for `program`: the fully int8 .tflite."""
    options = options or {}
    return {TFLITE_FILE: write_tflite(program, float_io=bool(options.get("float_io", False)))}
