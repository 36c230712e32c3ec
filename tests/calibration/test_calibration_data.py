"""Calibration data readers: every format, validation errors (exact messages), lazy reading."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekiln.calibration import data_readers
from edgekiln.calibration.calibration_data import InputSpec, open_calibration_data
from edgekiln.calibration.image_folder import ImagePreprocessing
from edgekiln.errors import CalibrationError, MissingExtraError

X = InputSpec("x", (1, 3, 4, 4), np.dtype(np.float32))
TWO = [InputSpec("a", (1, 2), np.dtype(np.float32)), InputSpec("b", (1, 3), np.dtype(np.float32))]


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)


def batches(data) -> list[dict[str, np.ndarray]]:
    return list(data)


def test_npy_with_a_sample_axis(tmp_path: Path):
    np.save(tmp_path / "d.npy", samples(5))
    data = open_calibration_data(str(tmp_path / "d.npy"), [X])
    assert len(data) == 5 and data.num_batches == 5
    got = batches(data)
    assert [b["x"].shape for b in got] == [(1, 3, 4, 4)] * 5
    np.testing.assert_array_equal(got[3]["x"][0], samples(5)[3])


@pytest.mark.parametrize("shape", [(3, 4, 4), (1, 3, 4, 4)], ids=["no-batch-axis", "input-shape"])
def test_npy_with_one_sample(tmp_path: Path, shape):
    np.save(tmp_path / "d.npy", np.ones(shape, np.float64))  # float64 is cast to the input's float32
    (batch,) = batches(open_calibration_data(tmp_path / "d.npy", [X]))
    assert batch["x"].dtype == np.float32 and batch["x"].shape == (1, 3, 4, 4)


def test_npz_keyed_by_input_name(tmp_path: Path):
    np.savez(tmp_path / "d.npz", a=np.ones((4, 2)), b=np.zeros((4, 3)))
    data = open_calibration_data(tmp_path / "d.npz", TWO)
    assert len(data) == 4
    got = batches(data)
    assert got[0]["a"].shape == (1, 2) and got[0]["b"].shape == (1, 3)


def test_compressed_npz_streams_samples(tmp_path: Path):
    np.savez_compressed(tmp_path / "d.npz", x=samples(3))
    got = batches(open_calibration_data(tmp_path / "d.npz", [X]))
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in got]), samples(3))


def test_npz_with_one_array_feeds_a_single_input_model(tmp_path: Path):
    np.savez(tmp_path / "d.npz", samples(2))  # stored as 'arr_0'
    assert len(open_calibration_data(tmp_path / "d.npz", [X])) == 2


def test_npz_with_wrong_keys(tmp_path: Path):
    np.savez(tmp_path / "d.npz", a=np.ones((4, 2)), c=np.zeros((4, 3)))
    message = (f"{tmp_path / 'd.npz'}: holds arrays 'a', 'c' but the model's inputs are 'a', 'b'; save one array "
               "per input name, e.g. np.savez(path, a=..., b=...)")
    with pytest.raises(CalibrationError, match=re.escape(message)):
        open_calibration_data(tmp_path / "d.npz", TWO)


def test_npz_with_different_counts_per_input(tmp_path: Path):
    np.savez(tmp_path / "d.npz", a=np.ones((4, 2)), b=np.zeros((5, 3)))
    with pytest.raises(CalibrationError, match=re.escape("the inputs hold different numbers of samples ('a': 4, "
                                                         "'b': 5)")):
        open_calibration_data(tmp_path / "d.npz", TWO)


def test_wrong_shape_names_the_file_input_and_expected_shape(tmp_path: Path):
    np.save(tmp_path / "d.npy", np.zeros((10, 3, 8, 8), np.float32))
    message = (f"{tmp_path / 'd.npy'}: input 'x' expects samples of shape (3, 4, 4), or a stack of them "
               "(N, 3, 4, 4) (model input shape (1, 3, 4, 4)); got (10, 3, 8, 8)")
    with pytest.raises(CalibrationError, match=re.escape(message)):
        open_calibration_data(tmp_path / "d.npy", [X])


def test_integer_data_for_a_float_input_is_refused(tmp_path: Path):
    np.save(tmp_path / "d.npy", np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(CalibrationError, match=re.escape("input 'x' is float32 but the data are uint8; convert them "
                                                         "to float32 with the model's normalization")):
        open_calibration_data(tmp_path / "d.npy", [X])


def test_nan_names_the_sample_and_index(tmp_path: Path):
    data = samples(4)
    data[2, 1, 0, 3] = np.nan
    np.save(tmp_path / "d.npy", data)
    opened = open_calibration_data(tmp_path / "d.npy", [X])  # values are read lazily
    message = (f"{tmp_path / 'd.npy'} sample 2: input 'x' holds nan at index (1, 0, 3); calibration data must be "
               "finite (no NaN or Inf)")
    with pytest.raises(CalibrationError, match=re.escape(message)):
        batches(opened)


def test_empty_data_is_refused(tmp_path: Path):
    np.save(tmp_path / "d.npy", np.zeros((0, 3, 4, 4), np.float32))
    with pytest.raises(CalibrationError, match=re.escape(f"{tmp_path / 'd.npy'}: holds no samples; calibration "
                                                         "needs at least one")):
        open_calibration_data(tmp_path / "d.npy", [X])


def test_npy_for_a_two_input_model_is_refused(tmp_path: Path):
    np.save(tmp_path / "d.npy", np.zeros((2, 2), np.float32))
    with pytest.raises(CalibrationError, match="a .npy file holds one array, but the model has 2 inputs"):
        open_calibration_data(tmp_path / "d.npy", TWO)


def test_missing_path_and_unknown_suffix(tmp_path: Path):
    with pytest.raises(CalibrationError, match="no such file or folder"):
        open_calibration_data(tmp_path / "nope.npy", [X])
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(CalibrationError, match="unknown file type '.csv'"):
        open_calibration_data(tmp_path / "d.csv", [X])


def test_folder_of_npy_is_read_lazily_in_name_order(tmp_path: Path, monkeypatch):
    data = samples(6)
    for i in range(6):
        np.save(tmp_path / f"s{i:02d}.npy", data[i])
    (tmp_path / "labels.txt").write_text("ignored")
    loaded = []
    real_load = data_readers._load_npy
    monkeypatch.setattr(data_readers, "_load_npy", lambda path: loaded.append(path.name) or real_load(path))
    opened = open_calibration_data(tmp_path, [X])
    assert len(opened) == 6 and loaded == []  # only headers were read to count and check shapes
    iterator = iter(opened)
    first = next(iterator)
    assert loaded == ["s00.npy"]
    np.testing.assert_array_equal(first["x"][0], data[0])
    rest = list(iterator)
    assert loaded == [f"s{i:02d}.npy" for i in range(6)]
    np.testing.assert_array_equal(rest[-1]["x"][0], data[5])


def test_folder_checks_every_header_up_front(tmp_path: Path):
    np.save(tmp_path / "a.npy", samples(1)[0])
    np.save(tmp_path / "b.npy", np.zeros((3, 5, 5), np.float32))
    with pytest.raises(CalibrationError, match=re.escape(f"{tmp_path / 'b.npy'}: input 'x' expects samples of "
                                                         "shape (3, 4, 4)")):
        open_calibration_data(tmp_path, [X])


def test_folder_of_npz_for_a_multi_input_model(tmp_path: Path):
    for i in range(3):
        np.savez(tmp_path / f"{i}.npz", a=np.full(2, i, np.float32), b=np.zeros(3, np.float32))
    got = batches(open_calibration_data(tmp_path, TWO))
    assert [float(b["a"][0, 0]) for b in got] == [0.0, 1.0, 2.0]


def test_empty_and_mixed_folders(tmp_path: Path):
    with pytest.raises(CalibrationError, match="holds no .npy, .npz or image files"):
        open_calibration_data(tmp_path, [X])
    np.save(tmp_path / "a.npy", samples(1)[0])
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(CalibrationError, match="mixes arrays"):
        open_calibration_data(tmp_path, [X])


def test_iterables_of_dicts_arrays_and_generators():
    data = samples(3)
    as_dicts = open_calibration_data([{"x": s} for s in data], [X])
    as_arrays = open_calibration_data(list(data), [X])
    assert len(as_dicts) == len(as_arrays) == 3
    assert as_dicts.fingerprint() == as_arrays.fingerprint() is not None
    generated = open_calibration_data((s for s in data), [X])
    assert generated.num_samples is None and generated.fingerprint() is None
    assert len(batches(generated)) == 3 and generated.num_samples == 3
    with pytest.raises(CalibrationError, match="already consumed"):
        batches(generated)
    assert len(open_calibration_data(data, [X])) == 3  # an ndarray
    assert len(open_calibration_data({"a": np.ones((2, 2)), "b": np.ones((2, 3))}, TWO)) == 2


def test_iterable_item_with_wrong_keys():
    with pytest.raises(CalibrationError, match=re.escape("calibration iterable item 0: has keys 'y' but the model's "
                                                         "inputs are 'x'")):
        open_calibration_data([{"y": samples(1)[0]}], [X])


def test_model_batch_larger_than_one_stacks_samples(tmp_path: Path):
    spec = InputSpec("x", (2, 3, 4, 4), np.dtype(np.float32))
    np.save(tmp_path / "d.npy", samples(5))
    data = open_calibration_data(tmp_path / "d.npy", [spec])
    with pytest.warns(UserWarning, match="the last 1 sample"):
        got = batches(data)
    assert [b["x"].shape for b in got] == [(2, 3, 4, 4)] * 2


# -- images --------------------------------------------------------------------------------------

def write_images(folder: Path, colors) -> None:
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for i, color in enumerate(colors):
        Image.new("RGB", (8, 6), color).save(folder / f"img{i}.png")


def test_image_folder_with_preprocessing(tmp_path: Path):
    pytest.importorskip("PIL")
    write_images(tmp_path / "imgs", [(255, 0, 0), (0, 0, 255)])
    spec = ImagePreprocessing.parse("mean=0.5,std=0.5,order=BGR")
    got = batches(open_calibration_data(tmp_path / "imgs", [X], preprocessing=spec))
    assert len(got) == 2 and got[0]["x"].shape == (1, 3, 4, 4)
    # red in BGR order, normalized as (p/255 - 0.5) / 0.5: channel 2 (R) is 1, the others -1
    np.testing.assert_allclose(got[0]["x"][0, :, 0, 0], [-1.0, -1.0, 1.0])
    np.testing.assert_allclose(got[1]["x"][0, :, 0, 0], [1.0, -1.0, -1.0])


def test_image_folder_nhwc_and_grayscale(tmp_path: Path):
    pytest.importorskip("PIL")
    write_images(tmp_path / "imgs", [(255, 255, 255)])
    nhwc = InputSpec("x", (1, 4, 4, 3), np.dtype(np.float32))
    (batch,) = batches(open_calibration_data(tmp_path / "imgs", [nhwc]))
    assert batch["x"].shape == (1, 4, 4, 3) and np.allclose(batch["x"], 1.0)
    gray = InputSpec("x", (1, 1, 5, 5), np.dtype(np.float32))
    (batch,) = batches(open_calibration_data(tmp_path / "imgs", [gray], preprocessing=ImagePreprocessing(resize=7)))
    assert batch["x"].shape == (1, 1, 5, 5)


def test_image_preprocessing_parse():
    spec = ImagePreprocessing.parse("resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,"
                                    "layout=nchw,order=bgr,scale=1/255")
    assert spec == ImagePreprocessing(256, (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255,
                                      "NCHW", "BGR")
    with pytest.raises(CalibrationError, match="unknown field 'size2'"):
        ImagePreprocessing.parse("size2=3")


def test_image_folder_without_pillow_names_the_extra(tmp_path: Path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL.Image", None)  # makes `import PIL.Image` fail
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'edgekiln[images]'")):
        open_calibration_data(tmp_path / "imgs", [X])
