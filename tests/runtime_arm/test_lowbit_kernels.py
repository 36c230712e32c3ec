"""The int4 / ternary GEMMs (runtime_arm/src/gemm/gemm_lowbit_*.c) and the K-blocked weight
layout the compiler writes for them (backends/arm_cpu/weight_packing.py), bit-exact:

- kernel level (lowbit_driver.c): every low-bit kernel the CPU runs against int32 products of
  the same int8 weights, on every K tail around one and two blocks, edge-sized m and n, random
  shapes and strides, extreme values, operands flush against PROT_NONE pages; natively on the
  host (C, AVX2) and under qemu-aarch64 -cpu cortex-a53 (NEON), cortex-a76 (+dotprod) and max
  (+i8mm).  Then the Python packer's bytes through each kernel against numpy.
- the float GEMM (gemm_f32_*.c: portable, NEON, AVX2+FMA) against numpy within 1e-5.
- program level: QConv2D / QFullyConnected with int4 and ternary weights compiled to a blob
  (weights K-blocked) and run by ek_run, forced onto each ISA path, against the integer
  reference interpreter; the loader refuses a K-blocked tensor of the wrong size.
- model level (slow): two zoo models quantized to int4 and ternary weights, run under qemu on
  the dotprod and i8mm paths, bit-exact against the reference.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.arm_cpu.weight_packing import (
    pack_gemm_rows,
    pack_i8_pairs,
    row_bytes,
    unpack_gemm_rows,
    unpack_i8_pairs,
)
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.blob_tools import BlobView
from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_bit_exact,
    host_runner,
    qemu,
    run_blob,
)
from tests.runtime_arm.test_gemm_kernels import (
    AARCH64_CC,
    AARCH64_FLAGS,
    INCLUDE_DIR,
    X86_64_FLAGS,
    build_driver,
    needs_host_x86,
    needs_qemu,
    run,
)

# qemu CPU model -> the ISA paths whose low-bit kernels must run there
QEMU_PATHS = {"cortex-a53": {"c", "neon"}, "cortex-a76": {"c", "neon", "dotprod"}, "max": {"c", "neon", "dotprod", "i8mm"}}
PRECISIONS = {"int4": 4, "ternary": 2}


@pytest.fixture(scope="module")
def host_driver(tmp_path_factory) -> Path:
    return build_driver("gcc", X86_64_FLAGS, tmp_path_factory.mktemp("lowbit_x86_64"), [], driver="lowbit_driver")


@pytest.fixture(scope="module")
def arm_driver(tmp_path_factory) -> Path:
    return build_driver(AARCH64_CC, AARCH64_FLAGS, tmp_path_factory.mktemp("lowbit_aarch64"), ["-static"],
                        driver="lowbit_driver")


def selftest_results(output: str) -> dict[tuple[str, str], tuple[int, int]]:
    """'neon/int4: 1494 cases, 0 failed' lines -> {(isa, precision): (cases, failed)}."""
    found = re.finditer(r"^([\w-]+)/(\w+): (\d+) cases, (\d+) failed$", output, re.MULTILINE)
    return {(m[1], m[2]): (int(m[3]), int(m[4])) for m in found}


def _expect_all_pass(result: subprocess.CompletedProcess, paths: set[str], arm: bool = False) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    found = selftest_results(result.stdout)
    # on aarch64 also the multiply-free ternary kernel kept for the benchmark, and with i8mm the
    # int8 kernel on pre-paired weights
    expected = {(isa, p) for isa in paths for p in PRECISIONS} | ({("neon-mask", "ternary")} if arm else set())
    expected |= {("i8mm-paired", "int8")} if "i8mm" in paths else set()
    assert set(found) == expected
    assert all(cases > 200 and failed == 0 for cases, failed in found.values()), found


# ---- the layout -------------------------------------------------------------------------------

def test_python_packer_round_trips_and_matches_the_documented_layout():
    rng = np.random.default_rng(0)
    for bits, (lo, hi) in ((4, (-8, 8)), (2, (-1, 2))):
        for shape in [(1, 1), (3, 5), (2, 3, 3, 3), (5, 64), (4, 65), (2, 200)]:
            w = rng.integers(lo, hi, shape).astype(np.int8)
            data = pack_gemm_rows(w, bits)
            assert len(data) == shape[0] * row_bytes(bits, int(np.prod(shape[1:])))
            np.testing.assert_array_equal(unpack_gemm_rows(data, bits, shape), w)
    # int4: byte i of a block = w[i] | w[16 + i] << 4; ternary: fields 2s hold w[16 s + i]
    w4 = np.zeros((1, 32), np.int8)
    w4[0, 0], w4[0, 16], w4[0, 17] = 3, -1, -8
    assert pack_gemm_rows(w4, 4)[:2] == bytes([0xF3, 0x80])
    w2 = np.zeros((1, 64), np.int8)
    w2[0, 0], w2[0, 16], w2[0, 48], w2[0, 33] = 1, -1, 1, -1
    assert pack_gemm_rows(w2, 2)[:2] == bytes([0b01001101, 0b00110000])
    with pytest.raises(ValueError, match="outside the 4-bit range"):
        pack_gemm_rows(np.array([[8]], np.int8), 4)


def test_block_bytes_match_the_c_header():
    header = (INCLUDE_DIR / "ek_gemm.h").read_text()
    assert re.search(r"#define EK_LOWBIT_BLOCK_BYTES 16\b", header)


# ---- kernels on the host ----------------------------------------------------------------------

@needs_host_x86
def test_host_lowbit_kernels_match_int8_products_inside_guard_pages(host_driver):
    has_avx2 = "avx2" in run(["grep", "-o", "avx2", "/proc/cpuinfo"]).stdout
    _expect_all_pass(run([str(host_driver), "selftest", "all"]), {"c", "avx2"} if has_avx2 else {"c"})


def _numpy_cases(bits: int):
    rng = np.random.default_rng(bits)
    lo, hi = (-8, 8) if bits == 4 else (-1, 2)
    for m, n, k in [(1, 1, 1), (3, 5, 7), (5, 3, 33), (9, 13, 64), (2, 9, 65), (17, 9, 100), (1, 33, 1000)]:
        yield m, n, k, rng.integers(-128, 128, (m, k), dtype=np.int8), rng.integers(lo, hi, (n, k)).astype(np.int8)


def _check_packer_through_kernel(command: list[str], isa: str, bits: int) -> None:
    for m, n, k, a, w in _numpy_cases(bits):
        result = subprocess.run(command + ["gemm", isa, str(bits), str(m), str(n), str(k)],
                                input=a.tobytes() + pack_gemm_rows(w, bits), capture_output=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        got = np.frombuffer(result.stdout, dtype="<i4").reshape(m, n)
        np.testing.assert_array_equal(got, a.astype(np.int64) @ w.astype(np.int64).T, err_msg=f"{isa} {m}x{n}x{k}")


@needs_host_x86
@pytest.mark.parametrize("bits", [4, 2])
def test_host_python_packed_weights_through_the_kernels_match_numpy(host_driver, bits):
    for isa in ("c", "avx2") if "avx2" in run(["grep", "-o", "avx2", "/proc/cpuinfo"]).stdout else ("c",):
        _check_packer_through_kernel([str(host_driver)], isa, bits)


# ---- kernels under qemu -----------------------------------------------------------------------

@needs_qemu
@pytest.mark.parametrize("cpu", [pytest.param("cortex-a53", marks=pytest.mark.slow),
                                 pytest.param("cortex-a76", marks=pytest.mark.slow), "max"])
def test_qemu_lowbit_kernels_match_int8_products_inside_guard_pages(arm_driver, cpu):
    # -cpu max runs every aarch64 path (neon, dotprod, i8mm); the others check the selection
    _expect_all_pass(run([*qemu(cpu), str(arm_driver), "selftest", "all"]), QEMU_PATHS[cpu], arm=True)


@needs_qemu
def test_qemu_refuses_a_lowbit_path_the_cpu_lacks(arm_driver):
    result = run([*qemu("cortex-a53"), str(arm_driver), "bench", "dotprod", "4", "4", "4", "64", "1"])
    assert result.returncode == 4 and "dotprod refused: the CPU lacks FEAT_DotProd" in result.stderr


@needs_qemu
@pytest.mark.parametrize("isa", ["neon", "dotprod", "i8mm"])
def test_qemu_python_packed_weights_through_the_kernels_match_numpy(arm_driver, isa):
    for bits in PRECISIONS.values():
        _check_packer_through_kernel([*qemu("max"), str(arm_driver)], isa, bits)


# ---- the float GEMM (ek_sgemm_*) ------------------------------------------------------------------

def _check_float_gemm(command: list[str], isa: str) -> None:
    rng = np.random.default_rng(9)
    for m, n, k in [(1, 1, 1), (3, 5, 7), (4, 16, 4), (5, 17, 9), (9, 33, 100), (64, 64, 288), (1, 1000, 64), (6, 9, 0)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        result = subprocess.run(command + ["gemm", isa, "32", str(m), str(n), str(k)], input=a.tobytes() + b.tobytes(),
                                capture_output=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        got = np.frombuffer(result.stdout, dtype="<f4").reshape(m, n)
        want = a.astype(np.float64) @ b.astype(np.float64)
        scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
        assert float(np.abs(got - want).max(initial=0.0)) / scale < 1e-5, f"{isa} {m}x{n}x{k}"


@needs_host_x86
def test_host_float_gemm_matches_numpy(host_driver):
    for isa in ("c", "avx2") if "avx2" in run(["grep", "-o", "avx2", "/proc/cpuinfo"]).stdout else ("c",):
        _check_float_gemm([str(host_driver)], isa)


@needs_qemu
def test_qemu_float_gemm_matches_numpy(arm_driver):
    for isa in ("c", "neon"):
        _check_float_gemm([*qemu("cortex-a53"), str(arm_driver)], isa)


# ---- programs through ek_run ------------------------------------------------------------------

def _programs():
    """(name, (program, feeds, expected)): GEMM weights that are read in place (no K groups, or
    groups of whole blocks) and that fall back to unpacking (groups inside a block)."""
    rng = np.random.default_rng
    return {
        "conv_int4": cases.conv(rng(1), c=6, hw=(7, 6), o=11, k=(3, 3), stride=(1, 2), pads=(1, 1, 0, 1), bits=4),
        "conv_ternary_grouped": cases.conv(rng(2), c=8, group=2, o=6, hw=(5, 5), k=(3, 3), bits=2),
        "conv_int4_k_groups_of_32": cases.conv(rng(3), c=8, o=5, hw=(4, 5), k=(2, 2), bits=4, group_size=32),
        "fc_ternary_k_groups_of_64": cases.fully_connected(rng(4), shape=(3, 192), n=21, bits=2, group_size=64),
        "fc_int4_gemv": cases.fully_connected(rng(5), shape=(1, 300), n=37, bits=4),
        "fc_ternary_odd_k": cases.fully_connected(rng(6), shape=(5, 131), n=9, bits=2),
        "fc_int4_groups_inside_blocks": cases.fully_connected(rng(7), shape=(2, 48), n=7, bits=4, group_size=16),
    }


PROGRAMS = _programs()


def _weight_packing(blob: bytes, program) -> int:
    view = BlobView(blob)
    for i in range(view.n_tensors):
        entry = view.tensor(i)
        name_offset = int.from_bytes(blob[entry + 4:entry + 8], "little")
        strings = view.section(6)[0]
        name = blob[strings + name_offset:blob.index(b"\0", strings + name_offset)].decode()
        if name == "w":
            return blob[entry + 3]
    raise AssertionError("no weight tensor 'w' in the blob")


def test_python_pair_packer_round_trips_and_matches_the_documented_layout():
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (3, 5), (2, 8), (5, 17), (4, 3, 3, 3)]:
        w = rng.integers(-128, 128, shape).astype(np.int8)
        data = pack_i8_pairs(w)
        assert len(data) == (shape[0] + 1) // 2 * 16 * -(-int(np.prod(shape[1:])) // 8)
        np.testing.assert_array_equal(unpack_i8_pairs(data, shape), w)
    w = np.arange(1, 19, dtype=np.int8).reshape(2, 9)
    assert pack_i8_pairs(w) == bytes([*range(1, 9), *range(10, 18), 9, *[0] * 7, 18, *[0] * 7])


INT8_PROGRAMS = {
    "conv_int8_odd_channels": lambda rng: cases.conv(rng, c=5, o=11, hw=(6, 7), k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1)),
    "conv_int8_groups_odd": lambda rng: cases.conv(rng, c=6, group=3, o=9, hw=(5, 5), k=(3, 3)),
    "conv_int8_k_groups": lambda rng: cases.conv(rng, c=8, o=6, hw=(4, 4), k=(1, 1), bits=8, group_size=8),
    "fc_int8_rows": lambda rng: cases.fully_connected(rng, shape=(5, 37), n=13),
    "fc_int8_gemv": lambda rng: cases.fully_connected(rng, shape=(1, 40), n=9),
}


@pytest.mark.parametrize("name", sorted(INT8_PROGRAMS))
def test_int8_gemm_weights_are_pre_paired_only_for_i8mm_targets(name):
    program, feeds, expected = INT8_PROGRAMS[name](np.random.default_rng(len(name)))
    gemv = name.endswith("gemv")
    assert _weight_packing(write_blob(program, features=("neon", "dotprod", "i8mm")), program) == (
        op_codes.PACK["NONE"] if gemv else op_codes.PACK["I8_PAIRS8"])
    assert _weight_packing(write_blob(program, features=("neon", "dotprod")), program) == op_codes.PACK["NONE"]
    # the host runs such a blob on its own path: the weights are unpacked per block
    outputs, proc = run_blob(write_blob(program, features=("i8mm",)), program, feeds, host_runner())
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(outputs, expected)


@pytest.mark.parametrize("isa", ["i8mm", "dotprod"])
@pytest.mark.parametrize("name", sorted(INT8_PROGRAMS))
def test_pre_paired_int8_programs_under_qemu(name, isa):
    # i8mm reads the pairs in place (or unpacks them where a block starts on an odd channel);
    # dotprod on the same blob unpacks them
    program, feeds, expected = INT8_PROGRAMS[name](np.random.default_rng(len(name)))
    outputs, proc = run_blob(write_blob(program, features=("i8mm",)), program, feeds, aarch64_runner(), qemu("max"),
                             ("--isa", isa))
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(outputs, expected)


@pytest.mark.parametrize("name", ["conv_int4", "conv_ternary_grouped", "fc_int4_gemv"])
def test_gemm_weights_are_written_k_blocked(name):
    program, _, _ = PROGRAMS[name]
    bits = program.tensors["w"].quant.bits
    expected = op_codes.PACK["INT4_K32"] if bits == 4 else op_codes.PACK["INT2_K64"]
    assert _weight_packing(write_blob(program), program) == expected


@pytest.mark.parametrize(("name", "features", "expected"), [
    # groups of 16 start inside the 32-value int4 blocks: the kernel unpacks such rows, so they are flat
    ("fc_int4_groups_inside_blocks", (), "INT4"),
    ("fc_int4_groups_inside_blocks", ("neon", "dotprod"), "INT4"),
    # groups of 64 fill whole ternary blocks: read in place on ARM
    ("fc_ternary_k_groups_of_64", ("neon",), "INT2_K64"),
    ("conv_int4", ("neon", "dotprod"), "INT4_K32"),
    # x86: the int8 (VNNI) GEMM on the unpacked block beats the AVX2 low-bit kernels: fewest bytes
    ("conv_int4", ("sse4.2", "avx", "avx2", "fma", "f16c"), "INT4"),
    ("fc_ternary_k_groups_of_64", ("avx2",), "INT2_B3"),
])
def test_fast_layout_reads_in_place_only_where_the_low_bit_kernels_win(name, features, expected):
    program, _, _ = PROGRAMS[name]
    assert _weight_packing(write_blob(program, features=features), program) == op_codes.PACK[expected]
    # compact: always the fewest bytes
    smallest = "INT4" if program.tensors["w"].quant.bits == 4 else "INT2_B3"
    assert _weight_packing(write_blob(program, features=features, weight_layout="compact"), program) == \
        op_codes.PACK[smallest]


def test_depthwise_low_bit_weights_stay_flat_packed():
    program, _, _ = cases.conv(np.random.default_rng(8), depthwise=True, c=5, k=(3, 3), bits=2)
    assert _weight_packing(write_blob(program), program) == op_codes.PACK["INT2"]


def _run_checked(name: str, runner: Path, prefix: tuple[str, ...], isa: str) -> None:
    program, feeds, expected = PROGRAMS[name]
    outputs, proc = run_blob(write_blob(program), program, feeds, runner, prefix, ("--isa", isa))
    assert proc.returncode == 0, f"ek_run --isa {isa} failed: {proc.stderr}"
    assert_bit_exact(outputs, expected)


@pytest.mark.parametrize("isa", ["c", "auto"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_programs_on_the_host(name, isa):
    _run_checked(name, host_runner(), (), isa)


@pytest.mark.parametrize(("cpu", "isa"), [("cortex-a53", "neon"), ("cortex-a76", "dotprod"), ("max", "i8mm")])
@pytest.mark.parametrize("name", ["conv_int4", "conv_ternary_grouped", "conv_int4_k_groups_of_32",
                                  "fc_ternary_k_groups_of_64", "fc_int4_gemv", "fc_ternary_odd_k"])
def test_programs_under_qemu(name, cpu, isa):
    _run_checked(name, aarch64_runner(), qemu(cpu), isa)


def test_loader_refuses_a_k_blocked_weight_of_the_wrong_size():
    program, feeds, _ = PROGRAMS["conv_int4"]
    blob = write_blob(program)
    view = BlobView(blob)
    for i in range(view.n_tensors):
        entry = view.tensor(i)
        if blob[entry + 3] == op_codes.PACK["INT4_K32"]:
            nbytes = int.from_bytes(blob[entry + 64:entry + 72], "little")
            bad = view.put(entry + 64, "<Q", nbytes - 16).sealed()
            break
    _, proc = run_blob(bad, program, feeds, host_runner())
    assert proc.returncode == 3 and "its shape and dtype need" in proc.stderr, proc.stderr


# ---- whole models (slow) ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("name", "quant", "cpu"), [("lenet_mnist", "int4", "cortex-a76"),
                                                    ("tiny_transformer", "ternary", "max")])
def test_zoo_models_with_low_bit_weights_bit_exact_under_qemu(name, quant, cpu):
    import edgekiln
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.backends.reference.runner import ReferenceRunner
    from tests.zoo import input_shapes, model_path, sample_input

    aarch64_runner()
    artifact = edgekiln.compile(model_path(name), "cortex-a76", input_shapes=input_shapes(name), quant=quant,
                                calib=[sample_input(name, seed=s) for s in range(1, 5)], progress=False)
    blob = next(data for path, data in artifact.files.items() if str(path).endswith(".blob"))
    view = BlobView(blob)
    blocked = {op_codes.PACK["INT4_K32"], op_codes.PACK["INT2_K64"]}
    assert any(blob[view.tensor(i) + 3] in blocked for i in range(view.n_tensors)), "no K-blocked GEMM weights"
    feeds = sample_input(name, seed=21)
    got = ArmCpuRunner(artifact.files, artifact.manifest, qemu_cpu=cpu).run(feeds)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
