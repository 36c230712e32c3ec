"""`write_tflite(program) -> bytes`: an int8 Program as a fully int8, EdgeTPU-ready .tflite file.

The file: one subgraph, static shapes with batch 1, NHWC activations, int8 everywhere except
int32 biases; per-channel weights (`quantizedDimension` 0 for conv / fully-connected, 3 for
depthwise); no TRANSPOSE (layouts are converted at compile time, `tflite_layout.py`) and no
DEQUANTIZE inside.  By default the graph input and output tensors are int8 (named after the
Program's float input / output: quantize with their parameters before, dequantize after);
`float_io=True` adds a QUANTIZE after each float input and a DEQUANTIZE before each output.
How each kernel maps to a builtin, and where TFLite's arithmetic differs from the integer
reference, is in `tflite_program_converter.py`.
"""

from __future__ import annotations

from edgekiln.backends.edgetpu.tflite_program_converter import (
    ProgramConverter,
    TfliteConversion,
)
from edgekiln.backends.edgetpu.tflite_reader import read_tflite
from edgekiln.compiler.program import Program

__all__ = ["convert_program", "read_tflite", "write_tflite"]


def convert_program(program: Program, *, float_io: bool = False) -> TfliteConversion:
    """The .tflite bytes plus where each Program tensor went (for per-op verification)."""
    return ProgramConverter(program, float_io=float_io).convert()


def write_tflite(program: Program, *, float_io: bool = False) -> bytes:
    """The .tflite file for an int8 Program (UnsupportedOpError naming the call it cannot write)."""
    return convert_program(program, float_io=float_io).data
