"""The 32-bit armv7 runtime: how a target selects it (`cortex-a7`, `[cpu] isa = "armv7-a"`), the
compiler and flags that build it (arm-linux-gnueabihf-gcc, armv7-a + NEON-VFPv4, hard-float, static),
the transport that runs it (qemu-arm), and the errors when one of them is missing or fails.

Bit-exactness: every integer kernel case the aarch64 qemu tests use, whole models at int8 / int4 /
ternary against the integer reference, and fp32 against onnxruntime, all under `qemu-arm -cpu
cortex-a7` (a few under cortex-a15, on both int8 GEMM paths armv7 has: NEON and portable C).
The loader's 32-bit guards: a blob whose 64-bit arena or
tensor size does not fit a 32-bit size_t is refused instead of being truncated.

Tests that build the armv7 runner (~30 s once, then cached) are marked slow."""

from __future__ import annotations

import functools
import json
import re
import shutil
import stat
import struct
from pathlib import Path

import numpy as np
import pytest

from edgekiln.backends.arm_cpu import transport as transport_module
from edgekiln.backends.arm_cpu.backend import target_arch
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.arm_cpu.toolchain import (
    ToolchainError,
    build_program,
    compile_commands,
    find_toolchain,
    runtime_sources,
)
from edgekiln.compiler.target import get_target
from edgekiln.errors import ArtifactError, EdgekilnError
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.blob_tools import BlobView
from tests.runtime_arm.harness import (
    assert_bit_exact,
    assert_close,
    one_call,
    run_blob,
    run_program_blob,
)
from tests.runtime_arm.test_kernels_int8 import QEMU_CASES

ARM_CC = "arm-linux-gnueabihf-gcc"
needs_arm_cc = pytest.mark.skipif(shutil.which(ARM_CC) is None,
                                  reason="no armv7 cross compiler (Debian: gcc-arm-linux-gnueabihf)")


@functools.cache
def _armv7_runner() -> Path | None:
    try:
        return build_program(find_toolchain("arm")).path
    except ToolchainError:
        return None


def armv7_runner() -> Path:
    """The static armv7 ek_run; skips without the cross compiler or qemu-arm."""
    if shutil.which("qemu-arm") is None:
        pytest.skip("no qemu-arm (Debian: qemu-user)")
    runner = _armv7_runner()
    if runner is None:
        pytest.skip("no armv7 cross compiler (Debian: gcc-arm-linux-gnueabihf)")
    return runner


def qemu_arm(cpu: str) -> tuple[str, ...]:
    return ("qemu-arm", "-cpu", cpu)


# -- selection and flags (no build) -----------------------------------------------------------------
def test_cortex_a7_target_selects_the_32_bit_arm_architecture():
    a7 = get_target("cortex-a7")
    assert a7.kind == "arm_cpu" and a7.details["isa"] == "armv7-a" and a7.qemu_cpu == "cortex-a7"
    assert target_arch(a7) == "arm"
    assert target_arch(get_target("cortex-a53")) == "aarch64" and target_arch(get_target("host")) == "x86_64"


