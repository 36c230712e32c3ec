"""`calibrate`: ranges of every value, errors naming the value, the statistics cache, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import helper

from edgekiln.calibration import collect, stats_cache
from edgekiln.calibration.calibration_data import open_calibration_data
from edgekiln.calibration.collect import ActivationRange, calibrate, observed_values
from edgekiln.compiler.graph import Graph
from edgekiln.errors import CalibrationError
from tests.conftest import run_ort
from tests.support.graphs import build_graph, conv_relu_model


def conv_relu_graph() -> Graph:
    return Graph.from_proto(onnx.shape_inference.infer_shapes(conv_relu_model()))


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def test_minmax_ranges_match_every_intermediate_value():
    graph = conv_relu_graph()
    data = samples(5)
    ranges = calibrate(graph, open_calibration_data(data, graph), progress=False)
    assert list(ranges) == ["x", "c", "r", "y"]
    probe = conv_relu_model()
    probe.graph.output.extend([helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("c",)])
    conv = np.concatenate([run_ort(probe, {"x": data[i: i + 1]})[1] for i in range(5)])
    assert ranges["c"] == ActivationRange(float(conv.min()), float(conv.max()), "minmax", 5)
    assert ranges["x"].low == float(data.min()) and ranges["x"].high == float(data.max())
    assert ranges["r"].low == 0.0 and ranges["r"].high == ranges["y"].high == float(conv.max())


@pytest.mark.parametrize("method", ["percentile:99.9", "entropy", "mse"])
def test_histogram_methods_clip_inside_minmax(method):
    graph = conv_relu_graph()
    data = open_calibration_data(samples(8), graph)
    minmax = calibrate(graph, data, progress=False)
    clipped = calibrate(graph, data, method=method, progress=False)
    for name, r in clipped.items():
        assert minmax[name].low <= r.low <= 0.0 <= r.high <= minmax[name].high, name
        assert r.method == method and r.samples == 8


def test_values_subset_and_unknown_value():
    graph = conv_relu_graph()
    data = open_calibration_data(samples(2), graph)
    assert list(calibrate(graph, data, values=["r"], progress=False)) == ["r"]
    with pytest.raises(CalibrationError, match="cannot calibrate value\\(s\\) 'nope': no graph input or node output"):
        calibrate(graph, data, values=["nope"], progress=False)


def test_non_float_values_are_not_observed():
    graph = build_graph([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Relu", ["x"], ["y"])],
                        [("x", [1, 4])], [("y", [1, 4])])
    assert observed_values(graph) == ["x", "y"]


def test_nan_activation_names_the_value_and_sample():
    graph = build_graph([helper.make_node("Sqrt", ["x"], ["y"], name="sqrt")], [("x", [1, 4])], [("y", [1, 4])])
    data = open_calibration_data(np.array([[1, 2, 3, 4], [1, -1, 1, 1]], np.float32), graph)
    with pytest.raises(CalibrationError, match="value 'y' is NaN or infinite on calibration sample 1"):
        calibrate(graph, data, progress=False)


def test_unknown_method_fails_before_running():
    graph = conv_relu_graph()
    with pytest.raises(CalibrationError, match="unknown calibration method"):
        calibrate(graph, open_calibration_data(samples(1), graph), method="kl", progress=False)


def test_progress_bar_names_the_model_and_counts_samples(capsys):
    graph = conv_relu_graph()
    calibrate(graph, open_calibration_data(samples(3), graph), progress=True)
    err = capsys.readouterr().err
    assert "calibrating conv_relu (minmax)" in err and "3/3" in err


def test_cache_miss_then_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKILN_CACHE", str(tmp_path))
    graph = conv_relu_graph()
    np.save(tmp_path / "d.npy", samples(4))
    data = open_calibration_data(tmp_path / "d.npy", graph)
    first = calibrate(graph, data, method="mse", progress=False, cache=True)
    entries = list((tmp_path / "calibration").glob("*.json"))
    assert len(entries) == 1 and stats_cache.cache_dir() == tmp_path / "calibration"

    def no_run(*args, **kwargs):
        raise AssertionError("a cache hit must not run the model")

    monkeypatch.setattr(collect, "_collect", no_run)
    assert calibrate(graph, data, method="mse", progress=False, cache=True) == first
    with pytest.raises(AssertionError, match="cache hit"):  # another method is a miss
        calibrate(graph, data, method="minmax", progress=False, cache=True)
    np.save(tmp_path / "d.npy", samples(4, seed=1))  # new content, same file name: a miss
    with pytest.raises(AssertionError, match="cache hit"):
        calibrate(graph, open_calibration_data(tmp_path / "d.npy", graph), method="mse", progress=False, cache=True)


def test_cache_ignores_a_corrupt_entry_and_generators(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKILN_CACHE", str(tmp_path))
    graph = conv_relu_graph()
    data = open_calibration_data(list(samples(2)), graph)
    first = calibrate(graph, data, progress=False, cache=True)
    (entry,) = (tmp_path / "calibration").glob("*.json")
    entry.write_text("{not json")
    assert calibrate(graph, data, progress=False, cache=True) == first
    entry.unlink()
    calibrate(graph, open_calibration_data((s for s in samples(2)), graph), progress=False, cache=True)
    assert not list((tmp_path / "calibration").glob("*.json"))


# -- zoo models (slow) ---------------------------------------------------------------------------

def _compiled(name: str) -> Graph:
    from edgekiln.compiler.compile import compile_model
    from tests.zoo import input_shapes, model_path

    return compile_model(model_path(name), "host", input_shapes=input_shapes(name)).graph


@pytest.mark.slow
@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_digits_cnn_on_heldout_digits(method):
    from tests.zoo import zoo_heldout

    graph = _compiled("digits_cnn")
    images, _ = zoo_heldout("digits_cnn")
    ranges = calibrate(graph, open_calibration_data(images[:64], graph), method=method, progress=False)
    assert set(ranges) == set(observed_values(graph)) and len(ranges) == len(graph.nodes) + 1
    for r in ranges.values():
        assert r.low <= 0.0 <= r.high and r.high > r.low and r.samples == 64
    assert ranges["input"].low == pytest.approx(float(images[:64].min()))


@pytest.mark.slow
def test_inverted_residual_every_fused_value_has_a_range():
    from tests.zoo import sample_input

    graph = _compiled("inverted_residual")
    data = [sample_input("inverted_residual", seed)["input"] for seed in range(8)]
    ranges = calibrate(graph, open_calibration_data(data, graph), method="mse", progress=False)
    for node in graph.nodes:
        assert node.outputs[0].name in ranges, node.name


@pytest.mark.slow
def test_ppocr_det_memory_does_not_grow_with_the_sample_count():
    """Peak traced memory is the same for 16 and 64 samples: one batch's activations plus fixed histograms."""
    from tests.zoo import sample_input

    graph = _compiled("ppocr_det")
    sample = sample_input("ppocr_det")["x"][0]
    peaks = {}
    for count in (16, 64):
        noisy = (sample + 0.05 * np.random.default_rng(i).standard_normal(sample.shape).astype(np.float32)
                 for i in range(count))
        data = open_calibration_data(noisy, graph)
        tracemalloc.start()
        calibrate(graph, data, method="entropy", progress=False)
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[64] < peaks[16] + 1_000_000, peaks
