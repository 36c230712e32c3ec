"""Run a .tflite model in the LiteRT interpreter with its kernels pinned.

The op resolver is `BUILTIN_REF`: TFLite's reference kernels, no delegate, one thread.  They
are portable C++ with one fixed arithmetic, so a verification gives the same numbers on any
machine.  Measured on the zoo (tflite_verify.py): the reference and the builtin optimized
kernels requantize with two roundings (SaturatingRoundingDoublingHighMul, RoundingDivideByPOT)
and differ from edgekiln's integer reference by at most 1 LSB per op; the default resolver
(`AUTO`: XNNPACK delegate) rounds once, ties up, like edgekiln, and is bit-exact on conv,
depthwise, add, mul and mean, but it picks kernels per ISA and does not take every op.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekiln.optional import require

RESOLVER = "BUILTIN_REF"


def make_interpreter(model: bytes, *, preserve_all_tensors: bool = False, resolver: str = RESOLVER) -> Any:
    """An allocated `ai_edge_litert.interpreter.Interpreter`, on the reference kernels unless `resolver`
    names another `OpResolverType` (AUTO = optimized kernels + XNNPACK, BUILTIN_WITHOUT_DEFAULT_DELEGATES)."""
    litert = require("ai_edge_litert.interpreter", "litert", "running a .tflite model in LiteRT")
    interpreter = litert.Interpreter(
        model_content=bytes(model), num_threads=1,
        experimental_op_resolver_type=getattr(litert.OpResolverType, resolver),
        experimental_preserve_all_tensors=preserve_all_tensors)
    interpreter.allocate_tensors()
    return interpreter


def invoke(interpreter: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Set the inputs by tensor name (already in the file's dtype and layout), run, return outputs by name."""
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(feeds[detail["name"]], detail["dtype"]))
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
