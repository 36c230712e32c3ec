"""`edgekiln compile --prune ...` through the CLI and the Python API, and (slow) a zoo model pruned, quantized to
int8 and compiled for cortex-a76, run in the C runtime under qemu bit-exact against the integer reference."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import edgekiln
from edgekiln.cli import main
from tests.conftest import run_ort
from tests.pruning import pruning_graphs as graphs


def test_cli_prunes_explains_and_keeps_the_output_shape(tmp_path, save_model):
    model = graphs.depthwise_se_model()
    path = save_model(model)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "pruned.onnx"
    # A GPU target: its artifact needs no C build, so the test times pruning, not the runtime's compiler.
    result = CliRunner().invoke(main, ["compile", str(path), "-t", "mali-g76", "-o", str(out), "--emit", "onnx",
                                       "--explain",
                                       "--prune", "channels:0.5", "--prune", "reduce=0", "--prune-calib", str(calib)])
    assert result.exit_code == 0, result.output
    assert "removed 4 of 8 channels by l1" in result.output
    assert "kept whole: ratio 0 removes no channel of 4" in result.output
    assert "re-fit Conv node 'project'" in result.output
    pruned = onnx.load(out)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert run_ort(pruned, {"x": x})[0].shape == run_ort(model, {"x": x})[0].shape


def test_cli_refuses_a_bad_prune_value_in_one_line(save_model, tmp_path):
    result = CliRunner().invoke(main, ["compile", str(save_model(graphs.residual_model())), "-o",
                                       str(tmp_path / "o"), "--prune", "channels:2"])
    assert result.exit_code == 2 and "--prune channels:2" in result.output


def test_api_records_pruning_in_the_manifest():
    artifact = edgekiln.compile(graphs.residual_model(), "mali-g76", prune="channels:0.25", refit=False, progress=False)
    assert artifact.manifest["options"]["pruning"]["channels"] == 0.25
    assert json.dumps(artifact.manifest)  # plain data only


@pytest.mark.slow
def test_pruned_int8_zoo_model_runs_bit_exact_on_cortex_a76():
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.backends.reference.runner import ReferenceRunner
    from tests.runtime_arm.harness import aarch64_runner
    from tests.zoo import input_shapes, model_path, sample_input

    aarch64_runner()
    name = "digits_cnn"
    calib = [sample_input(name, seed=s) for s in range(1, 5)]
    artifact = edgekiln.compile(model_path(name), "cortex-a76", input_shapes=input_shapes(name), quant="int8",
                                calib=calib, prune="channels:0.3", progress=False)
    assert artifact.manifest["options"]["pruning"]["channels"] == 0.3
    feeds = sample_input(name, seed=21)
    got = ArmCpuRunner(artifact.files, artifact.manifest, qemu_cpu="cortex-a76").run(feeds)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inverted_residual", "se_hardswish", "tiny_transformer", "ppocr_cls"])
def test_pruned_int8_zoo_model_runs_bit_exact_on_the_host(name):
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.backends.reference.runner import ReferenceRunner
    from tests.zoo import input_shapes, model_path, sample_input

    calib = [sample_input(name, seed=s) for s in range(1, 5)]
    artifact = edgekiln.compile(model_path(name), "host", input_shapes=input_shapes(name), quant="int8", calib=calib,
                                prune="channels:0.3", refit=False, progress=False)
    assert artifact.manifest["options"]["pruning"]["channels"] == 0.3
    feeds = sample_input(name, seed=22)
    got = ArmCpuRunner(artifact.files, artifact.manifest).run(feeds)
    for key, value in ReferenceRunner(artifact.files, artifact.manifest).run(feeds).items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_cli_global_magnitude_sparsity_threshold(tmp_path, save_model):
    """--sparsity-scope global: one threshold over all layers, so layers end up with different sparsities."""
    model = graphs.residual_model()
    out = {}
    for scope in ("layer", "global"):
        out[scope] = tmp_path / f"{scope}.onnx"
        result = CliRunner().invoke(main, ["compile", str(save_model(model)), "-t", "mali-g76", "-o", str(out[scope]),
                                           "--emit", "onnx", "--sparsity", "0.5", "--sparsity-scope", scope])
        assert result.exit_code == 0, result.output

    def zero_shares(path):
        weights = [onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer if t.dims and len(t.dims) >= 2]
        return [float(np.mean(w == 0)) for w in weights if w.size >= 64]

    per_layer, one_threshold = zero_shares(out["layer"]), zero_shares(out["global"])
    assert all(abs(share - 0.5) < 0.05 for share in per_layer)
    assert abs(np.mean(one_threshold) - 0.5) < 0.25 and max(one_threshold) - min(one_threshold) > 0.05
