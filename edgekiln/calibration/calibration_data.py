"""`open_calibration_data`: one entry point for every kind of calibration data, validated against the model.

    spec                       reader
    "data.npy"                 one input; [N, ...] samples, or one sample without the batch axis
    "data.npz"                 arrays keyed by input name, [N, ...] each
    "folder/" of .npy / .npz   one file per sample (or per stack of samples), in name order
    "folder/" of images        decoded with an `ImagePreprocessing` (Pillow: the `images` extra)
    "synthetic[:N]"            data-free: ZeroQ inputs matching the model's BatchNorm statistics
    an ndarray / dict / list / iterable   arrays at hand (API)

A *sample* is one model input without its batch axis: for an input of shape (B, *rest) a
sample has shape rest.  `CalibrationData` yields *batches* {input name: (B, *rest)} of B
samples, ready to feed the model (B = 1 for the usual static batch-1 model).  Every sample
is checked: shape, dtype (floats are cast to the input's float type; integers are never
silently turned into floats, as raw pixels need the model's normalization) and finite
values; errors name the file or item, the sample index, the input and the expected shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgekiln.calibration.data_readers import (
    ARRAY_SUFFIXES,
    ArrayFolderSource,
    ArraySource,
    IterableSource,
    NpzSource,
    Source,
    npz_members,
    read_npy,
)
from edgekiln.calibration.image_folder import (
    IMAGE_SUFFIXES,
    ImageFolderSource,
    ImagePreprocessing,
)
from edgekiln.errors import CalibrationError

DEFAULT_SYNTHETIC_SAMPLES = 32


@dataclass(frozen=True)
class InputSpec:
    """A model input as calibration sees it: name, static shape (batch axis first), dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def batch(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])

    @classmethod
    def from_value(cls, value: ir.Value) -> InputSpec:
        shape = tuple(value.shape) if value.shape is not None else None
        if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CalibrationError(f"model input {value.name!r} has no static shape ({value.shape}); fix it with "
                                   "--input-shape before calibrating")
        return cls(value.name, shape, np.dtype(value.dtype.numpy()))


def _specs(graph_inputs) -> list[InputSpec]:
    inputs = getattr(graph_inputs, "inputs", graph_inputs)  # a Graph, or its inputs
    return [i if isinstance(i, InputSpec) else InputSpec.from_value(i) for i in inputs]


