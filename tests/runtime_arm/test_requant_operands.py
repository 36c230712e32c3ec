"""Blob format 3's requantization operands outside the weight kernels, and the one reader of the
requantization attributes (runtime_arm/src/kernels/ek_requant_attrs.h):

- QConvTranspose2D and QAveragePool store their shifts as int8 (31 + shift in [1, 62]) like
  every other kernel: the values are the Program's, the outputs bit-exact with the integer
  reference;
- a call whose clamp is empty (act_min > act_max) is refused at load with a message naming the
  call: QConvTranspose2D read its clamp without that check before the reader was shared.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.blob_tools import BlobView
from tests.runtime_arm.harness import assert_bit_exact, host_runner, run_blob
from tests.runtime_arm.test_compact_operands import operand_dtypes


def _shift_values(blob: bytes, op: str, operand: int) -> np.ndarray:
    v = BlobView(blob)
    tensor = struct.unpack_from("<i", v.data, v.call_operand(v.find_call(op), operand))[0]
    offset, nbytes = struct.unpack_from("<QQ", v.data, v.tensor(tensor) + 56)
    start = v.section(op_codes.SECTION["CONSTANTS"])[0] + offset
    return np.frombuffer(bytes(v.data[start:start + nbytes]), np.int8)


@pytest.mark.parametrize("op,code,operand,shifts", [
    ("QConvTranspose2D", "QCONV_TRANSPOSE2D", 4, "shift"),
    ("QAveragePool", "QAVERAGE_POOL", 2, "shifts"),
])
def test_shifts_are_int8_and_the_outputs_bit_exact(op, code, operand, shifts):
    rng = np.random.default_rng(13)
    if op == "QConvTranspose2D":
        program, feeds, expected = cases.conv_transpose(rng)
    else:
        program, feeds, expected = cases.average_pool(rng, pads=(1, 1, 1, 1))
    blob = write_blob(program)
    assert operand_dtypes(blob, code)[operand] == "int8"
    np.testing.assert_array_equal(_shift_values(blob, code, operand), program.constants[shifts])
    got, proc = run_blob(blob, program, feeds, host_runner())
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(got, expected)


@pytest.mark.parametrize("op", ["QConvTranspose2D", "QConv2D"])
def test_an_empty_clamp_is_refused_naming_the_call(op):
    rng = np.random.default_rng(14)
    program, feeds, _ = cases.conv_transpose(rng) if op == "QConvTranspose2D" else cases.conv(rng)
    program.calls[0].attrs.update(act_min=40, act_max=-3)
    _, proc = run_blob(write_blob(program), program, feeds, host_runner())
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert f"call '{op.lower()}' ({op})" in proc.stderr and "act_min 40 > act_max -3" in proc.stderr, proc.stderr
