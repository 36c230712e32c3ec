"""Other compilers than the Debian cross gcc: a plain `clang` (told `--target=<Debian triple>` and
finding the Debian cross sysroot) builds a runner that is bit-exact under qemu-aarch64 on every ISA
path; an Android NDK clang (named by triple + API level, found by path, on PATH or under
$ANDROID_NDK_HOME) gets the bionic link (dynamic PIE), checked on the commands it would run since no
NDK or Android device is here; and each missing piece fails with a message saying what to install.

The NDK is imitated by a wrapper script named like the NDK's (`aarch64-linux-android21-clang`) that
runs Debian's clang with `--target=aarch64-linux-android21`, which is what the NDK's own wrappers do."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from edgekiln.backends.arm_cpu.toolchain import (
    NDK_URL,
    Toolchain,
    ToolchainError,
    build_program,
    compile_commands,
    find_toolchain,
    runtime_sources,
)
from edgekiln.errors import EdgekilnError
from tests.runtime_arm.harness import assert_bit_exact, qemu, run_program_blob
from tests.runtime_arm.test_kernels_int8 import QEMU_CASES

needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="no clang (Debian: apt-get install clang)")
NDK_ENV = ("ANDROID_NDK_HOME", "ANDROID_NDK_ROOT", "ANDROID_NDK")


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _fake_ndk(root: Path, name: str, triple: str) -> Path:
    """An NDK-shaped folder whose compiler wrapper runs Debian's clang for `triple`."""
    return _script(root / "toolchains" / "llvm" / "prebuilt" / "linux-x86_64" / "bin" / name,
                   f'exec clang --target={triple} "$@"\n')


# -- plain clang -----------------------------------------------------------------------------------
@needs_clang
def test_plain_clang_is_told_the_debian_triple_and_drops_gcc_only_flags(tmp_path):
    tc = find_toolchain("aarch64", "clang")
    assert tc.flags == ("--target=aarch64-linux-gnu",) and tc.machine.startswith("aarch64") and tc.clang
    commands = compile_commands(tc, runtime_sources(), tmp_path, "ek_run")
    assert all("--target=aarch64-linux-gnu" in c for c in commands)
    assert not any("-fvect-cost-model=cheap" in c for c in commands)  # clang: "unknown argument"
    assert "-static" in commands[-1]
    armv7 = find_toolchain("arm", "clang")
    assert armv7.flags[0] == "--target=arm-linux-gnueabihf" and "-march=armv7-a" in armv7.flags


def test_missing_clang_names_clang_and_the_sysroot_package(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(ToolchainError) as info:
        find_toolchain("aarch64", "clang-99")
    assert "'clang-99' (--toolchain) not found" in str(info.value)
    assert "apt-get install clang gcc-aarch64-linux-gnu" in str(info.value)


def test_clang_without_the_cross_sysroot_says_which_package_has_it(tmp_path, monkeypatch):
    # a 'clang' that cannot find <stdio.h> for its --target, as on a machine without the cross libc
    _script(tmp_path / "bin" / "clang",
            'case "$*" in *-dumpmachine*) echo aarch64-unknown-linux-gnu; exit 0;; esac\n'
            'case "$1" in --version) echo "Debian clang version 99"; exit 0;; esac\n'
            "echo \"src/blob.c:14:10: fatal error: 'stdio.h' file not found\" >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("EDGEKILN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ToolchainError) as info:
        build_program(find_toolchain("aarch64", "clang"))
    message = str(info.value)
    assert "'stdio.h' file not found" in message
    assert "clang --target=aarch64-linux-gnu takes headers and libc from /usr/aarch64-linux-gnu" in message
    assert "apt-get install gcc-aarch64-linux-gnu" in message


# -- Android NDK clang ---------------------------------------------------------------------------------
def test_ndk_link_is_a_dynamic_pie_and_every_object_is_position_independent(tmp_path):
    tc = Toolchain("/ndk/toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android21-clang", "aarch64",
                   "aarch64-unknown-linux-android21", "Android (1234, based on r487747) clang version 17.0.2")
    assert tc.android and tc.clang
    commands = compile_commands(tc, runtime_sources(), tmp_path, "ek_run")
    assert all("-fPIE" in c and "-fvect-cost-model=cheap" not in c for c in commands[:-1])
    link = commands[-1]
    assert "-pie" in link and "-static" not in link and "-lm" in link
    # the NDK's wrapper already passes its own --target: none is added
    assert not any(flag.startswith("--target=") for c in commands for flag in c)


@needs_clang
def test_ndk_clang_is_found_under_android_ndk_home(tmp_path, monkeypatch):
    for variable in NDK_ENV:
        monkeypatch.delenv(variable, raising=False)
    wrapper = _fake_ndk(tmp_path / "ndk", "aarch64-linux-android21-clang", "aarch64-linux-android21")
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path / "ndk"))
    tc = find_toolchain("aarch64", "aarch64-linux-android21-clang")
    assert tc.cc == str(wrapper) and tc.android and tc.flags == ()
    assert tc.machine == "aarch64-unknown-linux-android21"
    by_path = find_toolchain("aarch64", str(wrapper))  # a full path works without the variable
    assert by_path.cc == str(wrapper)
    armv7 = find_toolchain("arm", str(_fake_ndk(tmp_path / "ndk", "armv7a-linux-androideabi21-clang",
                                               "armv7a-linux-androideabi21")))
    assert armv7.android and armv7.arch == "arm" and "-march=armv7-a" in armv7.flags


