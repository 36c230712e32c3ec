"""`edgekiln compile --emit c-library`: the static library, header, blob, example and Makefile.

The generated example is built with `make` against the library (the host compiler for a host
model, the aarch64 cross compiler for cortex-a76) and run (natively / under qemu-aarch64); its
output files must equal, byte for byte, what `edgekiln run` (ek_run) computes for the same
artifact, both from the linked-in blob and from model.blob loaded as a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

import edgekiln
from edgekiln.backends.arm_cpu.c_library import LIBRARY, write_c_library
from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
from edgekiln.backends.reference.runner import ReferenceRunner
from edgekiln.cli import main
from edgekiln.errors import OptionError
from tests.runtime_arm.harness import aarch64_runner
from tests.support.graphs import conv_relu_model
from tests.zoo import input_shapes, model_path, sample_input

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make_and_run(folder, prefix: list[str], feeds: dict[str, np.ndarray], specs, extra: list[str] = ()):
    subprocess.run(["make", "-s", "-C", str(folder)], check=True, capture_output=True, text=True)
    args = []
    for k, spec in enumerate(specs["inputs"]):
        path = folder / f"in{k}.bin"
        path.write_bytes(np.ascontiguousarray(feeds[spec["name"]], dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
                         .tobytes())
        args.append(str(path))
    outputs = [folder / f"out{k}.bin" for k in range(len(specs["outputs"]))]
    proc = subprocess.run([*prefix, str(folder / "example" / "ek_example"), *extra, *args, *map(str, outputs)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return {spec["name"]: np.frombuffer(out.read_bytes(), np.dtype(spec["dtype"]).newbyteorder("<"))
            .reshape(spec["shape"]) for spec, out in zip(specs["outputs"], outputs)}


def test_non_arm_artifact_is_refused(tmp_path):
    fake = SimpleNamespace(files={"model.onnx": b""}, manifest={"runner": "litert"})
    with pytest.raises(OptionError, match="--emit c-library needs an arm_cpu target"):
        write_c_library(fake, tmp_path / "out")


@needs_make
@pytest.mark.slow
def test_host_library_example_matches_edgekiln_run(tmp_path, save_model):
    model = save_model(conv_relu_model())
    out = tmp_path / "clib"
    result = CliRunner().invoke(main, ["compile", str(model), "--emit", "c-library", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {LIBRARY, "model.blob", "Makefile", "include", "example", "src"} <= {p.name for p in out.iterdir()}
    header = (out / "include" / "ek_model.h").read_text()
    assert "#define EK_MODEL_NUM_INPUTS 1" in header and "float32[1, 3, 8, 8], 768 bytes" in header

    artifact = edgekiln.compile(model)
    x = {"x": np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    expected = ArmCpuRunner(artifact.files, artifact.manifest, transport="local").run(x)
    got = _make_and_run(out, [], x, artifact.manifest)
    np.testing.assert_array_equal(got["y"], expected["y"])
    from_file = _make_and_run(out, [], x, artifact.manifest, ["--blob", str(out / "model.blob"), "--threads", "2"])
    np.testing.assert_array_equal(from_file["y"], expected["y"])

    (tmp_path / "bad.blob").write_bytes((out / "model.blob").read_bytes()[:100])
    proc = subprocess.run([str(out / "example" / "ek_example"), "--blob", str(tmp_path / "bad.blob"),
                           str(out / "in0.bin"), str(out / "o.bin")], capture_output=True, text=True, check=False)
    assert proc.returncode == 3 and "error:" in proc.stderr


@needs_make
@pytest.mark.slow
def test_cortex_a76_int8_library_is_bit_exact_under_qemu(tmp_path):
    aarch64_runner()  # skips without the cross compiler / qemu
    name = "digits_cnn"
    artifact = edgekiln.compile(model_path(name), "cortex-a76", input_shapes=input_shapes(name), quant="int8",
                                calib=[sample_input(name, seed=s) for s in range(1, 5)], progress=False)
    out = write_c_library(artifact, tmp_path / "clib")
    machine = subprocess.run(["file", str(out / LIBRARY)], capture_output=True, text=True, check=False).stdout
    assert "ar archive" in machine or not machine
    feeds = artifact._check_inputs(sample_input(name, seed=7))
    got = _make_and_run(out, ["qemu-aarch64", "-cpu", "cortex-a76"], feeds, artifact.manifest)
    ek_run = ArmCpuRunner(artifact.files, artifact.manifest).run(feeds)
    reference = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    for spec in artifact.manifest["outputs"]:
        np.testing.assert_array_equal(got[spec["name"]], ek_run[spec["name"]])
        np.testing.assert_array_equal(got[spec["name"]], reference[spec["name"]])
    assert os.access(out / "example" / "ek_example", os.X_OK)
