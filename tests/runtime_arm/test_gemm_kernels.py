"""The int8 GEMM microkernels (edgekiln/runtime_arm/src/gemm): built, run and compared.

C[i][j] = sum_p A[i][p] * B[j][p] in exact int32, for every ISA path:

- host x86_64: portable C, AVX2, AVX-VNNI and AVX-512 VNNI, natively (each VNNI kernel is
  skipped, with the reason, only on a CPU without it);
- qemu-aarch64 -cpu cortex-a53 (NEON only: dotprod and i8mm must be refused), cortex-a76
  (+dotprod, i8mm refused) and max (+i8mm).

Each build compiles every kernel file with its own flags, as the runtime does.  The driver
(gemm_driver.c) checks each kernel against the C reference on every k tail, edge-sized m and
n, random shapes and strides, extreme values, with each operand flush against a PROT_NONE
page; the reference itself is checked against numpy here.  Under qemu, a TCG plugin counts
guest instructions per kernel call: the cost measure that does not depend on emulation speed.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GEMM_DIR = ROOT / "edgekiln" / "runtime_arm" / "src" / "gemm"
INCLUDE_DIR = ROOT / "edgekiln" / "runtime_arm" / "include"
HERE = Path(__file__).resolve().parent

WARNINGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
# The per-file flags the runtime's build must use (see ek_gemm.h).
AARCH64_FLAGS = {
    "gemm_s8_ref.c": ["-march=armv8-a"],
    "cpu_features.c": ["-march=armv8-a"],
    "gemm_s8_select.c": ["-march=armv8-a"],
    "gemm_s8_neon.c": ["-march=armv8-a"],
    "gemm_s8_dotprod.c": ["-march=armv8.2-a+dotprod"],
    "gemm_s8_i8mm.c": ["-march=armv8.6-a+dotprod+i8mm"],
    "gemm_s8_avx2.c": [],  # compiles to nothing on aarch64
    "gemm_s8_avxvnni.c": [],
    "gemm_s8_vnni512.c": [],
    "gemm_s8_quads_vnni512.c": [],
    "im2col_quads_vnni512.c": [],
    "requantize_rows_vnni512.c": [],
    "gemm_lowbit_ref.c": ["-march=armv8-a"],
    "gemm_lowbit_select.c": ["-march=armv8-a"],
    "gemm_lowbit_neon.c": ["-march=armv8-a"],
    "gemm_lowbit_neon_mask.c": ["-march=armv8-a"],
    "gemm_lowbit_dotprod.c": ["-march=armv8.2-a+dotprod"],
    "gemm_lowbit_i8mm.c": ["-march=armv8.6-a+dotprod+i8mm"],
    "gemm_lowbit_avx2.c": [],
    "gemm_f32_ref.c": ["-march=armv8-a"],
    "gemm_f32_select.c": ["-march=armv8-a"],
    "gemm_f32_neon.c": ["-march=armv8-a"],
    "gemm_f32_avx2.c": [],
}
X86_64_FLAGS = {name: [] for name in AARCH64_FLAGS} | {"gemm_s8_avx2.c": ["-mavx2", "-mfma"],
                                                       "gemm_s8_avxvnni.c": ["-mavx2", "-mfma", "-mavxvnni"],
                                                       "gemm_s8_vnni512.c": ["-mavx512f", "-mavx512bw", "-mavx512vl",
                                                                             "-mavx512vnni"],
                                                       "gemm_s8_quads_vnni512.c": ["-mavx512f", "-mavx512bw",
                                                                                   "-mavx512vl", "-mavx512vnni"],
                                                       "im2col_quads_vnni512.c": ["-mavx512f", "-mavx512bw",
                                                                                  "-mavx512vl", "-mavx512vnni"],
                                                       "requantize_rows_vnni512.c": ["-mavx512f", "-mavx512bw",
                                                                                     "-mavx512vl", "-mavx512vnni"],
                                                       "gemm_lowbit_avx2.c": ["-mavx2", "-mfma"],
                                                       "gemm_f32_avx2.c": ["-mavx2", "-mfma"]}

AARCH64_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
# qemu CPU model -> the kernels it must run, and the ones the selector must refuse.
QEMU_CPUS = {
    "cortex-a53": (["c", "neon"], ["dotprod", "i8mm"]),
    "cortex-a76": (["c", "neon", "dotprod"], ["i8mm"]),
    "max": (["c", "neon", "dotprod", "i8mm"], []),
}
# An im2col block of a 3x3 conv with 64 channels: the shape of the instruction-count table.
COUNT_SHAPE = (64, 64, 576)

needs_host_x86 = pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("gcc") is None,
                                    reason="needs an x86_64 host with gcc")
needs_qemu = pytest.mark.skipif(shutil.which(AARCH64_CC) is None or shutil.which(QEMU) is None,
                                reason="needs aarch64-linux-gnu-gcc and qemu-aarch64")


def build_driver(cc: str, flags: dict[str, list[str]], out_dir: Path, link: list[str],
                 driver: str = "gemm_driver") -> Path:
    """Compile every kernel file with its own flags plus the driver; return the executable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    objects = []
    sources = [(GEMM_DIR / name, extra) for name, extra in flags.items()]
    sources.append((HERE / f"{driver}.c", flags["gemm_s8_ref.c"]))
    commands = []
    for source, extra in sources:
        obj = out_dir / (source.stem + ".o")
        commands.append([cc, *WARNINGS, *extra, f"-I{INCLUDE_DIR}", "-c", str(source), "-o", str(obj)])
        objects.append(str(obj))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # one compile per core
        list(pool.map(lambda cmd: subprocess.run(cmd, check=True, capture_output=True, text=True), commands))
    exe = out_dir / driver
    subprocess.run([cc, *objects, *link, "-o", str(exe)], check=True, capture_output=True, text=True)
    return exe


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)


