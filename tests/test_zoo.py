"""Tests for the test model zoo (`tests.zoo`): builds, numerics, caching, data, PP-OCR."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests import zoo
from tests.zoo import build, ppocr
from tests.zoo.make_example import make_example

# Ops each architecture exists to exercise; their absence means the export changed shape.
EXPECTED_OPS = {
    "lenet_mnist": {"Conv": 2, "MaxPool": 2, "Gemm": 3},
    "digits_cnn": {"Conv": 2, "BatchNormalization": 2, "Gemm": 1},
    "inverted_residual": {"Conv": 10, "BatchNormalization": 10, "Clip": 7, "Add": 2},
    "resnet_basic": {"Conv": 6, "BatchNormalization": 6, "Add": 2},
    "repvgg": {"Conv": 5, "BatchNormalization": 6, "Add": 3},
    "mobileone": {"Conv": 15, "BatchNormalization": 19, "Add": 14},
    "se_hardswish": {"HardSwish": 3, "HardSigmoid": 1, "Mul": 1, "GlobalAveragePool": 2},
    "tiny_transformer": {"MatMul": 16, "Softmax": 2, "Transpose": 9, "Reshape": 9, "LayerNormalization": 5},
}
PPOCR_OUTPUT_SHAPES = {"ppocr_det": (1, 1, 160, 160), "ppocr_rec": (1, 20, 6625), "ppocr_cls": (1, 2)}


def _run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _run_torch(name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return zoo.zoo_torch_model(name)(torch.from_numpy(feeds["input"])).numpy()


def _input_dims(model: onnx.ModelProto) -> list[int | str]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


# --- names, errors, cache mechanics (fast) ---------------------------------------------


def test_names() -> None:
    assert zoo.ZOO_MODELS == (
        "lenet_mnist", "digits_cnn", "inverted_residual", "resnet_basic",
        "repvgg", "mobileone", "se_hardswish", "tiny_transformer",
    )
    assert zoo.PPOCR_MODELS == ("ppocr_det", "ppocr_rec", "ppocr_cls")
    assert zoo.all_models() == [*zoo.ZOO_MODELS, *zoo.PPOCR_MODELS]
    assert set(zoo.TRAINED_MODELS) == {"lenet_mnist", "digits_cnn"}


def test_unknown_names_raise() -> None:
    with pytest.raises(KeyError, match="unknown zoo model"):
        zoo.zoo_model("resnet50")
    with pytest.raises(KeyError, match="unknown PP-OCR model"):
        zoo.ppocr_model("ppocr_table")
    with pytest.raises(KeyError, match="not trained"):
        zoo.zoo_accuracy("resnet_basic")


def test_cache_key_is_stable_and_per_model() -> None:
    keys = {name: build.cache_key(name) for name in zoo.ZOO_MODELS}
    assert keys == {name: build.cache_key(name) for name in zoo.ZOO_MODELS}
    assert len(set(keys.values())) == len(keys)


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEKILN_ZOO_CACHE", str(tmp_path / "zoo"))
    assert zoo.cache_dir() == tmp_path / "zoo"
    assert (tmp_path / "zoo").is_dir()


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"

    def half_write(tmp: Path) -> None:
        tmp.write_bytes(b"half a model")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build._atomic_write(target, half_write)
    assert list(tmp_path.iterdir()) == []
    build._atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    assert target.read_bytes() == b"whole"


def test_shapes_dispatch() -> None:
    assert zoo.input_shapes("lenet_mnist") == {"input": (1, 1, 28, 28)}
    assert zoo.input_shapes("digits_cnn") == {"input": (1, 1, 8, 8)}
    assert zoo.input_shapes("tiny_transformer") == {"input": (1, 3, 32, 32)}
    assert zoo.input_shapes("ppocr_rec") == {"x": (1, 3, 48, 160)}


def test_ppocr_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ppocr.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(zoo.ZooModelUnavailableError, match="pip install --no-deps rapidocr-onnxruntime==1.4.4"):
        zoo.ppocr_model("ppocr_det")


def test_ppocr_sample_input_is_a_deterministic_page() -> None:
    for name in zoo.PPOCR_MODELS:
        feeds = zoo.ppocr_sample_input(name)
        (array,) = feeds.values()
        assert feeds.keys() == zoo.ppocr_input_shapes(name).keys()
        assert array.shape == zoo.ppocr_input_shapes(name)["x"] and array.dtype == np.float32
        assert -1.0 <= array.min() and array.max() <= 1.0
        np.testing.assert_array_equal(array, zoo.ppocr_sample_input(name)["x"])
        np.testing.assert_array_equal(array[0, 0], array[0, 2])
        # Mostly light paper with dark glyphs: both ends of the range are well represented.
        assert 0.02 < float(np.mean(array < -0.4)) < 0.5 and float(np.mean(array > 0.6)) > 0.3


@pytest.mark.slow
def test_ppocr_detector_finds_text_on_the_sample_page() -> None:
    from tests.conftest import run_ort

    (probabilities,) = run_ort(zoo.ppocr_model("ppocr_det"), zoo.ppocr_sample_input("ppocr_det"))
    assert 0.02 < float(np.mean(probabilities > 0.3)) < 0.5


# --- zoo models (slow: train / export / run) -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", build.ZOO_MODELS)
def test_zoo_model_matches_torch(name: str) -> None:
    path = zoo.zoo_model(name)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(path)
    assert _input_dims(model) == list(zoo.zoo_input_shapes(name)["input"])
    assert model.opset_import[0].version == 17
    feeds = zoo.zoo_sample_input(name)
    (ort_out,) = _run_ort(path, feeds)
    np.testing.assert_allclose(ort_out, _run_torch(name, feeds), rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", build.ZOO_MODELS)
def test_zoo_model_structure(name: str) -> None:
    model = onnx.load(zoo.zoo_model(name))
    ops = Counter(node.op_type for node in model.graph.node)
    assert {op: ops[op] for op in EXPECTED_OPS[name]} == EXPECTED_OPS[name]
    assert ops["Identity"] == 0  # equal initializers would have been deduplicated
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["edgekiln.zoo.name"] == name


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in build.ZOO_MODELS if "BatchNormalization" in EXPECTED_OPS[n]])
def test_batchnorm_statistics_are_not_identity(name: str) -> None:
    model = onnx.load(zoo.zoo_model(name))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in (n for n in model.graph.node if n.op_type == "BatchNormalization"):
        gamma, beta, mean, var = (weights[i] for i in node.input[1:])
        assert not np.allclose(mean, 0) and not np.allclose(var, 1), node.name
        assert not np.allclose(gamma, 1) and not np.allclose(beta, 0), node.name


@pytest.mark.slow
@pytest.mark.parametrize("name", build.ZOO_MODELS)
def test_dynamic_batch_export(name: str) -> None:
    path = zoo.zoo_model(name, dynamic_batch=True)
    assert path != zoo.zoo_model(name)
    onnx.checker.check_model(str(path), full_check=True)
    assert _input_dims(onnx.load(path))[0] == "batch"
    feeds = zoo.zoo_sample_input(name, batch=3, seed=1)
    (ort_out,) = _run_ort(path, feeds)
    assert ort_out.shape == (3, 10)
    np.testing.assert_allclose(ort_out, _run_torch(name, feeds), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_second_build_hits_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEKILN_ZOO_CACHE", str(tmp_path))
    first = zoo.zoo_model("se_hardswish")
    stamp, content = first.stat().st_mtime_ns, first.read_bytes()

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cache was missed")

    monkeypatch.setattr(build, "_export_onnx", no_rebuild)
    monkeypatch.setattr(build, "_random_model", no_rebuild)
    second = zoo.zoo_model("se_hardswish")
    assert second == first
    assert second.stat().st_mtime_ns == stamp and second.read_bytes() == content
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("name", build.TRAINED_MODELS)
def test_trained_accuracy(name: str) -> None:
    accuracy = zoo.zoo_accuracy(name)
    assert accuracy > 0.9
    images, labels = zoo.zoo_heldout(name)
    (logits,) = _run_ort(zoo.zoo_model(name, dynamic_batch=True), {"input": images})
    # The ONNX model reproduces the accuracy recorded in torch (a tie may flip one digit).
    assert abs(float((logits.argmax(axis=1) == labels).mean()) - accuracy) <= 1.0 / len(labels)
    info = zoo.zoo_training_info(name)
    assert info["n_test"] == len(labels) and info["train_seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(("name", "count"), [("lenet_mnist", 1000), ("digits_cnn", 360)])
def test_heldout_data(name: str, count: int) -> None:
    images, labels = zoo.zoo_heldout(name)
    assert images.shape == (count, *zoo.zoo_input_shapes(name)["input"][1:])
    assert images.dtype == np.float32 and labels.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(labels.tolist()) == set(range(10))
    sample = zoo.zoo_sample_input(name, batch=4, seed=3)["input"]
    np.testing.assert_array_equal(sample, zoo.zoo_sample_input(name, batch=4, seed=3)["input"])
    assert all((images == row).all(axis=(1, 2, 3)).any() for row in sample)


@pytest.mark.slow
def test_make_example(tmp_path: Path) -> None:
    model, image, label, calib = make_example(tmp_path)
    assert model.stat().st_size < 64 * 1024
    samples = np.load(calib)
    assert samples.shape == (64, 1, 8, 8) and samples.dtype == np.float32
    assert not any(np.array_equal(sample, np.load(image)[0]) for sample in samples)  # the example is held out
    digit = np.load(image)
    assert digit.shape == (1, 1, 8, 8) and digit.dtype == np.float32
    (logits,) = _run_ort(model, {"input": digit})
    assert int(logits.argmax()) == int(label.read_text())


# --- PP-OCR (slow: real models) --------------------------------------------------------


def _ppocr_or_skip(name: str) -> Path:
    try:
        return zoo.ppocr_model(name)
    except zoo.ZooModelUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.PPOCR_MODELS)
def test_ppocr_runs_at_static_shape(name: str) -> None:
    path = _ppocr_or_skip(name)
    assert zoo.model_path(name) == path
    onnx.checker.check_model(str(path))
    feeds = zoo.sample_input(name)
    assert {k: v.shape for k, v in feeds.items()} == zoo.ppocr_input_shapes(name)
    outputs = _run_ort(path, feeds)
    assert outputs[0].shape == PPOCR_OUTPUT_SHAPES[name]
    assert np.isfinite(outputs[0]).all()
    if name != "ppocr_det":  # rec and cls end in a softmax over classes
        np.testing.assert_allclose(outputs[0].sum(axis=-1), 1.0, atol=1e-4)