class CalibrationData:
    """Validated calibration samples, read lazily; iterating yields batches {input name: array}."""

    def __init__(self, source: Source, inputs: Sequence[InputSpec], num_samples: int | None) -> None:
        self.source = source
        self.inputs = list(inputs)
        self.num_samples = num_samples
        batches = {spec.batch for spec in self.inputs}
        # Inputs without a shared batch axis are fed one sample at a time as they are.
        self.batch_size = batches.pop() if len(batches) == 1 else 1
        if num_samples is not None:
            self._check_count(num_samples)

    @property
    def description(self) -> str:
        return self.source.description

    @property
    def num_batches(self) -> int | None:
        return None if self.num_samples is None else self.num_samples // self.batch_size

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError(f"the sample count of {self.description} is unknown until it has been read")
        return self.num_samples

    def fingerprint(self) -> str | None:
        return self.source.fingerprint()

    def _check_count(self, count: int) -> None:
        if count < 1:
            raise CalibrationError(f"{self.description}: holds no samples; calibration needs at least one")
        if count < self.batch_size:
            raise CalibrationError(
                f"{self.description}: holds {count} sample(s), but the model's batch size is {self.batch_size}; "
                f"give at least {self.batch_size} samples")

    def samples(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """(label, {input name: sample}) for every sample, validated."""
        count = 0
        for label, chunk in self.source.chunks():
            for sample_label, sample in split_chunk(label, chunk, self.inputs):
                count += 1
                yield sample_label, sample
        self._check_count(count)
        self.num_samples = count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []
        for _, sample in self.samples():
            pending.append(sample)
            if len(pending) == self.batch_size:
                # A 0-d input has no batch axis: its one sample is the whole input.
                yield {s.name: np.stack([p[s.name] for p in pending]) if s.shape else pending[0][s.name]
                       for s in self.inputs}
                pending = []
        if pending:
            warnings.warn(f"{self.description}: the last {len(pending)} sample(s) do not fill a batch of "
                          f"{self.batch_size} and are not used", stacklevel=2)


# -- validation ----------------------------------------------------------------------------------

def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def chunk_count(label: str, shapes: Mapping[str, tuple[int, ...]], inputs: Sequence[InputSpec]) -> int:
    """How many samples a chunk with these array shapes holds; a clear error when a shape does not fit."""
    counts = {}
    for spec in inputs:
        shape = tuple(shapes[spec.name])
        rest = spec.sample_shape
        if shape == rest:
            counts[spec.name] = 1
        elif len(shape) == len(rest) + 1 and shape[1:] == rest:
            counts[spec.name] = shape[0]
        else:
            raise CalibrationError(
                f"{label}: input {spec.name!r} expects samples of shape {_shape_text(rest)}, or a stack of them "
                f"{_shape_text(('N', *rest))} (model input shape {_shape_text(spec.shape)}); got {_shape_text(shape)}")
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{n!r}: {c}" for n, c in counts.items())
        raise CalibrationError(f"{label}: the inputs hold different numbers of samples ({listed}); give the same "
                               "number for every input")
    return next(iter(counts.values()))


def check_dtype(label: str, dtype: np.dtype, spec: InputSpec) -> None:
    want = spec.dtype
    if np.issubdtype(want, np.floating):
        if not np.issubdtype(dtype, np.floating):
            raise CalibrationError(
                f"{label}: input {spec.name!r} is {want} but the data are {dtype}; convert them to {want} with the "
                "model's normalization (for raw pixels e.g. pixel / 255, then mean/std) before calibrating")
    elif np.issubdtype(want, np.integer):
        if not np.issubdtype(dtype, np.integer):
            raise CalibrationError(f"{label}: input {spec.name!r} is {want} but the data are {dtype}; give integer data")
    elif dtype != want:
        raise CalibrationError(f"{label}: input {spec.name!r} is {want} but the data are {dtype}")


def check_sample(label: str, name: str, sample: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The sample cast to the input's dtype; NaN/Inf and out-of-range integers refused."""
    if np.issubdtype(sample.dtype, np.floating):
        finite = np.isfinite(sample)
        if not finite.all():
            where = tuple(int(i) for i in np.argwhere(~finite)[0])
            bad = sample[where] if where else sample[()]
            raise CalibrationError(f"{label}: input {name!r} holds {bad} at index {where}; calibration data must be "
                                   "finite (no NaN or Inf)")
    elif np.issubdtype(spec.dtype, np.integer) and sample.size:
        info = np.iinfo(spec.dtype)
        if sample.min() < info.min or sample.max() > info.max:
            raise CalibrationError(f"{label}: input {name!r} has values outside the range of {spec.dtype}")
    return np.asarray(sample, spec.dtype)


def split_chunk(label: str, chunk: Mapping[str, np.ndarray], inputs: Sequence[InputSpec]):
    """Validated single samples of one chunk."""
    count = chunk_count(label, {s.name: np.shape(chunk[s.name]) for s in inputs}, inputs)
    for spec in inputs:
        check_dtype(label, chunk[spec.name].dtype, spec)
    for index in range(count):
        sample_label = f"{label} sample {index}" if count > 1 else label
        sample = {}
        for spec in inputs:
            array = chunk[spec.name]
            raw = array if array.shape == spec.sample_shape else array[index]
            sample[spec.name] = check_sample(sample_label, spec.name, np.asarray(raw), spec)
        yield sample_label, sample


# -- the entry point -----------------------------------------------------------------------------

def open_calibration_data(spec, graph_inputs, *, preprocessing: ImagePreprocessing | None = None,
                          model_graph=None, num_samples: int | None = None, seed: int = 0) -> CalibrationData:
    """Calibration data for a model with inputs `graph_inputs` (a `Graph`, its inputs, or `InputSpec`s).

    `spec`: a path (.npy, .npz, or a folder of .npy/.npz files or images), "synthetic" or
    "synthetic:N", an ndarray (single-input models), a dict {input name: [N, ...]}, or an
    iterable of samples (dicts, arrays, or tuples in input order).  `preprocessing` is for
    image folders.  For "synthetic", `model_graph` is the frontend-loaded graph *before*
    BatchNorm folding (`load_model(path, shapes)`), and `num_samples` the count (32).
    """
    inputs = _specs(graph_inputs)
    names = [s.name for s in inputs]
    if isinstance(spec, str) and (spec == "synthetic" or spec.startswith("synthetic:")):
        return _synthetic(spec, inputs, model_graph, num_samples, seed, preprocessing)
    if isinstance(spec, (str, Path)):
        return _from_path(Path(spec).expanduser(), inputs, preprocessing)
    if isinstance(spec, np.ndarray):
        return _counted(ArraySource({names[0]: spec} if len(names) == 1 else _refuse_array(names),
                                    "calibration array"), inputs)
    if isinstance(spec, Mapping):
        source = IterableSource([spec], names, "calibration dict")
        return _counted(source, inputs)
    if isinstance(spec, Iterable):
        return _counted(IterableSource(spec, names), inputs)
    raise CalibrationError(f"calibration data must be a path, 'synthetic', an array, a dict or an iterable; got "
                           f"{type(spec).__name__}")


def _refuse_array(names: list[str]):
    raise CalibrationError(f"a single array cannot feed a model with {len(names)} inputs "
                           f"({', '.join(map(repr, names))}); give a dict keyed by input name")


def _counted(source: Source, inputs: list[InputSpec]) -> CalibrationData:
    """Count (and shape-check) every chunk whose shapes are known without reading its values."""
    headers = source.header_shapes()
    if headers is None:
        return CalibrationData(source, inputs, len(source) if hasattr(source, "__len__") else None)
    total = 0
    for label, shapes in headers:
        for spec in inputs:
            check_dtype(label, np.dtype(shapes[spec.name][1]), spec)
        total += chunk_count(label, {n: s for n, (s, _) in shapes.items()}, inputs)
    return CalibrationData(source, inputs, total)


def _from_path(path: Path, inputs: list[InputSpec], preprocessing: ImagePreprocessing | None) -> CalibrationData:
    names = [s.name for s in inputs]
    if not path.exists():
        raise CalibrationError(f"calibration data {path}: no such file or folder")
    if path.is_file():
        if path.suffix == ".npy":
            return _counted(read_npy(path, names), inputs)
        if path.suffix == ".npz":
            return _counted(NpzSource(path, npz_members(path, names)), inputs)
        raise CalibrationError(f"calibration data {path}: unknown file type {path.suffix!r}; give a .npy or .npz "
                               "file, or a folder of .npy/.npz files or images")
    files = sorted((p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.relative_to(path).as_posix())
    arrays = [p for p in files if p.suffix.lower() in ARRAY_SUFFIXES]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if arrays and images:
        raise CalibrationError(f"calibration folder {path} mixes arrays ({arrays[0].name}) and images "
                               f"({images[0].name}); keep one kind per folder")
    if arrays:
        return _counted(ArrayFolderSource(path, arrays, names), inputs)
    if images:
        if len(inputs) != 1:
            raise CalibrationError(f"calibration folder {path} holds images, but the model has {len(inputs)} inputs; "
                                   "give an .npz per sample keyed by input name")
        return _counted(ImageFolderSource(path, images, inputs[0].name, inputs[0].shape, preprocessing), inputs)
    raise CalibrationError(f"calibration folder {path} holds no .npy, .npz or image files "
                           f"({', '.join(IMAGE_SUFFIXES)})")


def _synthetic(spec: str, inputs: list[InputSpec], model_graph, num_samples: int | None, seed: int,
               preprocessing: ImagePreprocessing | None) -> CalibrationData:
    from edgekiln.calibration import zeroq

    _, _, count_text = spec.partition(":")
    try:
        count = int(count_text) if count_text else (num_samples or DEFAULT_SYNTHETIC_SAMPLES)
    except ValueError:
        raise CalibrationError(f"calibration data {spec!r}: the sample count after 'synthetic:' must be an "
                               "integer, e.g. synthetic:32") from None
    result = zeroq.synthesize(model_graph, inputs, count, seed=seed, preprocessing=preprocessing)
    source = ArraySource(result.inputs, f"synthetic ({result.method}, {count} samples)")
    return _counted(source, inputs)
