"""The blob writer: codes from ek_ops.h shared with the C side, a deterministic layout, the
header and CRC, low-bit weights packed as Program files pack them, and unsupported ops
refused at compile time with the call named."""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np
import pytest

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.blob_writer import MAGIC, write_blob
from edgekiln.backends.arm_cpu.call_encoding import ENCODERS
from edgekiln.backends.arm_cpu.toolchain import RUNTIME_DIR
from edgekiln.backends.arm_cpu.weight_packing import pack_gemm_rows
from edgekiln.compiler.memory_planner import plan_arena
from edgekiln.compiler.program import KernelCall, Program, TensorSpec, pack_low_bit
from edgekiln.errors import UnsupportedOpError
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.blob_tools import BlobView


def test_every_op_code_has_a_c_kernel_and_the_header_is_parsed_whole():
    table = (RUNTIME_DIR / "src" / "ops_table.c").read_text()
    registered = set(re.findall(r"\{EK_OP_([A-Z0-9_]+),", table))
    assert registered == set(op_codes.OP)
    header = (RUNTIME_DIR / "include" / "ek_ops.h").read_text()
    defines = re.findall(r"^#define EK_[A-Z0-9_]+ -?\d+", header, re.MULTILINE)
    parsed = sum(len(getattr(op_codes, g)) for g in ("BLOB", "SECTION", "DT", "STORE", "PACK", "ATYPE", "ATTR", "OP",
                                                     "FN", "STEP", "REDUCE", "POOL", "SPARSE", "BLOCK", "STATUS")) + 1
    assert parsed == len(defines)
    assert op_codes.BLOB["VERSION"] == 3 and op_codes.MAX_RANK == 6


def test_header_sections_and_crc():
    program, _, _ = cases.conv(np.random.default_rng(0), c=3, o=4, bits=4)
    blob = write_blob(program)
    assert blob[:8] == MAGIC
    version, header, total, crc, flags = struct.unpack_from("<IIQII", blob, 8)
    assert (version, header, total, flags) == (3, 192, len(blob), 0)
    assert crc == zlib.crc32(blob[32:])
    view = BlobView(blob)
    offsets = [o for o, _ in view.sections]
    assert all(o % 64 == 0 for o in offsets) and offsets == sorted(offsets)
    assert (view.n_inputs, view.n_outputs, view.n_calls) == (1, 1, 1)
    arena, scratch = struct.unpack_from("<2Q", blob, 48)
    assert arena == program.arena.arena_bytes and scratch % 64 == 0 and scratch > 0


def test_deterministic_and_stable_through_program_files(tmp_path):
    program, _, _ = cases.conv(np.random.default_rng(1), c=4, o=6, bits=2)
    blob = write_blob(program)
    assert write_blob(program) == blob
    program.save(tmp_path)
    assert write_blob(Program.load(tmp_path)) == blob


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_weights_are_packed_as_program_files_pack_them(bits):
    # a depthwise conv reads its weights per channel: they stay packed as Program files pack them
    program, _, _ = cases.conv(np.random.default_rng(bits), depthwise=True, c=3, k=(3, 3), bits=bits)
    weights = program.constants["w"]
    packed = pack_low_bit(weights, bits)
    blob = write_blob(program)
    assert packed in blob
    assert weights.astype(np.int8).tobytes() not in blob  # not stored unpacked as well
    assert len(packed) == -(-weights.size * bits // 8)


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_gemm_weights_are_packed_k_blocked_for_the_gemm_kernels(bits):
    # a GEMM conv's weights go in the layout the low-bit GEMM kernels read (weight_packing.py)
    program, _, _ = cases.conv(np.random.default_rng(bits), c=3, o=5, k=(3, 3), bits=bits)
    weights = program.constants["w"]
    blob = write_blob(program)
    assert pack_gemm_rows(weights, bits) in blob
    assert weights.astype(np.int8).tobytes() not in blob


def test_unsupported_op_is_refused_with_the_call_named():
    tensors = {"x": TensorSpec("x", "float32", (2, 3), kind="input"), "y": TensorSpec("y", "float32", (2, 3), kind="output")}
    call = KernelCall("my_topk", "TopK", ("x",), ("y",))
    program = Program(tensors, {}, [call], ["x"], ["y"], plan_arena(tensors, [call]))
    with pytest.raises(UnsupportedOpError, match="'my_topk'.*'TopK'.*arm_cpu runtime"):
        write_blob(program)


def test_encoders_cover_the_zoo_and_ppocr_programs():
    # Every op the zoo / PP-OCR programs contain after float and int8 lowering (counted with
    # Program.op_histogram) has an encoder; tests/backends/arm_cpu/test_models.py runs them all.
    needed = {"Add", "AveragePool", "Concat", "Conv", "ConvTranspose", "Dequantize", "Flatten", "FusedConv",
              "FusedGemm", "FusedMatMul", "Gemm", "GlobalAveragePool", "LayerNormalization", "MatMul", "MaxPool", "Mul",
              "QAdd", "QAveragePool", "QConcat", "QConv2D", "QConvTranspose2D", "QDepthwiseConv2D", "QFullyConnected",
              "QGlobalAveragePool", "QLayerNorm", "QLookupTable", "QMatMul", "QMaxPool", "QMul", "QReduceMean",
              "QResizeNearest", "QSoftmax", "Quantize", "ReduceMean", "Relu", "Reshape", "Resize", "Sigmoid", "Slice",
              "Softmax", "Squeeze", "Transpose", "DequantizeWeight", "HardSigmoid", "HardSwish", "Gelu"}
    assert needed <= set(ENCODERS)
