"""Blob format 2's weight-kernel operands (BLOB_FORMAT.md, "Weight-kernel operands"), bit-exact:

- the input zero point folded into the bias at compile time (int32, or int64 when bias − zp·rowsum
  leaves int32; int64 Q16 constants for per-group weights), no row-sum operand;
- int8 shifts, group ratios as uint16 `ratio − 1` (int32 when a ratio is 0);
- float outputs: QConv2D / QDepthwiseConv2D / QFullyConnected with a float32 output_scale,
  y = float32(acc)·scale, on the int8 GEMM (no weight dequantized at run time).

Each Program runs in the C runtime (host, and qemu cortex-a53 for the NEON paths) against the
integer reference interpreter, which computes the spec's formulas independently of the blob.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.reference.interpreter import run_program
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.blob_tools import BlobView
from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_bit_exact,
    host_runner,
    one_call,
    qemu,
    run_blob,
)
from tests.runtime_arm.test_gemm_kernels import needs_qemu

DT_NAMES = {code: name.lower() for name, code in op_codes.DT.items()}


def operand_dtypes(blob: bytes, op: str) -> list[str | None]:
    """The dtype of each input operand of the first `op` call (None: absent)."""
    v = BlobView(blob)
    call = v.find_call(op)
    n_in = struct.unpack_from("<B", v.data, v.call(call) + 2)[0]
    ids = [struct.unpack_from("<i", v.data, v.call_operand(call, k))[0] for k in range(n_in)]
    return [None if i < 0 else DT_NAMES[struct.unpack_from("<B", v.data, v.tensor(i))[0]] for i in ids]


@pytest.mark.parametrize("isa", ["c", "auto"])
@pytest.mark.parametrize("op", ["QConv2D", "QDepthwiseConv2D", "QFullyConnected"])
def test_float_output_is_the_int8_gemm_times_the_scale(op, isa):
    program, feeds, expected = cases.weight_float_output(np.random.default_rng(11), op)
    # independent of the reference kernel: float32(acc)·scale from int64 numpy for the FC case
    if op == "QFullyConnected":
        x, w, bias, scale = (program.constants.get(n, feeds.get(n)) for n in program.calls[0].inputs)
        acc = (x.astype(np.int64) + 7) @ w.astype(np.int64).T + bias
        np.testing.assert_array_equal(expected["y0"], acc.astype(np.float32) * scale)
    blob = write_blob(program)
    code = "QDEPTHWISE_CONV2D" if op == "QDepthwiseConv2D" else "QCONV2D" if op == "QConv2D" else "QFULLY_CONNECTED"
    assert operand_dtypes(blob, code)[2:] == ["int32", "float32", None, None]
    got, proc = run_blob(blob, program, feeds, host_runner(), args=("--isa", isa))
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(got, expected)


@needs_qemu
def test_float_output_under_qemu_neon():
    program, feeds, expected = cases.weight_float_output(np.random.default_rng(12), "QConv2D")
    got, proc = run_blob(write_blob(program), program, feeds, aarch64_runner(), qemu("cortex-a53"))
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(got, expected)


def test_gemm_calls_carry_a_folded_int32_bias_and_int8_shifts():
    program, feeds, expected = cases.conv(np.random.default_rng(3), c=4, o=6, k=(3, 3), hw=(7, 8))
    blob = write_blob(program)
    assert operand_dtypes(blob, "QCONV2D") == ["int8", "int8", "int32", "int32", "int8", None]
    x_zp = program.calls[0].attrs["input_zero_point"]
    w = program.constants["w"].reshape(6, -1).astype(np.int64)
    folded = program.constants["bias"] - x_zp * w.sum(axis=1)
    v = BlobView(blob)
    call = v.find_call("QCONV2D")
    bias_id = struct.unpack_from("<i", v.data, v.call_operand(call, 2))[0]
    offset = v.section(op_codes.SECTION["CONSTANTS"])[0] + struct.unpack_from("<Q", v.data, v.tensor(bias_id) + 56)[0]
    np.testing.assert_array_equal(np.frombuffer(v.data, np.int32, 6, offset), folded)
    got, proc = run_blob(blob, program, feeds, host_runner())
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(got, expected)


def test_a_fold_that_leaves_int32_gets_an_int64_bias():
    rng = np.random.default_rng(4)
    k, n = 300, 5
    w = np.full((n, k), 127, np.int8)
    w[1] = -127
    mult, shift = cases.multipliers(rng, n, k)
    bias = np.array([2**31 - 100, -(2**31) + 100, 0, 7, -7], np.int32)  # ± zp·rowsum pushes rows 0, 1 out of int32
    program, feeds, expected = one_call(
        "QFullyConnected", [("x", cases.int8(rng, (3, k)), False), ("w", w, True), ("bias", bias, True),
                            ("mult", mult, True), ("shift", shift, True)],
        {"input_zero_point": -128, "output_zero_point": 0, "act_min": -128, "act_max": 127})
    blob = write_blob(program)
    assert operand_dtypes(blob, "QFULLY_CONNECTED")[2] == "int64"
    got, proc = run_blob(blob, program, feeds, host_runner())
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(got, expected)
    # the loader bounds an int64 bias (|b| <= 2^50) so that acc + bias cannot overflow: a corrupted one is refused
    view = BlobView(blob)
    call = view.find_call("QFULLY_CONNECTED")
    entry = view.tensor(struct.unpack_from("<i", view.data, view.call_operand(call, 2))[0])
    data = view.section(op_codes.SECTION["CONSTANTS"])[0] + struct.unpack_from("<Q", view.data, entry + 56)[0]
    _, proc = run_blob(view.put(data, "<q", 2**62).sealed(), program, feeds, host_runner())
    assert proc.returncode == 3 and "folded bias[0] out of range" in proc.stderr, proc.stderr


@pytest.mark.parametrize("zero_ratio", [False, True])
def test_group_ratios_are_uint16_unless_one_is_zero(zero_ratio):
    program, feeds, _ = cases.conv(np.random.default_rng(5), c=8, o=6, k=(1, 1), hw=(5, 5), bits=4, group_size=4)
    if zero_ratio:  # a group whose scale is below 2^-17 of the row's largest: its products count 0
        program.constants["ratio"][2, 1] = 0
    expected = run_program(program, feeds)
    blob = write_blob(program)
    dtypes = operand_dtypes(blob, "QCONV2D")
    assert dtypes[2] == "int64" and dtypes[4] == "int8" and dtypes[5] == ("int32" if zero_ratio else "uint16")
    got, proc = run_blob(blob, program, feeds, host_runner())
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(got, expected)