@needs_arm_cc
def test_armv7_builds_for_armv7_a_with_neon_vfpv4_and_links_statically(tmp_path, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    tc = find_toolchain("arm")
    assert tc.cc == ARM_CC and tc.machine == "arm-linux-gnueabihf" and not tc.android
    commands = compile_commands(tc, runtime_sources(), tmp_path, "ek_run")
    for command in commands:
        assert "-march=armv7-a" in command and "-mfpu=neon-vfpv4" in command, command
        # the AArch64-only ISA files get no -march=armv8 flag (they compile to empty units)
        assert not any(flag.startswith("-march=armv8") for flag in command), command
    assert "-static" in commands[-1]


def test_missing_armv7_compiler_names_the_package_and_the_options(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(ToolchainError) as info:
        find_toolchain("arm", "no-such-arm-linux-gnueabihf-gcc")
    assert isinstance(info.value, EdgekilnError)
    for fragment in ("'no-such-arm-linux-gnueabihf-gcc'", "apt-get install gcc-arm-linux-gnueabihf", "--toolchain",
                     "CC"):
        assert fragment in str(info.value)


@needs_arm_cc
def test_an_armv7_compiler_for_an_aarch64_target_points_to_an_armv7_target():
    with pytest.raises(ToolchainError, match="builds for arm-linux-gnueabihf, the target needs aarch64.*cortex-a7"):
        find_toolchain("aarch64", ARM_CC)


def _fake_compiler(folder: Path, stderr_lines: int) -> Path:
    """A 'compiler' that claims to build for armv7 and fails every compile with `stderr_lines` lines."""
    script = folder / "broken-arm-linux-gnueabihf-gcc"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  -dumpmachine) echo arm-linux-gnueabihf; exit 0;;\n"
        "  --version) echo 'broken-gcc 0.1'; exit 0;;\n"
        "esac\n"
        "echo 'x.c:1:1: error: the first problem' >&2\n"
        f"i=2; while [ $i -le {stderr_lines} ]; do echo \"x.c:$i:1: note: line $i\" >&2; i=$((i+1)); done\n"
        "exit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_compiler_that_fails_reports_the_first_lines_of_its_stderr(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKILN_CACHE", str(tmp_path / "cache"))
    tc = find_toolchain("arm", str(_fake_compiler(tmp_path, 40)))
    with pytest.raises(ToolchainError) as info:
        build_program(tc)
    message = str(info.value)
    assert "does not compile with" in message and "broken-gcc 0.1" in message
    assert "error: the first problem" in message and "x.c:5:1" in message
    assert "x.c:39:1" not in message and "more lines" in message  # the start, not the whole log
    assert not list((tmp_path / "cache" / "runtime").iterdir())  # the failed build left nothing behind


def test_qemu_arm_is_chosen_for_armv7_artifacts_and_its_absence_is_explained(monkeypatch):
    if shutil.which("qemu-arm"):
        chosen = transport_module.choose_transport("arm", "cortex-a7")
        assert chosen.name == "qemu" and Path(chosen.prefix[0]).name == "qemu-arm"
        assert chosen.prefix[1:] == ("-cpu", "cortex-a7")
    real_which = shutil.which
    monkeypatch.setattr(transport_module.shutil, "which", lambda name: None if name == "qemu-arm" else real_which(name))
    with pytest.raises(ArtifactError) as info:
        transport_module.choose_transport("arm", "cortex-a7")
    assert "qemu-arm not found" in str(info.value) and "apt-get install qemu-user" in str(info.value)


# -- the built runner under qemu-arm (slow: one ~30 s build) ------------------------------------------
@pytest.mark.slow
def test_runner_is_a_static_32_bit_hard_float_arm_executable():
    data = armv7_runner().read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1  # ELFCLASS32
    e_machine, = struct.unpack_from("<H", data, 18)
    e_flags, = struct.unpack_from("<I", data, 36)
    assert e_machine == 40  # EM_ARM
    assert e_flags & 0x400  # EF_ARM_ABI_FLOAT_HARD: the armhf calling convention
    e_phoff, = struct.unpack_from("<I", data, 28)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 42)
    kinds = [struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)]
    assert 3 not in kinds  # no PT_INTERP: static, runs on any armv7 Linux without a matching libc


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(QEMU_CASES))
def test_integer_kernels_bit_exact_under_qemu_arm_cortex_a7(name):
    program, feeds, expected = QEMU_CASES[name](np.random.default_rng(len(name)))
    assert_bit_exact(run_program_blob(program, feeds, runner=armv7_runner(), prefix=qemu_arm("cortex-a7")), expected)


@pytest.mark.slow
def test_larger_gemm_shapes_under_qemu_arm_cortex_a15_on_both_gemm_paths():
    # more than one 4x4 tile, k tails of 16 / 8 / k % 8 bytes, two threads
    runner = armv7_runner()
    for built in (cases.conv(np.random.default_rng(7), c=5, hw=(13, 11), o=70, k=(3, 3), stride=(1, 1),
                             pads=(1, 1, 1, 1)),
                  cases.fully_connected(np.random.default_rng(8), shape=(2, 3, 90), n=41, bits=4, group_size=None),
                  cases.fully_connected(np.random.default_rng(9), shape=(2, 64), n=33, bits=2, group_size=16)):
        program, feeds, expected = built
        for isa in ("neon", "c"):
            assert_bit_exact(run_program_blob(program, feeds, runner=runner, prefix=qemu_arm("cortex-a15"),
                                              args=("--threads", "2", "--isa", isa)), expected)


