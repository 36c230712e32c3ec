"""`compile --target edgetpu --quant int8` writes model.tflite, runs it through the `litert` runner,
and refuses float / low-bit compiles with one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper

pytest.importorskip("ai_edge_litert")

import edgekiln
from edgekiln.backends.edgetpu.tflite_reader import builtin_op_names, read_tflite
from edgekiln.backends.reference.interpreter import run_program
from edgekiln.cli import main
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.errors import OptionError
from tests.backends.edgetpu.test_tflite_ops import SHAPE, conv, conv_inits, make_model

CALIB = [{"x": np.random.default_rng(s).standard_normal(SHAPE).astype(np.float32)} for s in range(4)]
X = np.random.default_rng(9).standard_normal(SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["t"], ["y"])]
    return make_model(nodes, SHAPE, conv_inits())


def test_edgetpu_artifact_holds_tflite_and_runs_in_litert(model):
    result = compile_model(model, "edgetpu", quantization=QuantOptions(quant="int8", calib=CALIB), progress=False)
    artifact = result.artifact
    assert artifact.manifest["runner"] == "litert"
    assert builtin_op_names(read_tflite(artifact.files["model.tflite"])) == ["CONV_2D"]
    got = artifact.run({"x": X})["y"]
    want = run_program(result.program, {"x": X})["y"]
    step = next(c.attrs["scale"] for c in result.program.calls if c.op == "Dequantize")
    assert got.shape == want.shape == (1, 6, 8, 8)
    # one conv: LiteRT's reference kernels are within 1 LSB of the integer reference
    assert np.abs(got - want).max() <= step * 1.01
    assert np.mean(got == want) > 0.98


def test_saved_artifact_runs_after_load(model, tmp_path):
    artifact = edgekiln.compile(model, "edgetpu", quant="int8", calib=CALIB, progress=False)
    artifact.save(tmp_path / "art")
    loaded = edgekiln.load(tmp_path / "art")
    assert (tmp_path / "art" / "model.tflite").is_file()
    np.testing.assert_array_equal(loaded.run({"x": X})["y"], artifact.run({"x": X})["y"])


def test_float_io_puts_quantize_and_dequantize_at_the_edges(model):
    artifact = edgekiln.compile(model, "edgetpu", quant="int8", calib=CALIB, progress=False, float_io=True)
    assert builtin_op_names(read_tflite(artifact.files["model.tflite"])) == ["QUANTIZE", "CONV_2D", "DEQUANTIZE"]
    assert artifact.manifest["options"]["float_io"] is True
    int8_io = edgekiln.compile(model, "edgetpu", quant="int8", calib=CALIB, progress=False)
    # the same numbers either way (the runner quantizes like the QUANTIZE op up to its tie rule)
    step = np.abs(int8_io.run({"x": X})["y"]).max() / 100
    assert np.abs(artifact.run({"x": X})["y"] - int8_io.run({"x": X})["y"]).max() <= step


@pytest.mark.parametrize("quant, fragment", [(None, "--quant int8"), ("int4:g64", "int8 only"),
                                             ("ternary", "int8 only")])
def test_non_int8_compiles_are_refused_before_any_work(model, quant, fragment):
    quantization = None if quant is None else QuantOptions(quant=quant, calib=CALIB)
    with pytest.raises(OptionError, match=fragment):
        compile_model(model, "edgetpu", quantization=quantization, progress=False)


def test_keep_float_is_refused(model):
    with pytest.raises(OptionError, match="keep-float"):
        compile_model(model, "edgetpu", quantization=QuantOptions(quant="int8", calib=CALIB, keep_float=("c",)))


def test_cli_compile_and_run(model, tmp_path):
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    np.save(tmp_path / "calib.npy", np.concatenate([c["x"] for c in CALIB]))
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "art"
    runner = CliRunner()
    result = runner.invoke(main, ["compile", str(tmp_path / "m.onnx"), "--target", "edgetpu", "--quant", "int8",
                                  "--calib", str(tmp_path / "calib.npy"), "--float-io", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "litert" in result.output
    assert json.loads((out / "manifest.json").read_text())["runner"] == "litert"
    assert (out / "model.tflite").is_file()
    result = runner.invoke(main, ["run", str(out), "--input", str(tmp_path / "x.npy"), "--output",
                                  str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "y.npy").shape == (1, 6, 8, 8)


def test_cli_float_compile_for_edgetpu_is_a_one_line_error(model, tmp_path):
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    result = CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "--target", "edgetpu",
                                       "-o", str(tmp_path / "art")])
    assert result.exit_code == 2, result.output
    assert "int8" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "art").exists()
