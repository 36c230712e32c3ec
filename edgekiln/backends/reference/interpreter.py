"""The integer reference: run a Program in numpy, each kernel exactly as `compiler/integer_kernels.py`
specifies it.  This is the definition of a correct output for every backend.

Integer kernels dispatch to `kernels/`; every other call (float programs, float islands, and
the ONNX data movement ops on int8) runs as a one-node ONNX model in
`onnx.reference.ReferenceEvaluator` (`float_ops.py`), built once per call and cached with the
Program.  The arena plan is not simulated: each tensor is its own array, freed after its last
reader, which gives the same values since the plan never overlaps live tensors.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from onnx.reference import ReferenceEvaluator

from edgekiln.backends.reference import float_ops
from edgekiln.backends.reference.kernels import conv, elementwise, fused_block, movement, normalization, pooling
from edgekiln.compiler.program import KernelCall, Program
from edgekiln.errors import ArtifactError

Kernel = Callable[[KernelCall, list[Any]], list[np.ndarray | None]]

KERNELS: dict[str, Kernel] = {
    "QConv2D": conv.conv2d,
    "QDepthwiseConv2D": conv.depthwise_conv2d,
    "QConvTranspose2D": conv.conv_transpose2d,
    "QFullyConnected": conv.fully_connected,
    "QMatMul": conv.matmul,
    "QAdd": elementwise.add,
    "QMul": elementwise.mul,
    "QRequantize": elementwise.requantize_kernel,
    "QLookupTable": elementwise.lookup_table,
    "Quantize": elementwise.quantize_kernel,
    "Dequantize": elementwise.dequantize_kernel,
    "DequantizeWeight": elementwise.dequantize_weight,
    "QAveragePool": pooling.average_pool,
    "QGlobalAveragePool": pooling.global_average_pool,
    "QReduceMean": pooling.reduce_mean,
    "QMaxPool": pooling.max_pool,
    "QSoftmax": normalization.softmax,
    "QLayerNorm": normalization.layer_norm,
    "QConcat": movement.concat,
    "QResizeNearest": movement.resize_nearest,
    "QResizeBilinear": movement.resize_bilinear,
    "QPad": movement.pad,
    "QInvertedResidual": fused_block.inverted_residual,
}

# One evaluator per float call, kept as long as the Program lives (keyed by id: a Program is
# not hashable; the finalizer drops the entry when it is collected).
_EVALUATORS: dict[int, dict[int, ReferenceEvaluator]] = {}


def _evaluators(program: Program) -> dict[int, ReferenceEvaluator]:
    key = id(program)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = {}
        weakref.finalize(program, _EVALUATORS.pop, key, None)
    return _EVALUATORS[key]


def run_program(program: Program, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute `program` on `inputs` (keyed by graph input name); returns the graph outputs by name."""
    values: dict[str, np.ndarray] = dict(program.constants)
    for name in program.inputs:
        values[name] = _checked_input(program, name, inputs)
    last_use = _last_uses(program)
    evaluators = _evaluators(program)
    keep = set(program.outputs) | set(program.constants) | set(program.inputs)
    for index, call in enumerate(program.calls):
        args = [values[name] if name else None for name in call.inputs]
        kernel = KERNELS.get(call.op)
        if kernel is not None:
            results = kernel(call, args)
        else:
            if index not in evaluators:
                evaluators[index] = float_ops.build_evaluator(program, call)
            results = float_ops.run_float_call(evaluators[index], call, args)
        for name, result in zip(call.outputs, results):
            if name:
                values[name] = _checked_output(program, call, name, result)
        for name in call.inputs:
            if name and last_use.get(name) == index and name not in keep:
                del values[name]
    return {name: values[name] for name in program.outputs}


def _checked_input(program: Program, name: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    spec = program.tensors[name]
    if name not in inputs:
        raise ArtifactError(f"input {name!r} is missing (the program takes {', '.join(program.inputs)})")
    array = np.asarray(inputs[name])
    if tuple(array.shape) != spec.shape:
        raise ArtifactError(f"input {name!r} has shape {list(array.shape)}, the program expects {list(spec.shape)}")
    return array.astype(spec.dtype, copy=False)


def _checked_output(program: Program, call: KernelCall, name: str, result: np.ndarray) -> np.ndarray:
    spec = program.tensors[name]
    result = np.asarray(result)
    if tuple(result.shape) != spec.shape:
        raise AssertionError(f"call {call.name!r} ({call.op}) wrote {name!r} with shape {list(result.shape)}, "
                             f"the program says {list(spec.shape)}: a reference kernel bug")
    return result.astype(spec.dtype, copy=False)


def _last_uses(program: Program) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, call in enumerate(program.calls):
        for name in call.inputs:
            if name:
                last[name] = index
    return last