def qemu(cpu: str, exe: Path, *args: str, plugin: Path | None = None) -> list[str]:
    prefix = [QEMU, "-cpu", cpu] + (["-plugin", str(plugin), "-d", "plugin"] if plugin else [])
    return prefix + [str(exe), *args]


@pytest.fixture(scope="module")
def host_driver(tmp_path_factory) -> Path:
    return build_driver("gcc", X86_64_FLAGS, tmp_path_factory.mktemp("gemm_x86_64"), [])


@pytest.fixture(scope="module")
def arm_driver(tmp_path_factory) -> Path:
    # Static, so qemu needs no sysroot (-L) and instruction counts include no dynamic loader.
    return build_driver(AARCH64_CC, AARCH64_FLAGS, tmp_path_factory.mktemp("gemm_aarch64"), ["-static"])


@pytest.fixture(scope="module")
def insn_plugin() -> Path:
    # edgekiln/runtime_arm/tools/qemu_insn_plugin.c, built once and cached like the runtime.
    from edgekiln.backends.arm_cpu.insn_plugin import build_plugin

    if "-plugin" not in run([QEMU, "-h"]).stdout:
        pytest.skip("this qemu-aarch64 was built without TCG plugin support")
    return build_plugin()


def selftest_results(output: str) -> dict[str, tuple[int, int]]:
    """'neon: 5260 cases, 0 failed' lines -> {isa: (cases, failed)}."""
    lines = re.finditer(r"^(\w+): (\d+) cases, (\d+) failed$", output, re.MULTILINE)
    return {m[1]: (int(m[2]), int(m[3])) for m in lines}


def selector_lines(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


# ---- build ----

@needs_host_x86
def test_avx2_file_without_its_flags_fails_clearly(tmp_path):
    result = run(["gcc", *WARNINGS, f"-I{INCLUDE_DIR}", "-c", str(GEMM_DIR / "gemm_s8_avx2.c"),
                  "-o", str(tmp_path / "x.o")])
    assert result.returncode != 0 and "compile with -mavx2 -mfma" in result.stderr


@needs_qemu
@pytest.mark.parametrize(("name", "message"), [
    ("gemm_s8_dotprod.c", "-march=armv8.2-a+dotprod"),
    ("gemm_s8_i8mm.c", "-march=armv8.6-a+dotprod+i8mm"),
])
def test_arm_isa_file_without_its_flags_fails_clearly(tmp_path, name, message):
    result = run([AARCH64_CC, *WARNINGS, "-march=armv8-a", f"-I{INCLUDE_DIR}", "-c",
                  str(GEMM_DIR / name), "-o", str(tmp_path / "x.o")])
    assert result.returncode != 0 and message in result.stderr


def _clang() -> str | None:
    names = ["clang"] + [f"clang-{v}" for v in range(20, 13, -1)]
    return next((shutil.which(name) for name in names if shutil.which(name)), None)


@pytest.mark.skipif(_clang() is None, reason="no clang (the Android NDK's compiler family)")
@pytest.mark.parametrize(("target", "flags"), [("aarch64-linux-gnu", AARCH64_FLAGS),
                                               ("x86_64-linux-gnu", X86_64_FLAGS)])
def test_every_file_compiles_warning_free_with_clang(tmp_path, target, flags):
    for name, extra in flags.items():
        result = run([_clang(), f"--target={target}", *WARNINGS, *extra, f"-I{INCLUDE_DIR}", "-c",
                      str(GEMM_DIR / name), "-o", str(tmp_path / (name + ".o"))])
        assert result.returncode == 0, name + "\n" + result.stderr


# ---- host x86_64 ----

@needs_host_x86
def test_host_guard_pages_fault(host_driver):
    for side in ("after", "before"):
        result = run([str(host_driver), "guardcheck", side])
        assert result.returncode == 3, result.stdout + result.stderr


# x86 GEMM paths, fastest first, and the /proc/cpuinfo flag each needs (besides avx2).
X86_ISAS = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "avx2": "avx2"}