@pytest.mark.slow
def test_float_kernels_under_qemu_arm():
    rng = np.random.default_rng(3)

    def f32(*shape):
        return rng.uniform(-2, 2, shape).astype(np.float32)

    built = [
        one_call("Conv", [("x", f32(1, 4, 9, 7), False), ("w", f32(6, 2, 3, 3), True), ("b", f32(6), True)],
                 {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 1], "group": 2}),
        one_call("Gemm", [("a", f32(5, 19), False), ("b", f32(19, 11), True), ("c", f32(11), True)],
                 {"transA": 0, "transB": 0, "alpha": 1.0, "beta": 1.0}),
        one_call("Softmax", [("x", f32(3, 17), False)], {"axis": -1}),
        one_call("LayerNormalization", [("x", f32(2, 3, 16), False), ("g", f32(16), True), ("b", f32(16), True)],
                 {"axis": -1, "epsilon": 1e-5}),
    ]
    for program, feeds, expected in built:
        assert_close(run_program_blob(program, feeds, runner=armv7_runner(), prefix=qemu_arm("cortex-a7")), expected)


@pytest.mark.slow
def test_armv7_runs_the_neon_gemm_and_refuses_the_aarch64_only_paths():
    # qemu's cortex-a7 has NEON (HWCAP_NEON): the selector picks the NEON int8 GEMM, the portable
    # C one agrees with it, and the sdot / smmla / AVX2 kernels are refused by name instead of
    # running an instruction the core does not have.
    program, feeds, expected = cases.conv(np.random.default_rng(4), c=3, o=4, hw=(5, 5), k=(3, 3))
    blob = write_blob(program)
    for isa in ("auto", "c", "neon"):
        outputs, proc = run_blob(blob, program, feeds, armv7_runner(), prefix=qemu_arm("cortex-a7"), args=("--isa", isa))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["isa"] == ("neon" if isa == "auto" else isa)
        np.testing.assert_array_equal(outputs["y0"], expected["y0"])
    for isa in ("dotprod", "i8mm", "avx2"):
        _, proc = run_blob(blob, program, feeds, armv7_runner(), prefix=qemu_arm("cortex-a7"), args=("--isa", isa))
        assert proc.returncode == 5 and f"{isa} refused" in proc.stderr, (isa, proc.stderr)


@pytest.mark.slow
def test_armv7_neon_gemm_inside_guard_pages_and_its_instruction_count(tmp_path):
    # The int8 GEMM driver of the aarch64 tests, every file built for armv7-a + NEON-VFPv4 with
    # -Werror -pedantic: the NEON kernel matches the C reference on every k tail and edge shape
    # with each operand flush against a PROT_NONE page (one byte out of bounds faults), and it
    # runs the 64x64x576 im2col block in far fewer guest instructions than the C kernel.
    from edgekiln.backends.arm_cpu.insn_plugin import build_plugin
    from tests.runtime_arm.test_gemm_kernels import (
        AARCH64_FLAGS,
        COUNT_SHAPE,
        build_driver,
        run,
    )

    if shutil.which(ARM_CC) is None or shutil.which("qemu-arm") is None:
        pytest.skip("needs arm-linux-gnueabihf-gcc and qemu-arm (Debian: gcc-arm-linux-gnueabihf, qemu-user)")
    driver = build_driver(ARM_CC, {name: ["-march=armv7-a", "-mfpu=neon-vfpv4"] for name in AARCH64_FLAGS},
                          tmp_path, ["-static"])
    result = run(["qemu-arm", "-cpu", "cortex-a7", str(driver), "selftest", "neon", "5"])
    assert result.returncode == 0 and "0 failed" in result.stdout, result.stdout[-2000:] + result.stderr
    plugin = build_plugin()

    def instructions_per_call(isa: str) -> int:
        counts = []
        for reps in (1, 2):
            out = run(["qemu-arm", "-cpu", "cortex-a7", "-plugin", str(plugin), "-d", "plugin", str(driver), "repeat",
                       isa, *map(str, COUNT_SHAPE), str(reps)])
            counts.append(int(re.search(r"insns: (\d+)", out.stderr)[1]))
        return counts[1] - counts[0]

    neon, portable = instructions_per_call("neon"), instructions_per_call("c")
    assert neon * 5 < portable, (neon, portable)  # measured: 1.04 M vs 11.8 M guest instructions


