"""Finding the C compiler (with a clear error when it is missing or builds for the wrong
architecture), the per-ISA compile commands, and the content-hashed build cache."""

from __future__ import annotations

import os

import pytest

from edgekiln.backends.arm_cpu.toolchain import (
    ISA_FLAGS,
    ToolchainError,
    build_program,
    compile_commands,
    find_toolchain,
    runtime_sources,
)
from edgekiln.errors import EdgekilnError
from tests.runtime_arm.harness import HOST_ARCH


def test_missing_compiler_names_it_the_package_and_the_options(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(ToolchainError) as info:
        find_toolchain("aarch64", "no-such-aarch64-gcc")
    message = str(info.value)
    assert isinstance(info.value, EdgekilnError)
    for fragment in ("'no-such-aarch64-gcc'", "gcc-aarch64-linux-gnu", "--toolchain", "CC"):
        assert fragment in message
    monkeypatch.setenv("CC", "also-missing-cc")
    with pytest.raises(ToolchainError, match="'also-missing-cc' \\(\\$CC\\) not found"):
        find_toolchain("aarch64")


def test_a_host_compiler_is_not_taken_for_an_arm_target(monkeypatch):
    if HOST_ARCH == "aarch64":
        pytest.skip("the host compiler is an aarch64 compiler here")
    monkeypatch.setenv("CC", "cc")
    with pytest.raises(ToolchainError, match="builds for x86_64.*the target needs aarch64"):
        find_toolchain("aarch64")


def test_compile_through_the_api_reports_the_missing_compiler(tmp_path):
    import onnx
    from onnx import helper

    from edgekiln.compiler.compile import compile_model

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ToolchainError, match="gcc-aarch64-linux-gnu"):
        compile_model(model, "cortex-a76", toolchain="no-such-gcc", progress=False)


def test_isa_files_get_their_flags_on_their_architecture_only(tmp_path):
    sources = runtime_sources()
    assert "src/runner_main.c" in sources and "src/gemm/gemm_s8_ref.c" in sources
    for arch, cc in (("aarch64", "aarch64-linux-gnu-gcc"), ("x86_64", "cc")):
        from edgekiln.backends.arm_cpu.toolchain import Toolchain

        commands = compile_commands(Toolchain(cc, arch, f"{arch}-linux-gnu", "test"), sources, tmp_path, "ek_run")
        by_source = {c[c.index("-c") + 1]: c for c in commands[:-1]}
        for name, (isa_arch, flags) in ISA_FLAGS.items():
            command = by_source[f"src/gemm/{name}"]
            assert all((f in command) == (isa_arch == arch) for f in flags), (arch, name)
        assert "-march=armv8.2-a+dotprod" not in by_source["src/gemm/gemm_s8_select.c"]
        assert "-static" in commands[-1]


def test_build_is_cached_by_content():
    tc = find_toolchain(HOST_ARCH)
    first = build_program(tc)
    second = build_program(tc)
    assert second.cached and second.path == first.path and second.seconds == 0.0
    assert os.access(second.path, os.X_OK)


@pytest.mark.slow
def test_builds_are_byte_for_byte_reproducible(tmp_path, monkeypatch):
    tc = find_toolchain(HOST_ARCH)
    default = build_program(tc).path.read_bytes()
    monkeypatch.setenv("EDGEKILN_CACHE", str(tmp_path))
    fresh = build_program(tc)
    assert not fresh.cached and fresh.seconds > 0 and str(fresh.path).startswith(str(tmp_path))
    assert fresh.path.read_bytes() == default
