"""The arm_cpu backend end to end through `edgekiln.compile`: an artifact with the model blob,
a static runner for the target's architecture and its run configuration; `Artifact.run` runs
it on the host (target `host`) or under qemu-aarch64 (target `cortex-a76`), agreeing with the
references; saved artifacts reload, reproduce byte for byte, and run from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgekiln
from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
from edgekiln.backends.reference.runner import ReferenceRunner
from edgekiln.cli import main
from tests.conftest import max_relative_error, run_ort
from tests.runtime_arm.harness import aarch64_runner
from tests.support.graphs import conv_relu_model
from tests.zoo import input_shapes, model_path, sample_input

ELF_MACHINES = {62: "x86_64", 183: "aarch64"}


def _elf_machine(data: bytes) -> str:
    assert data[:4] == b"\x7fELF"
    return ELF_MACHINES.get(int.from_bytes(data[18:20], "little"), "?")


def test_host_float_artifact_runs_natively(save_model):
    path = save_model(conv_relu_model())
    artifact = edgekiln.compile(path)
    assert artifact.manifest["runner"] == "arm_cpu"
    assert {"model.blob", "bin/ek_run", "arm_cpu.json"} <= set(artifact.files)
    config = json.loads(artifact.files["arm_cpu.json"])
    assert config["arch"] == _elf_machine(artifact.files["bin/ek_run"]) and config["qemu_cpu"] is None
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = artifact.run(x)["y"]
    assert max_relative_error(run_ort(path, {"x": x})[0], got) < 1e-4


@pytest.fixture(scope="module")
def digits_int8_a76():
    aarch64_runner()  # skips without the cross compiler / qemu
    name = "digits_cnn"
    return edgekiln.compile(model_path(name), "cortex-a76", input_shapes=input_shapes(name), quant="int8",
                            calib=[sample_input(name, seed=s) for s in range(1, 5)], progress=False)


def test_cortex_a76_int8_artifact_is_aarch64_and_bit_exact_under_qemu(digits_int8_a76):
    artifact = digits_int8_a76
    config = json.loads(artifact.files["arm_cpu.json"])
    assert config["arch"] == "aarch64" == _elf_machine(artifact.files["bin/ek_run"])
    assert config["qemu_cpu"] == "cortex-a76" and "dotprod" in config["features"]
    runner = ArmCpuRunner(artifact.files, artifact.manifest)
    assert runner.transport.name == "qemu" and runner.transport.prefix[-2:] == ("-cpu", "cortex-a76")
    x = sample_input("digits_cnn", seed=9)
    got = artifact.run(x)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(x)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    stats = runner.bench(x, repeat=3, warmup=1)
    assert stats["isa"] == "dotprod" and stats["transport"] == "qemu"
    assert [c["op"] for c in stats["profile"]][:2] == ["Quantize", "QConv2D"]


def test_artifact_saves_reloads_and_reproduces(tmp_path, save_model):
    path = save_model(conv_relu_model())
    first = edgekiln.compile(path).save(tmp_path / "a")
    second = edgekiln.compile(path).save(tmp_path / "b")
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    loaded = edgekiln.load(first)
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_array_equal(loaded.run(x)["y"], edgekiln.compile(path).run(x)["y"])


def test_cli_compile_for_cortex_a76_and_run(tmp_path, save_model):
    aarch64_runner()
    path = save_model(conv_relu_model())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(path), "--target", "cortex-a76", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "runs with   arm_cpu" in result.output
    assert (out / "model.blob").is_file() and (out / "bin" / "ek_run").is_file()
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(main, ["run", str(out), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    got = np.load(tmp_path / "y.npz")["y"]
    assert max_relative_error(run_ort(path, {"x": x})[0], got) < 1e-4


def test_a_crash_or_a_refusal_is_an_artifact_error(save_model):
    artifact = edgekiln.compile(save_model(conv_relu_model()))
    broken = dict(artifact.files)
    broken["model.blob"] = artifact.files["model.blob"][:-10]
    with pytest.raises(edgekiln.EdgekilnError, match="the model blob does not load.*truncated"):
        ArmCpuRunner(broken, artifact.manifest).run({"x": np.zeros((1, 3, 8, 8), np.float32)})
