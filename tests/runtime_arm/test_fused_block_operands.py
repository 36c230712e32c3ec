"""Blob format 3's QInvertedResidual operands (BLOB_FORMAT.md, "How Program calls become blob
calls"): 13 operands, x then per stage (expand, depthwise, project) weight, bias, multiplier,
shift; the expand and project biases folded with the stage's input zero point at compile time
(bias − zp·rowsum: int32, int64 only where a value leaves int32), the depthwise bias plain, every
shift int8, no row-sum operands.

The folded constants are checked against numpy, the outputs bit-exactly against the integer
reference interpreter (which runs the Program's unfolded call as its three kernels), on the host
(portable and SIMD paths) and under qemu cortex-a53 (NEON); the loader refuses corrupted
operands and attributes with a message naming the call.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.reference.interpreter import run_program
from tests.backends.arm_cpu.test_fused_block import fused_block
from tests.runtime_arm.blob_tools import BlobView
from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_bit_exact,
    host_runner,
    qemu,
    run_blob,
)
from tests.runtime_arm.test_compact_operands import operand_dtypes
from tests.runtime_arm.test_gemm_kernels import needs_qemu

CALL = "call 'qinvertedresidual' (QInvertedResidual)"
STAGES = ("e", "d", "p")  # fused_block's constant prefixes: expand, depthwise, project


def _block(seed: int = 7):
    """A 3x3 block with padding on every side and a non-zero input zero point at every stage."""
    program, feeds, expected = fused_block(np.random.default_rng(seed), cin=6, ce=20, co=9, hw=(9, 11),
                                           pads=(1, 1, 1, 1))
    parts = program.calls[0].attrs["parts"]
    assert all(part["attrs"]["input_zero_point"] != 0 for part in parts), "the fold must be exercised"
    return program, feeds, expected


def _constant(v: BlobView, call: int, operand: int, dtype: str) -> np.ndarray:
    tensor = struct.unpack_from("<i", v.data, v.call_operand(call, operand))[0]
    offset, nbytes = struct.unpack_from("<QQ", v.data, v.tensor(tensor) + 56)
    start = v.section(op_codes.SECTION["CONSTANTS"])[0] + offset
    return np.frombuffer(bytes(v.data[start:start + nbytes]), dtype)


def _folded(program, stage: int) -> np.ndarray:
    """bias − zp·rowsum of the expand (0) or project (2) stage, from the Program in numpy."""
    prefix = STAGES[stage]
    zp = program.calls[0].attrs["parts"][stage]["attrs"]["input_zero_point"]
    w = program.constants[f"{prefix}_w"].astype(np.int64)
    return program.constants[f"{prefix}_b"].astype(np.int64) - zp * w.reshape(w.shape[0], -1).sum(axis=1)


def test_the_call_has_13_operands_folded_biases_and_int8_shifts():
    program, feeds, expected = _block()
    blob = write_blob(program)
    per_stage = ["int8", "int32", "int32", "int8"]  # weight, bias, multiplier, shift
    assert operand_dtypes(blob, "QINVERTED_RESIDUAL") == ["int8", *per_stage * 3]
    v = BlobView(blob)
    call = v.find_call("QINVERTED_RESIDUAL")
    np.testing.assert_array_equal(_constant(v, call, 2, np.int32), _folded(program, 0))
    np.testing.assert_array_equal(_constant(v, call, 6, np.int32), program.constants["d_b"])  # plain
    np.testing.assert_array_equal(_constant(v, call, 10, np.int32), _folded(program, 2))
    for operand, prefix in zip((4, 8, 12), STAGES):
        np.testing.assert_array_equal(_constant(v, call, operand, np.int8), program.constants[f"{prefix}_s"])
    for isa in ("c", "auto"):
        got, proc = run_blob(blob, program, feeds, host_runner(), args=("--isa", isa, "--threads", "2"))
        assert proc.returncode == 0, proc.stderr
        assert_bit_exact(got, expected)


def _wide_fold_block():
    """The block with expand and project channel 0 pushed out of int32 by the fold: bias near
    ±2^31 and zp·rowsum of the same sign (the SIMD epilogues cannot take it: scalar int64)."""
    program, feeds, _ = _block(seed=8)
    parts = program.calls[0].attrs["parts"]
    for stage, sign in ((0, 1), (2, -1)):
        prefix, zp = STAGES[stage], parts[stage]["attrs"]["input_zero_point"]
        program.constants[f"{prefix}_w"][0] = -127 * sign * np.sign(zp)  # −zp·rowsum has the bias's sign
        program.constants[f"{prefix}_b"][0] = sign * (2**31 - 100)
        assert not -(2**31) <= _folded(program, stage)[0] < 2**31
    return program, feeds, run_program(program, feeds)


def test_a_fold_that_leaves_int32_gets_an_int64_bias():
    program, feeds, expected = _wide_fold_block()
    blob = write_blob(program)
    dtypes = operand_dtypes(blob, "QINVERTED_RESIDUAL")
    assert (dtypes[2], dtypes[6], dtypes[10]) == ("int64", "int32", "int64")
    v = BlobView(blob)
    call = v.find_call("QINVERTED_RESIDUAL")
    np.testing.assert_array_equal(_constant(v, call, 2, np.int64), _folded(program, 0))
    for isa in ("c", "auto"):
        got, proc = run_blob(blob, program, feeds, host_runner(), args=("--isa", isa))
        assert proc.returncode == 0, proc.stderr
        assert_bit_exact(got, expected)


@needs_qemu
def test_the_folded_block_under_qemu_cortex_a53():
    runner = aarch64_runner()
    for program, feeds, expected in (_block(), _wide_fold_block()):
        got, proc = run_blob(write_blob(program), program, feeds, runner, qemu("cortex-a53"))
        assert proc.returncode == 0, proc.stderr
        assert_bit_exact(got, expected)


def _corrupt_shift(v: BlobView, call: int) -> None:
    tensor = struct.unpack_from("<i", v.data, v.call_operand(call, 8))[0]  # the depthwise shift
    offset = struct.unpack_from("<Q", v.data, v.tensor(tensor) + 56)[0]
    v.put(v.section(op_codes.SECTION["CONSTANTS"])[0] + offset + 3, "<b", 32)


@pytest.mark.parametrize("corrupt,message", [
    (_corrupt_shift, "shift[3] = 32: 31 + shift outside [1, 62]"),
    (lambda v, call: v.put(v.call_attr_value(call, op_codes.ATTR["ACT_MIN"], 1), "<q", 127),
     "stage 1: act_min 127 > act_max"),
    (lambda v, call: v.put(v.call_attr_value(call, op_codes.ATTR["OUTPUT_ZP"], 2), "<q", 128),
     "value 128 outside [-128, 127]"),
])
def test_the_loader_refuses_a_corrupted_block(corrupt, message):
    program, feeds, _ = _block()
    v = BlobView(write_blob(program))
    corrupt(v, v.find_call("QINVERTED_RESIDUAL"))
    _, proc = run_blob(v.sealed(), program, feeds, host_runner())
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert CALL in proc.stderr and message in proc.stderr, proc.stderr
