"""`edgekiln quant-report`: the report folder, the console summary, the fix command, bad input."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekiln.cli import main
from tests.quantization.test_debugger import BAD, chain_model, samples


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def files(tmp_path: Path, save_model) -> tuple[Path, Path]:
    data = tmp_path / "calib.npy"
    np.save(data, samples())
    return save_model(chain_model()), data


def test_report_and_fix(files, tmp_path):
    model, data = files
    out = tmp_path / "report"
    result = invoke("quant-report", model, "--calib", data, "--quant", "int8", "-o", out, "--auto-keep-float", "1",
                    "--eval-samples", "8")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"report.html", "report.json"}
    report = json.loads((out / "report.json").read_text())
    assert report["fix"]["patterns"] == [BAD] and report["fix"]["after_db"] > report["fix"]["before_db"] + 20
    text = " ".join(result.output.split())
    assert "worst layers" in text and f"--keep-float {BAD}" in text
    # The printed command is a working compile command.
    command = shlex.split(report["fix"]["command"])
    assert command[:3] == ["edgekiln", "compile", str(model)]
    artifact = tmp_path / "artifact"
    assert command[3] == "-o"
    compiled = invoke("compile", command[2], "-o", artifact, *command[5:])
    assert compiled.exit_code == 0, compiled.output
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["options"]["quantization"]["keep_float"] == [BAD]


def test_target_sqnr_and_options(files, tmp_path):
    model, data = files
    out = tmp_path / "r"
    result = invoke("quant-report", model, "--calib", data, "-o", out, "--target-sqnr", "25", "--eval-samples", "8",
                    "--calib-method", "percentile", "--no-bias-correction", "--max-sensitivity-layers", "2")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["quant"] == "int8" and report["options"]["bias_correction"] is False
    assert report["sensitivity"]["measured"] == 2 and report["fix"]["mode"] == "target_sqnr"
    # Options that differ from the defaults (mse ranges, bias correction on) are in the fix command.
    assert "--calib-method percentile" in report["fix"]["command"] and "--no-bias-correction" in report["fix"]["command"]


@pytest.mark.parametrize(("extra", "fragment"), [
    ((), "needs calibration data"),
    (("--calib", "CALIB", "--auto-keep-float", "1", "--target-sqnr", "20"), "not both"),
    (("--calib", "CALIB", "--quant", "int3"), "unknown precision"),
    (("--calib", "CALIB", "--keep-float", "nothing*"), "matches no node"),
])
def test_bad_input(files, tmp_path, extra, fragment):
    model, data = files
    out = tmp_path / "r"
    result = invoke("quant-report", model, "-o", out, *[data if a == "CALIB" else a for a in extra])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and fragment in " ".join(result.output.split())
    assert not out.exists()


def test_existing_output_needs_force(files, tmp_path):
    model, data = files
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = invoke("quant-report", model, "--calib", data, "-o", out, "--max-sensitivity-layers", "0")
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep.txt").exists()
    result = invoke("quant-report", model, "--calib", data, "-o", out, "--max-sensitivity-layers", "0", "--force")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"report.html", "report.json"}


@pytest.mark.slow
def test_digits_cnn_from_heldout_data(tmp_path):
    from tests.zoo import model_path, zoo_heldout

    images, _ = zoo_heldout("digits_cnn")
    data = tmp_path / "digits.npy"
    np.save(data, images[:64])
    out = tmp_path / "r"
    result = invoke("quant-report", model_path("digits_cnn"), "--calib", data, "-o", out, "--auto-keep-float", "1")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["held_out"] and report["output_sqnr_db"] > 30
    assert report["fix"]["after_db"] >= report["fix"]["before_db"]