@pytest.mark.slow
@pytest.mark.parametrize("field", ["arena", "tensor_bytes"])
def test_loader_refuses_sizes_a_32_bit_size_t_cannot_hold(field):
    # A (size_t) cast of these 64-bit fields would drop the high word on armv7: 2^32 + n reads as n
    # and the blob would load with the wrong sizes.  The 64-bit runtime calls them corrupt anyway.
    program, feeds, _ = cases.conv(np.random.default_rng(5), c=3, o=4, hw=(5, 5), k=(3, 3))
    view = BlobView(write_blob(program))
    if field == "arena":
        arena, = struct.unpack_from("<Q", view.data, 48)
        view.put(48, "<Q", arena + (1 << 32))
    else:
        offset = view.tensor(0) + 64
        nbytes, = struct.unpack_from("<Q", view.data, offset)
        view.put(offset, "<Q", nbytes + (1 << 32))
    _, proc = run_blob(view.sealed(), program, feeds, armv7_runner(), prefix=qemu_arm("cortex-a7"))
    assert proc.returncode != 0
    assert "do not fit this 32-bit runtime's address space" in proc.stderr or \
           "does not fit this 32-bit runtime's address space" in proc.stderr, proc.stderr


# -- whole models compiled for cortex-a7 ----------------------------------------------------------------
@functools.cache
def _compiled(name: str, quant: str | None):
    import edgekiln
    from tests.zoo import input_shapes, model_path, sample_input

    options = {} if quant is None else {"quant": quant, "calib": [sample_input(name, seed=s) for s in range(1, 5)]}
    return edgekiln.compile(model_path(name), "cortex-a7", input_shapes=input_shapes(name), progress=False, **options)


@pytest.mark.slow
@pytest.mark.parametrize("name,quant", [("lenet_mnist", "int8"), ("ppocr_cls", "int8"), ("resnet_basic", "int4:g32"),
                                        ("inverted_residual", "ternary")])
def test_models_bit_exact_on_cortex_a7(name, quant):
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.backends.reference.runner import ReferenceRunner
    from tests.zoo import sample_input

    armv7_runner()
    artifact = _compiled(name, quant)
    config = json.loads(artifact.files["arm_cpu.json"])
    assert config["arch"] == "arm" and config["qemu_cpu"] == "cortex-a7"
    runner = ArmCpuRunner(artifact.files, artifact.manifest)
    assert Path(runner.transport.prefix[0]).name == "qemu-arm"
    feeds = sample_input(name, seed=14)
    got = runner.run(feeds)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.slow
def test_float32_model_on_cortex_a7_matches_onnxruntime():
    from tests.conftest import max_relative_error, run_ort
    from tests.zoo import model_path, sample_input

    armv7_runner()
    name = "tiny_transformer"
    feeds = sample_input(name, seed=15)
    got = _compiled(name, None).run(feeds)
    for k, key in enumerate(got):
        assert max_relative_error(run_ort(model_path(name), feeds)[k], got[key]) < 1e-4, key


@pytest.mark.slow
def test_instruction_counts_work_for_armv7_guests():
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from tests.zoo import sample_input

    armv7_runner()
    artifact = _compiled("lenet_mnist", "int8")
    counts, stats = ArmCpuRunner(artifact.files, artifact.manifest).count_instructions(sample_input("lenet_mnist",
                                                                                                   seed=3))
    assert len(counts.per_call) == len(stats["profile"]) and all(c > 0 for c in counts.per_call)
    assert sum(counts.per_call) <= counts.total

