"""Every zoo model and the real PP-OCR models through `inspect` and `compile` (model-level: slow)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import edgekiln
from edgekiln.cli import main
from edgekiln.compiler.compile import compile_model
from tests.conftest import max_relative_error, run_ort
from tests.support.numerics import assert_same_outputs, with_logits_exposed
from tests.zoo import all_models, input_shapes, model_path, sample_input

pytestmark = pytest.mark.slow


def _shape_options(name: str) -> list[str]:
    return [f"--input-shape={k}={'x'.join(map(str, v))}" for k, v in input_shapes(name).items()]


@pytest.mark.parametrize("name", all_models())
def test_optimized_onnx_matches_the_input_model(name, tmp_path):
    path, probabilities = with_logits_exposed(model_path(name), tmp_path)
    result = compile_model(path, "host", input_shapes=input_shapes(name))
    assert_same_outputs(path, result.graph.to_proto(), sample_input(name), probabilities)
    memory = result.artifact.manifest["memory"]
    assert 0 < memory["arena_bytes"] <= memory["naive_intermediate_bytes"]


@pytest.mark.parametrize("name", all_models())
def test_cli_inspect_and_compile_emit_onnx(name, tmp_path):
    runner = CliRunner()
    inspected = runner.invoke(main, ["inspect", str(model_path(name)), "--json", str(tmp_path / "r.json")])
    assert inspected.exit_code == 0, inspected.output
    assert json.loads((tmp_path / "r.json").read_text())
    path, probabilities = with_logits_exposed(model_path(name), tmp_path)
    out = tmp_path / "optimized.onnx"
    compiled = runner.invoke(main, ["compile", str(path), "--target", "host", "--emit", "onnx",
                                    "-o", str(out), *_shape_options(name)])
    assert compiled.exit_code == 0, compiled.output
    assert "arena" in compiled.output
    assert_same_outputs(path, onnx.load(out), sample_input(name), probabilities)


@pytest.mark.parametrize("name", ["digits_cnn", "ppocr_cls"])
def test_artifact_round_trip_through_save_and_load(name, tmp_path):
    artifact = edgekiln.compile(model_path(name), target="cortex-a76", input_shapes=input_shapes(name))
    artifact.save(tmp_path / "a")
    loaded = edgekiln.load(tmp_path / "a")
    feeds = sample_input(name)
    expected = run_ort(model_path(name), feeds)
    got = list(loaded.run(feeds).values())
    for want, have in zip(expected, got):
        assert max_relative_error(want, have) <= 1e-5


def test_bundled_example_classifies_its_digit(tmp_path):
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    artifact = edgekiln.compile(examples / "digits_cnn.onnx", target="host")
    logits = next(iter(artifact.run(np.load(examples / "digits_input.npy")).values()))
    assert int(np.argmax(logits)) == int((examples / "digits_label.txt").read_text())


# Nodes in the file -> after the host pipeline; the re-parameterized models must end with one
# conv per block stage (RepVGG: stem + 2 blocks; MobileOne: stem + 2 x (depthwise, pointwise)).
EXPECTED_CONVS = {"repvgg": 3, "mobileone": 5}


@pytest.mark.parametrize("name", all_models())
def test_node_count_drops_and_every_conv_is_fused(name):
    before = len(onnx.load(model_path(name), load_external_data=False).graph.node)
    graph = compile_model(model_path(name), "host", input_shapes=input_shapes(name)).graph
    ops = graph.count_ops()
    assert len(graph.main) < before
    assert "BatchNormalization" not in ops and "Identity" not in ops and "Dropout" not in ops
    convs = sum(n for op, n in ops.items() if "Conv" in op and op != "ConvTranspose")
    if name in EXPECTED_CONVS:
        assert convs == EXPECTED_CONVS[name]
        assert "Add" not in ops


def test_explain_shows_mobileone_branch_merges_and_blocks(tmp_path):
    result = CliRunner().invoke(main, ["compile", str(model_path("mobileone")), "--emit", "onnx", "--explain",
                                       "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert result.output.count("applied: merged 5 branches") == 2  # the depthwise stages
    assert result.output.count("applied: merged 4 branches") == 2  # the pointwise stages
    assert "block depthwise_separable_0" in result.output and "block depthwise_separable_1" in result.output