def host_cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    return set(re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)[1].split()) if "flags" in text else set()


@needs_host_x86
def test_host_selector(host_driver):
    lines = selector_lines(run([str(host_driver), "features"]).stdout)
    found = set(lines["features"].split())
    has_avx2 = "avx2" in found
    runnable = [isa for isa in X86_ISAS if isa in found and has_avx2]
    assert lines["auto"] == (runnable[0] if runnable else "c")
    assert lines["c"] == "ok"
    assert lines["avx2"] == ("ok" if has_avx2 else "avx2 refused: the CPU or OS lacks AVX2")
    for isa in ("avxvnni", "avx512vnni"):
        assert lines[isa] == "ok" if isa in runnable else lines[isa].startswith(f"{isa} refused: the CPU or OS lacks")
    # cpuid and /proc/cpuinfo agree (the kernel also clears avx512 flags when the OS disables zmm state)
    flags = host_cpu_flags()
    if flags:
        for isa, flag in X86_ISAS.items():
            assert (isa in found) == (flag in flags), (isa, flag)
    for isa in ("neon", "dotprod", "i8mm"):
        assert lines[isa] == f"{isa} refused: not built (aarch64 only)"
    assert lines["sve"].startswith("unknown ISA")


@needs_host_x86
def test_host_kernels_match_reference_on_all_shapes_inside_guard_pages(host_driver):
    result = run([str(host_driver), "selftest", "all"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    found = selftest_results(result.stdout)
    expected = set(X86_ISAS) & set(run([str(host_driver), "features"]).stdout.split())
    assert set(found) == expected
    assert all(cases > 5000 and failed == 0 for cases, failed in found.values())


def _numpy_cases():
    rng = np.random.default_rng(5)
    for m, n, k in [(1, 1, 1), (3, 5, 7), (5, 3, 17), (9, 13, 31), (16, 16, 64), (17, 9, 100), (1, 33, 1000)]:
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        yield m, n, k, a, rng.integers(-128, 128, (n, k), dtype=np.int8)
    yield 4, 4, 1024, np.full((4, 1024), -128, np.int8), np.full((4, 1024), -128, np.int8)


def _check_against_numpy(command: list[str], isa: str):
    for m, n, k, a, b in _numpy_cases():
        result = subprocess.run(command + ["gemm", isa, str(m), str(n), str(k)],
                                input=a.tobytes() + b.tobytes(), capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr
        got = np.frombuffer(result.stdout, dtype="<i4").reshape(m, n)
        want = a.astype(np.int64) @ b.astype(np.int64).T
        np.testing.assert_array_equal(got, want, err_msg=f"{isa} {m}x{n}x{k}")


@needs_host_x86
def test_host_reference_matches_numpy(host_driver):
    _check_against_numpy([str(host_driver)], "c")


def _host_has(isa: str, driver: Path) -> bool:
    return isa in run([str(driver), "features"]).stdout.split()


@needs_host_x86
@pytest.mark.parametrize("isa", ["avxvnni", "avx512vnni"])
def test_host_vnni_kernels_match_numpy(host_driver, isa):
    if not _host_has(isa, host_driver):
        pytest.skip(f"this CPU (or OS) has no {isa}: the selector refuses it, the AVX2 kernel runs")
    _check_against_numpy([str(host_driver)], isa)


@needs_host_x86
def test_host_vnni_is_faster_than_avx2(host_driver):
    isas = [isa for isa in ("avx2", "avxvnni", "avx512vnni") if _host_has(isa, host_driver)]
    if len(isas) < 2:
        pytest.skip("this CPU has no VNNI (AVX-VNNI or AVX-512 VNNI)")
    best = {}
    for _ in range(2):  # interleaved, so load on a shared machine hits every kernel alike
        for isa in isas:
            out = run([str(host_driver), "bench", isa, *map(str, COUNT_SHAPE), "100"]).stdout
            best[isa] = min(best.get(isa, float("inf")), float(re.search(r"best_ns=(\d+)", out)[1]))
    # Measured (Sapphire Rapids, 64x64x576): avx2 54 us, avxvnni 33 us, avx512vnni 21 us.  The bound
    # only catches a lost register tile or a kernel that stopped being selected.
    for isa in isas[1:]:
        assert best[isa] < best["avx2"], best


@needs_host_x86
def test_host_avx2_is_much_faster_than_the_reference(host_driver):
    if "avx2" not in run([str(host_driver), "features"]).stdout.split():
        pytest.skip("this CPU has no AVX2")
    best = {}
    for isa in ("c", "avx2"):
        out = run([str(host_driver), "bench", isa, *map(str, COUNT_SHAPE), "200"]).stdout
        best[isa] = float(re.search(r"best_ns=(\d+)", out)[1])
    # Measured ~12x (0.94 ms vs 0.075 ms on the dev Xeon); 3x leaves room for a noisy CI machine.
    assert best["avx2"] * 3 < best["c"], best


# ---- aarch64 under qemu ----

@needs_qemu
def test_qemu_guard_pages_fault(arm_driver):
    for side in ("after", "before"):
        result = run(qemu("cortex-a53", arm_driver, "guardcheck", side))
        assert result.returncode == 3, result.stdout + result.stderr


@needs_qemu
@pytest.mark.parametrize("cpu", list(QEMU_CPUS))
def test_qemu_selector_follows_the_cpu_features(arm_driver, cpu):
    runs, refused = QEMU_CPUS[cpu]
    lines = selector_lines(run(qemu(cpu, arm_driver, "features")).stdout)
    assert lines["auto"] == runs[-1]
    assert all(lines[isa] == "ok" for isa in runs)
    assert all(lines[isa].startswith(f"{isa} refused: the CPU lacks") for isa in refused)
    assert lines["avx2"] == "avx2 refused: not built (x86_64 only)"


@needs_qemu
@pytest.mark.parametrize("cpu", list(QEMU_CPUS))
def test_qemu_kernels_match_reference_on_all_shapes_inside_guard_pages(arm_driver, cpu):
    result = run(qemu(cpu, arm_driver, "selftest", "all"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    found = selftest_results(result.stdout)
    assert set(found) == set(QEMU_CPUS[cpu][0]) - {"c"}
    assert all(cases > 5000 and failed == 0 for cases, failed in found.values())


@needs_qemu
def test_qemu_forcing_a_missing_isa_is_refused(arm_driver):
    result = run(qemu("cortex-a53", arm_driver, "bench", "dotprod", "4", "4", "16", "1"))
    assert result.returncode == 4 and "dotprod refused: the CPU lacks FEAT_DotProd" in result.stderr


@needs_qemu
@pytest.mark.parametrize("isa", ["c", "neon", "dotprod", "i8mm"])
def test_qemu_kernels_match_numpy(arm_driver, isa):
    _check_against_numpy(qemu("max", arm_driver), isa)


def count_instructions(driver: Path, plugin: Path, isa: str, shape: tuple[int, int, int]) -> int:
    """Guest instructions of one kernel call: count(2 calls) - count(1 call), checked stable."""
    def total(reps: int) -> int:
        result = run(qemu("max", driver, "repeat", isa, *map(str, shape), str(reps), plugin=plugin))
        assert result.returncode == 0, result.stderr
        return int(re.search(r"insns: (\d+)", result.stderr)[1])

    one, two, three = total(1), total(2), total(3)
    assert two - one == three - two, "instruction counts should be deterministic"
    return two - one


@needs_qemu
def test_qemu_instruction_counts_rank_the_isas(arm_driver, insn_plugin):
    counts = {isa: count_instructions(arm_driver, insn_plugin, isa, COUNT_SHAPE)
              for isa in ("c", "neon", "dotprod", "i8mm")}
    macs = np.prod(COUNT_SHAPE)
    print(f"\nguest instructions per call, m x n x k = {COUNT_SHAPE}:")
    for isa, count in counts.items():
        print(f"  {isa:8s} {count:>10d}  {macs / count:5.2f} MACs/instruction")
    # Measured (gcc 12): c 14.19M, neon 707K, dotprod 265K, i8mm 162K.  The bounds leave room for
    # another compiler while still catching a lost register tile or a spilled loop.
    assert counts["neon"] * 10 < counts["c"]
    assert counts["dotprod"] * 2 < counts["neon"]
    assert counts["i8mm"] * 4 < counts["dotprod"] * 3
    assert macs / counts["i8mm"] > 12
