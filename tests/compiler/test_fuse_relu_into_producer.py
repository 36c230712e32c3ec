"""fuse_relu_into_producers: a standalone Relu becomes the clamp of the integer kernel before it (Add, Mul,
ConvTranspose), on a Program of any backend.

The unfused Program is the QDQ graph of a host compile lowered again (compile.py folds every Program it
lowers); the rewrite is then applied here.  Checked against numpy (relu of the
dequantized sum, quantized once at the Relu's parameters), against the unfused Program (within one LSB), and
the cases it must leave alone.  The written forms: tests/backends/edgetpu/ (LiteRT) and
tests/backends/arm_cpu/test_relu_fusion.py (C runtime).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgekiln.backends.reference.interpreter import run_program
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.fuse_relu_into_producer import fuse_relu_into_producers
from edgekiln.compiler.integer_lowering import lower_quantized_graph
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.target import get_target
from tests.support.relu_fusion_graphs import (
    calibration,
    feeds,
    params,
    residual_block,
    transposed_conv_relu,
)


def unfused_program(onnx_model):
    host_passes = dataclasses.replace(get_target("host"), backend="mobile_gpu")  # builds nothing
    result = compile_model(onnx_model, host_passes, check_ops=False, progress=False,
                           quantization=QuantOptions(quant="int8", calib=calibration()))
    return lower_quantized_graph(result.graph)


def kernels(program):
    return [c.op for c in program.calls if c.op not in ("Quantize", "Dequantize")]


@pytest.mark.parametrize("op", ["Add", "Mul"])
def test_relu_after_add_or_mul_is_its_clamp_and_rounds_once(op):
    unfused = unfused_program(residual_block(op=op))
    assert [c.attrs.get("function") for c in unfused.calls if c.op == "QLookupTable"] == ["Relu"]
    notes: list[str] = []
    program = fuse_relu_into_producers(unfused, notes)
    assert not any(c.op == "QLookupTable" for c in program.calls)
    add = next(c for c in program.calls if c.op == f"Q{op}")
    (y,) = add.outputs
    s_y, zp_y = params(program, y)
    assert (add.attrs["act_min"], add.attrs["act_max"]) == (max(-128, zp_y), 127)
    assert any("fused 1 Relu(s) into the kernel before them" in note for note in notes)

    # independent numpy: relu(dequant(a) <op> dequant(b)), quantized once at the Relu's parameters
    values = run_program(dataclasses.replace(program, outputs=[*add.inputs, y]), feeds(9))  # the operands too
    (a_s, a_zp), (b_s, b_zp) = params(program, add.inputs[0]), params(program, add.inputs[1])
    a = (values[add.inputs[0]].astype(np.float64) - a_zp) * a_s
    b = (values[add.inputs[1]].astype(np.float64) - b_zp) * b_s
    real = np.maximum(0.0, a + b if op == "Add" else a * b)
    want = np.clip(np.round(real / s_y) + zp_y, -128, 127)
    assert np.max(np.abs(values[y].astype(np.int64) - want)) <= 1


def test_an_add_whose_sum_is_also_read_elsewhere_keeps_its_relu():
    notes: list[str] = []
    program = fuse_relu_into_producers(unfused_program(residual_block(extra_reader=True)), notes)
    assert [c.attrs.get("function") for c in program.calls if c.op == "QLookupTable"] == ["Relu"]
    assert any("not fused" in note and "read by more than the Relu" in note for note in notes)


def test_a_program_without_the_pair_is_returned_unchanged():
    program = fuse_relu_into_producers(unfused_program(residual_block()))
    assert fuse_relu_into_producers(program) is program  # nothing left to fuse: idempotent


def test_relu_after_a_transposed_conv_becomes_its_clamp():
    unfused = unfused_program(transposed_conv_relu())
    program = fuse_relu_into_producers(unfused)
    assert kernels(program) == ["QConvTranspose2D"] and kernels(unfused) == ["QConvTranspose2D", "QLookupTable"]
    x = feeds(5)
    # the same function, rounded once instead of twice: within an LSB of the unfused Program
    (fused_y,), (unfused_y,) = run_program(program, x).values(), run_program(unfused, x).values()
    s_y, _ = params(program, next(c for c in program.calls if c.op == "QConvTranspose2D").outputs[0])
    lsb = np.abs(fused_y.astype(np.float64) - unfused_y) / s_y
    assert np.max(lsb) <= 1.001 and np.mean(lsb < 0.5) > 0.5
