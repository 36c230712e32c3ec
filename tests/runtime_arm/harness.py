"""Shared by the runtime_arm and arm_cpu backend tests: the compiled runners (built once per
test session through the toolchain cache), one-call Programs with their reference outputs,
and running a blob through `ek_run` on the host or under qemu-aarch64.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.arm_cpu.toolchain import (
    ToolchainError,
    build_program,
    find_toolchain,
    machine_arch,
)
from edgekiln.backends.reference import float_ops
from edgekiln.backends.reference.interpreter import KERNELS, run_program
from edgekiln.compiler.memory_planner import plan_arena
from edgekiln.compiler.program import KernelCall, Program, QuantParams, TensorSpec

HOST_ARCH = machine_arch(os.uname().machine)
SANITIZER_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")


@functools.cache
def host_runner() -> Path:
    return build_program(find_toolchain(HOST_ARCH)).path


@functools.cache
def _aarch64_runner() -> Path | None:
    try:
        return build_program(find_toolchain("aarch64")).path
    except ToolchainError:
        return None


def aarch64_runner() -> Path:
    """The static aarch64 ek_run; skips the test without the cross compiler or qemu-aarch64."""
    runner = _aarch64_runner()
    if runner is None:
        pytest.skip("no aarch64 cross compiler (Debian: gcc-aarch64-linux-gnu)")
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("no qemu-aarch64 (Debian: qemu-user)")
    return runner


def qemu(cpu: str) -> tuple[str, ...]:
    return ("qemu-aarch64", "-cpu", cpu)


@functools.cache
def _sanitized_fuzzer() -> Path | None:
    try:
        return build_program(find_toolchain(HOST_ARCH), main="fuzz/fuzz_blob.c", output="fuzz_blob",
                             extra_flags=SANITIZER_FLAGS, static=False).path
    except ToolchainError:
        return None


def sanitized_fuzzer() -> Path:
    path = _sanitized_fuzzer()
    if path is None:
        pytest.skip("the host compiler cannot build with AddressSanitizer / UBSan")
    return path


# -- one-call programs ------------------------------------------------------------------------
def one_call(op: str, operands: list[tuple[str, np.ndarray, bool]], attrs: dict[str, Any] | None = None, *,
             out_dtypes: tuple[str, ...] = ("float32",), quant: dict[str, QuantParams] | None = None,
             n_outputs: int = 1) -> tuple[Program, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A Program of one `op` call over `operands` (name, value, is_constant), its feeds, and the
    integer reference's outputs (which also fix the output shapes)."""
    attrs = attrs or {}
    quant = quant or {}
    tensors, constants, feeds = {}, {}, {}
    for name, value, is_const in operands:
        if is_const:
            constants[name] = value
        else:
            feeds[name] = value
        tensors[name] = TensorSpec(name, value.dtype.name, value.shape, kind="constant" if is_const else "input",
                                   quant=quant.get(name))
    outputs = tuple(f"y{k}" for k in range(n_outputs))
    call = KernelCall(name=op.lower(), op=op, inputs=tuple(n for n, _, _ in operands), outputs=outputs, attrs=attrs)
    args = [v for _, v, _ in operands]
    if op in KERNELS:
        results = KERNELS[op](call, args)
    else:
        dtypes = [out_dtypes[min(k, len(out_dtypes) - 1)] for k in range(n_outputs)]
        provisional = {**tensors, **{o: TensorSpec(o, dtypes[k], (), kind="output") for k, o in enumerate(outputs)}}
        stub = Program(provisional, constants, [call], list(feeds), list(outputs), plan_arena(provisional, [call]))
        results = float_ops.run_float_call(float_ops.build_evaluator(stub, call), call, args)
    for k, o in enumerate(outputs):
        result = np.asarray(results[k])
        tensors[o] = TensorSpec(o, result.dtype.name, result.shape, kind="output")
    program = Program(tensors, constants, [call], list(feeds), list(outputs), plan_arena(tensors, [call]))
    program.validate()
    return program, feeds, run_program(program, feeds)


# -- running ------------------------------------------------------------------------------------
def run_blob(blob: bytes, program: Program, feeds: dict[str, np.ndarray], runner: Path,
             prefix: tuple[str, ...] = (), args: tuple[str, ...] = (), timeout: float = 300
             ) -> tuple[dict[str, np.ndarray], subprocess.CompletedProcess]:
    """Run `blob` with `runner` (under `prefix`, e.g. qemu); outputs as the program types them."""
    with tempfile.TemporaryDirectory(prefix="ek-test-") as tmp:
        work = Path(tmp)
        (work / "m.blob").write_bytes(blob)
        cmd = [*prefix, str(runner), "m.blob"]
        for k, name in enumerate(program.inputs):
            spec = program.tensors[name]
            (work / f"i{k}.bin").write_bytes(np.ascontiguousarray(feeds[name], dtype=spec.dtype).tobytes())
            cmd += ["--input", f"{name}=i{k}.bin"]
        for k, name in enumerate(program.outputs):
            cmd += ["--output", f"{name}=o{k}.bin"]
        proc = subprocess.run([*cmd, *args], cwd=work, capture_output=True, text=True, timeout=timeout, check=False)
        outputs = {}
        if proc.returncode == 0:
            for k, name in enumerate(program.outputs):
                spec = program.tensors[name]
                outputs[name] = np.frombuffer((work / f"o{k}.bin").read_bytes(), spec.dtype).reshape(spec.shape)
        return outputs, proc


def run_program_blob(program: Program, feeds: dict[str, np.ndarray], runner: Path | None = None,
                     prefix: tuple[str, ...] = (), args: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    outputs, proc = run_blob(write_blob(program), program, feeds, runner or host_runner(), prefix, args)
    assert proc.returncode == 0, f"ek_run failed ({proc.returncode}): {proc.stderr}"
    return outputs


def assert_bit_exact(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=f"output {name!r}")


def assert_close(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], rel: float = 1e-4) -> None:
    """Float outputs within `rel` of the output's own scale (max |expected|); others exact."""
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        value = np.asarray(value)
        if value.dtype.kind != "f":
            np.testing.assert_array_equal(got[name], value, err_msg=f"output {name!r}")
            continue
        scale = float(np.max(np.abs(value))) if value.size else 1.0
        err = float(np.max(np.abs(got[name].astype(np.float64) - value))) if value.size else 0.0
        assert err <= rel * (scale or 1.0), f"output {name!r}: max error {err:.3g} vs scale {scale:.3g}"
