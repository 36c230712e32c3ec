"""The command line: the happy path, and every kind of bad input (exit 2, one clear line, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgekiln.cli import main
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import conv_relu_model, single_op_model

X = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") or "Error:" in result.output, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output.replace("\n", " "), result.output


def assert_nothing_written(folder: Path, keep: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == keep


@pytest.fixture
def model_file(save_model) -> Path:
    return save_model(conv_relu_model())


def test_targets_lists_the_bundled_devices():
    result = invoke("targets")
    assert result.exit_code == 0, result.output
    for name in ("host", "cortex-a53", "cortex-a76", "mali-g76", "edgetpu", "kv260"):
        assert name in result.output


def test_compile_then_run_matches_onnxruntime(tmp_path, model_file):
    out = tmp_path / "artifact"
    result = invoke("compile", model_file, "--target", "host", "-o", out)
    assert result.exit_code == 0, result.output
    assert "arena" in result.output and "naive" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["name"] == "host"
    assert manifest["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8], "layout": "NCHW", "quant": None}]
    np.save(tmp_path / "x.npy", X)
    result = invoke("run", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    expected = run_ort(conv_relu_model(), {"x": X})[0]
    assert max_relative_error(expected, np.load(tmp_path / "y.npy")) <= 1e-6


def test_compile_is_byte_for_byte_reproducible(tmp_path, model_file):
    for name in ("a", "b"):
        assert invoke("compile", model_file, "-o", tmp_path / name).exit_code == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_emit_onnx_writes_the_optimized_model(tmp_path, model_file):
    out = tmp_path / "optimized.onnx"
    result = invoke("compile", model_file, "--emit", "onnx", "-o", out, "--explain")
    assert result.exit_code == 0, result.output
    assert "removed 1 Identity" in result.output
    optimized = onnx.load(out)
    assert [n.op_type for n in optimized.graph.node] == ["FusedConvRelu"]
    assert "fused conv (Conv) + relu (Relu) into conv (FusedConvRelu)" in result.output
    assert max_relative_error(run_ort(conv_relu_model(), {"x": X})[0], run_ort(optimized, {"x": X})[0]) <= 1e-5


def test_inspect_reports_dynamic_dims_and_layers(save_model):
    path = save_model(conv_relu_model(batch="N"))
    result = invoke("inspect", path, "--target", "cortex-a76")
    assert result.exit_code == 0, result.output
    assert "Conv" in result.output and "cortex-a76" in result.output


def test_run_with_a_wrong_input_shape_is_refused(tmp_path, model_file):
    out = tmp_path / "artifact"
    assert invoke("compile", model_file, "-o", out).exit_code == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 4, 4), np.float32))
    assert_user_error(invoke("run", out, "--input", tmp_path / "x.npy"), "'x'", "[1, 3, 4, 4]", "--input-shape")


def test_run_refuses_a_corrupted_artifact(tmp_path, model_file):
    out = tmp_path / "artifact"
    assert invoke("compile", model_file, "-o", out).exit_code == 0
    with open(out / "model.onnx", "ab") as f:
        f.write(b"tampered")
    np.save(tmp_path / "x.npy", X)
    assert_user_error(invoke("run", out, "--input", tmp_path / "x.npy"), "model.onnx", "checksum")


# -- bad input: exit code 2, a message naming the file/node/option, nothing half-written ------

def test_truncated_model(tmp_path, model_file):
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(model_file.read_bytes()[:100])
    assert_user_error(invoke("compile", truncated, "-o", tmp_path / "out"), "cut.onnx", "truncated")
    assert_nothing_written(tmp_path, {"model.onnx", "cut.onnx"})


def test_file_that_is_not_onnx(tmp_path):
    path = tmp_path / "photo.onnx"
    path.write_bytes(bytes(range(256)) * 8)
    assert_user_error(invoke("compile", path, "-o", tmp_path / "out"), "photo.onnx")
    assert_nothing_written(tmp_path, {"photo.onnx"})


def test_op_no_target_supports(tmp_path, save_model):
    path = save_model(single_op_model("FancyOp", [1, 4], domain="com.example"), "custom.onnx")
    assert_user_error(invoke("compile", path, "-o", tmp_path / "out"), "fancyop_node", "FancyOp", "com.example")
    assert_nothing_written(tmp_path, {"custom.onnx"})


def test_dynamic_shape_without_input_shape(tmp_path, save_model):
    path = save_model(conv_relu_model(batch="N"))
    assert_user_error(invoke("compile", path, "-o", tmp_path / "out"), "'x'", "--input-shape x=Nx3x8x8")
    assert_nothing_written(tmp_path, {"model.onnx"})
    assert invoke("compile", path, "-o", tmp_path / "out", "--input-shape", "x=1x3x8x8").exit_code == 0


def test_malformed_input_shape_option(tmp_path, model_file):
    assert_user_error(invoke("compile", model_file, "-o", tmp_path / "out", "--input-shape", "x=1x3xbig"),
                      "--input-shape", "x=1x3xbig")


def test_external_data_escaping_the_model_folder(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.data").write_bytes(b"\0" * 512)
    model = conv_relu_model()
    onnx.save(model, folder / "model.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    saved = onnx.load(folder / "model.onnx", load_external_data=False)
    for tensor in saved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.data"
    onnx.save(saved, folder / "model.onnx")
    assert_user_error(invoke("compile", folder / "model.onnx", "-o", tmp_path / "out"), "../secret.data", "outside")
    assert not (tmp_path / "out").exists()


def test_unknown_target(tmp_path, model_file):
    assert_user_error(invoke("compile", model_file, "--target", "cortex-a77", "-o", tmp_path / "out"),
                      "cortex-a77", "edgekiln targets")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_unless_forced(tmp_path, model_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert_user_error(invoke("compile", model_file, "-o", out), str(out), "--force")
    assert (out / "keep.txt").read_text() == "user data"
    assert invoke("compile", model_file, "-o", out, "--force").exit_code == 0
    assert (out / "manifest.json").is_file() and not (out / "keep.txt").exists()
    assert_nothing_written(tmp_path, {"model.onnx", "out"})  # no staging folders left behind


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "compile", str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and result.exception is not None


def test_a_missing_cross_compiler_is_named(tmp_path, model_file):
    result = invoke("compile", model_file, "-t", "cortex-a76", "-o", tmp_path / "out", "--toolchain", "no-such-gcc")
    assert_user_error(result, "no-such-gcc", "gcc-aarch64-linux-gnu", "--toolchain")
    assert not (tmp_path / "out").exists()
