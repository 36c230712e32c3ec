"""The blob loader refuses every malformed blob with a clean error (ek_run exit status 3 and
a message saying what is wrong), never a crash: truncation, bad magic / version / checksum,
and, with the CRC re-sealed so the deeper checks run, corrupted counts, offsets, ids, op
codes and attribute values."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.blob_tools import BlobView
from tests.runtime_arm.harness import host_runner, run_blob

A = op_codes.ATTR


@pytest.fixture(scope="module")
def conv_case():
    program, feeds, _ = cases.conv(np.random.default_rng(0), c=4, o=6, hw=(6, 6), k=(3, 3), stride=(1, 1),
                                   pads=(1, 1, 1, 1), bits=4)
    return program, feeds, write_blob(program)


def _refused(program, feeds, blob: bytes, message: str) -> None:
    _, proc = run_blob(blob, program, feeds, host_runner())
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert message in proc.stderr, proc.stderr


def test_the_unmodified_blob_runs(conv_case):
    program, feeds, blob = conv_case
    _, proc = run_blob(blob, program, feeds, host_runner())
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("length", [0, 5, 31, 100, 191, -1, -64])
def test_truncated(conv_case, length):
    program, feeds, blob = conv_case
    _refused(program, feeds, blob[:length], "truncated" if length >= 32 or length < 0 else "shorter than")


def test_bad_magic_version_checksum_trailing(conv_case):
    program, feeds, blob = conv_case
    _refused(program, feeds, b"\x7fELF" + blob[4:], "not an edgekiln model blob")
    _refused(program, feeds, BlobView(blob).put(8, "<I", 1).sealed(), "format version 1; this runtime reads version 3")
    flipped = bytearray(blob)
    flipped[-70] ^= 0x10  # a constant byte
    _refused(program, feeds, bytes(flipped), "checksum mismatch")
    _refused(program, feeds, blob + b"\0" * 8, "trailing bytes")


def test_corrupt_tables(conv_case):
    program, feeds, blob = conv_case
    view = lambda: BlobView(blob)
    v = view()
    _refused(program, feeds, v.put(32, "<I", v.n_tensors + 1).sealed(), "tensor table is")
    v = view()
    _refused(program, feeds, v.put(64 + 16 * 7, "<Q", 10**12).sealed(), "section constants")
    v = view()
    strings_end = sum(v.section(6)) - 1
    _refused(program, feeds, v.put(strings_end, "<B", 65).sealed(), "does not end with a NUL byte")
    v = view()
    _refused(program, feeds, v.put(v.tensor(0), "<B", 99).sealed(), "unknown dtype 99")
    v = view()
    _refused(program, feeds, v.put(v.tensor(0) + 1, "<B", 7).sealed(), "rank 7 above 6")
    v = view()
    weight = next(i for i in range(v.n_tensors) if struct.unpack_from("<B", v.data, v.tensor(i) + 3)[0])
    _refused(program, feeds, v.put(v.tensor(weight) + 64, "<Q", 10**6).sealed(), "shape and dtype need")
    v = view()
    _refused(program, feeds, v.put(v.tensor(weight) + 56, "<Q", 1 << 30).sealed(), "outside the")
    v = view()
    _refused(program, feeds, v.put(v.call(0), "<H", 999).sealed(), "op code 999 is not known")
    v = view()
    _refused(program, feeds, v.put(v.call_operand(0, 1), "<i", 1000).sealed(), "operand 1 is tensor id 1000")
    v = view()
    _refused(program, feeds, v.put(v.call_operand(0, 6), "<i", weight).sealed(), "which is a constant")  # the output: 6 inputs


def test_corrupt_operands_fail_the_kernel_checks(conv_case):
    program, feeds, blob = conv_case
    v = BlobView(blob)
    call = v.find_call("QCONV2D")
    _refused(program, feeds, v.put(v.call_attr_value(call, A["STRIDES"]), "<q", 2).sealed(),
             "the convolution gives [1, 6, 3, 6]")
    v = BlobView(blob)
    _refused(program, feeds, v.put(v.call_attr_value(call, A["INPUT_ZP"]), "<q", 300).sealed(), "outside [-128, 127]")
    v = BlobView(blob)
    _refused(program, feeds, v.put(v.call_operand(call, 2), "<i", struct.unpack_from("<i", v.data, v.call_operand(call, 3))[0])
             .put(v.call_operand(call, 4), "<i", struct.unpack_from("<i", v.data, v.call_operand(call, 0))[0]).sealed(),
             "shift")
    v = BlobView(blob)
    shifts = struct.unpack_from("<i", v.data, v.call_operand(call, 4))[0]
    const_base = v.section(op_codes.SECTION["CONSTANTS"])[0]
    offset = struct.unpack_from("<Q", v.data, v.tensor(shifts) + 56)[0]
    _refused(program, feeds, v.put(const_base + offset, "<b", 40).sealed(), "31 + shift outside [1, 62]")  # int8 shifts


def test_wrong_inputs_are_usage_errors(conv_case):
    program, feeds, blob = conv_case
    short = {"x": feeds["x"].reshape(-1)[:-1]}
    _, proc = run_blob(blob, program, short, host_runner())
    assert proc.returncode == 2 and "the model takes" in proc.stderr