def test_missing_ndk_clang_explains_where_to_get_it(tmp_path, monkeypatch):
    for variable in NDK_ENV:
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ToolchainError) as info:
        find_toolchain("aarch64", "aarch64-linux-android21-clang")
    message = str(info.value)
    assert isinstance(info.value, EdgekilnError)
    assert "Android NDK compiler 'aarch64-linux-android21-clang' (--toolchain) not found" in message
    assert NDK_URL in message and "ANDROID_NDK_HOME" in message
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path / "empty-ndk"))
    with pytest.raises(ToolchainError, match=r"searched .*empty-ndk/toolchains/llvm/prebuilt/\*/bin"):
        find_toolchain("aarch64", "aarch64-linux-android21-clang")


# -- a clang-built runner under qemu (slow: one build) -------------------------------------------------
@functools.cache
def _clang_runner() -> Path | None:
    try:
        return build_program(find_toolchain("aarch64", "clang")).path
    except ToolchainError:
        return None


def clang_runner() -> Path:
    if shutil.which("clang") is None or shutil.which("qemu-aarch64") is None:
        pytest.skip("no clang or qemu-aarch64 (Debian: clang, qemu-user)")
    runner = _clang_runner()
    if runner is None:
        pytest.skip("clang cannot build for aarch64 here (Debian: gcc-aarch64-linux-gnu provides the sysroot)")
    return runner


@pytest.mark.slow
@pytest.mark.parametrize("cpu,isa", [("cortex-a53", "neon"), ("cortex-a76", "dotprod"), ("max", "i8mm")])
def test_clang_runner_is_bit_exact_on_every_isa_path(cpu, isa):
    runner = clang_runner()
    for name in ("conv", "conv_int4_groups", "fc_ternary_groups", "matmul", "softmax", "layer_norm"):
        program, feeds, expected = QEMU_CASES[name](np.random.default_rng(len(name)))
        assert_bit_exact(run_program_blob(program, feeds, runner=runner, prefix=qemu(cpu), args=("--isa", isa)),
                         expected)


@pytest.mark.slow
def test_compile_with_toolchain_clang_runs_bit_exact():
    import edgekiln
    from edgekiln.backends.reference.runner import ReferenceRunner
    from tests.zoo import input_shapes, model_path, sample_input

    clang_runner()
    name = "digits_cnn"
    artifact = edgekiln.compile(model_path(name), "cortex-a76", input_shapes=input_shapes(name), quant="int8",
                                calib=[sample_input(name, seed=s) for s in range(1, 5)], toolchain="clang",
                                progress=False)
    config = json.loads(artifact.files["arm_cpu.json"])
    assert config["arch"] == "aarch64" and "clang" in config["compiler"]
    feeds = sample_input(name, seed=9)
    got = artifact.run(feeds)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
