"""Readers of calibration data: .npy, .npz, folders of .npy/.npz files, Python iterables, in-memory arrays.

A reader is a `Source`: an iterable of *chunks* `(label, {input name: array})`, where each
array holds one sample (the model input's shape without its batch axis) or several samples
along a leading axis.  `CalibrationData` splits chunks into samples and validates them;
readers only locate and load.  Nothing here reads more than one chunk into memory:

* .npy: memory-mapped, one chunk; rows are read from disk as they are used;
* .npz: each member is streamed from the zip sample by sample (no full decompression);
* folders: one file per chunk, opened when it is reached; headers are read up front
  (cheap) so shapes and the sample count are known before calibration starts.

`fingerprint()` identifies the content for the statistics cache (None: cannot be known
without consuming the data, e.g. a generator).
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgekiln.errors import CalibrationError

Chunk = tuple[str, dict[str, np.ndarray]]
ARRAY_SUFFIXES = (".npy", ".npz")


class Source(Protocol):
    """Where calibration samples come from (see the module docstring)."""

    description: str

    def chunks(self) -> Iterator[Chunk]: ...

    def header_shapes(self) -> list[tuple[str, dict[str, tuple[tuple[int, ...], np.dtype]]]] | None:
        """(label, {input: (shape, dtype)}) per chunk when known without reading values, else None."""
        ...

    def fingerprint(self) -> str | None: ...


def hash_file(path: Path, digest: hashlib._Hash) -> None:
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)


# -- in-memory and .npy --------------------------------------------------------------------------

@dataclass
class ArraySource:
    """Arrays already at hand (or memory-mapped), keyed by input name: one chunk."""

    arrays: dict[str, np.ndarray]
    description: str
    content_hash: str | None = None

    def chunks(self) -> Iterator[Chunk]:
        yield self.description, self.arrays

    def header_shapes(self):
        return [(self.description, {k: (a.shape, a.dtype) for k, a in self.arrays.items()})]

    def fingerprint(self) -> str | None:
        if self.content_hash is None:
            digest = hashlib.sha256()
            for name in sorted(self.arrays):
                array = np.ascontiguousarray(self.arrays[name])
                digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
                digest.update(memoryview(array.reshape(-1).view(np.uint8)))
            self.content_hash = digest.hexdigest()
        return self.content_hash


def read_npy(path: Path, input_names: Sequence[str]) -> ArraySource:
    """A .npy file feeds a single-input model."""
    if len(input_names) != 1:
        raise CalibrationError(
            f"{path}: a .npy file holds one array, but the model has {len(input_names)} inputs "
            f"({', '.join(map(repr, input_names))}); give an .npz file with one array per input name")
    array = _load_npy(path)
    digest = hashlib.sha256(b"npy")
    hash_file(path, digest)
    return ArraySource({input_names[0]: array}, str(path), digest.hexdigest())


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # object arrays, Fortran-ordered memmaps, corrupt headers
        if "pickle" in str(exc).lower():
            raise CalibrationError(f"{path}: holds Python objects (a pickled array); save a numeric array "
                                   "with np.save(path, np.asarray(data, np.float32))") from None
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as again:
            raise CalibrationError(f"{path}: not a readable .npy file ({again})") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: not a readable .npy file ({exc})") from None


# -- .npz ---------------------------------------------------------------------------------------

def npz_members(path: Path, input_names: Sequence[str]) -> dict[str, str]:
    """{input name: zip member} for an .npz; a single-array file feeds a single-input model whatever its key."""
    try:
        with zipfile.ZipFile(path) as archive:
            keys = {m[:-4]: m for m in archive.namelist() if m.endswith(".npy")}
    except (zipfile.BadZipFile, OSError) as exc:
        raise CalibrationError(f"{path}: not a readable .npz file ({exc})") from None
    if len(input_names) == 1 and len(keys) == 1:
        return {input_names[0]: next(iter(keys.values()))}
    missing = [n for n in input_names if n not in keys]
    extra = sorted(set(keys) - set(input_names))
    if missing or extra:
        raise CalibrationError(
            f"{path}: holds arrays {', '.join(map(repr, sorted(keys))) or '(none)'} but the model's inputs are "
            f"{', '.join(map(repr, input_names))}; save one array per input name, e.g. "
            f"np.savez(path, {', '.join(f'{n}=...' for n in input_names)})")
    return {name: keys[name] for name in input_names}


def _read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)  # (shape, fortran_order, dtype)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"unsupported .npy format version {version}; re-save it with numpy's np.save")


@dataclass
class NpzSource:
    """An .npz streamed member by member, sample by sample (zip members are read sequentially)."""

    path: Path
    members: dict[str, str]

    @property
    def description(self) -> str:
        return str(self.path)

    def header_shapes(self):
        with zipfile.ZipFile(self.path) as archive:
            shapes = {}
            for name, member in self.members.items():
                with archive.open(member) as handle:
                    try:
                        shape, _, dtype = _read_npy_header(handle)
                    except ValueError as exc:
                        raise CalibrationError(f"{self.path}: array {member[:-4]!r} is not readable ({exc})") from None
                    if dtype.hasobject:
                        raise CalibrationError(f"{self.path}: array {member[:-4]!r} holds Python objects; "
                                               "save numeric arrays")
                    shapes[name] = (tuple(shape), dtype)
        return [(self.description, shapes)]

    def chunks(self) -> Iterator[Chunk]:
        ((_, shapes),) = self.header_shapes()
        counts = {shape[0] if shape else 1 for shape, _ in shapes.values()}
        with zipfile.ZipFile(self.path) as archive:
            handles = {name: archive.open(member) for name, member in self.members.items()}
            try:
                headers = {name: _read_npy_header(h) for name, h in handles.items()}
                if len(counts) != 1 or any(fortran or not shape for shape, fortran, _ in headers.values()):
                    # Ragged counts, Fortran order or 0-d: read whole arrays and let validation explain.
                    with np.load(self.path, allow_pickle=False) as data:
                        yield self.description, {n: data[m[:-4]] for n, m in self.members.items()}
                    return
                for index in range(counts.pop()):
                    sample = {}
                    for name, (shape, _, dtype) in headers.items():
                        size = math.prod(shape[1:])
                        raw = handles[name].read(size * dtype.itemsize)
                        sample[name] = np.frombuffer(raw, dtype, count=size).reshape(shape[1:])
                    yield f"{self.path} sample {index}", sample
            finally:
                for handle in handles.values():
                    handle.close()

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"npz" + repr(sorted(self.members.items())).encode())
        hash_file(self.path, digest)
        return digest.hexdigest()


# -- folders of .npy / .npz ----------------------------------------------------------------------

@dataclass
class ArrayFolderSource:
    """One .npy (single-input models) or .npz (keyed by input name) file per chunk, in name order."""

    folder: Path
    files: list[Path]
    input_names: list[str]

    @property
    def description(self) -> str:
        return str(self.folder)

    def header_shapes(self):
        shapes = []
        for path in self.files:
            if path.suffix == ".npz":
                shapes += NpzSource(path, npz_members(path, self.input_names)).header_shapes()
                continue
            if len(self.input_names) != 1:
                raise CalibrationError(
                    f"{path}: a .npy file holds one array, but the model has {len(self.input_names)} inputs; "
                    "use one .npz file per sample, keyed by input name")
            try:
                with path.open("rb") as handle:
                    shape, _, dtype = _read_npy_header(handle)
            except (ValueError, OSError) as exc:
                raise CalibrationError(f"{path}: not a readable .npy file ({exc})") from None
            shapes.append((str(path), {self.input_names[0]: (tuple(shape), dtype)}))
        return shapes

    def chunks(self) -> Iterator[Chunk]:
        for path in self.files:
            if path.suffix == ".npz":
                yield from NpzSource(path, npz_members(path, self.input_names)).chunks()
            else:
                yield str(path), {self.input_names[0]: _load_npy(path)}

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"folder")
        for path in self.files:
            digest.update(path.relative_to(self.folder).as_posix().encode() + b"\0")
            hash_file(path, digest)
        return digest.hexdigest()


# -- Python iterables ----------------------------------------------------------------------------

@dataclass
class IterableSource:
    """Items that are dicts {input name: array}, arrays (single-input models) or tuples in input order.

    A list or tuple is fingerprinted and can be read many times; any other iterable is read
    as it comes (a generator only once) and is not cached.
    """

    items: Iterable
    input_names: list[str]
    description: str = "calibration iterable"
    _used: bool = False

    def header_shapes(self):
        if not isinstance(self.items, Sequence):
            return None
        return [(label, {k: (a.shape, a.dtype) for k, a in chunk.items()}) for label, chunk in self._converted()]

    def chunks(self) -> Iterator[Chunk]:
        if self._used and iter(self.items) is self.items:
            raise CalibrationError(
                f"the {self.description} is an iterator that was already consumed; pass a list, or a fresh "
                "iterator for each calibration")
        self._used = True
        yield from self._converted()

    def _converted(self) -> Iterator[Chunk]:
        for index, item in enumerate(self.items):
            yield f"{self.description} item {index}", self._as_dict(item, index)

    def _as_dict(self, item, index: int) -> dict[str, np.ndarray]:
        label = f"{self.description} item {index}"
        if isinstance(item, Mapping):
            names = list(item)
            missing = [n for n in self.input_names if n not in item]
            extra = [n for n in names if n not in self.input_names]
            if missing or extra:
                raise CalibrationError(
                    f"{label}: has keys {', '.join(map(repr, names))} but the model's inputs are "
                    f"{', '.join(map(repr, self.input_names))}")
            return {n: np.asarray(item[n]) for n in self.input_names}
        if isinstance(item, (tuple, list)) and len(item) == len(self.input_names) and len(self.input_names) > 1:
            return {n: np.asarray(a) for n, a in zip(self.input_names, item)}
        if len(self.input_names) == 1:
            return {self.input_names[0]: np.asarray(item)}
        raise CalibrationError(
            f"{label}: is a {type(item).__name__}, but the model has {len(self.input_names)} inputs; give a dict "
            f"keyed by input name ({', '.join(map(repr, self.input_names))})")

    def fingerprint(self) -> str | None:
        if not isinstance(self.items, Sequence):
            return None
        digest = hashlib.sha256(b"iterable")
        for _, chunk in self._converted():
            digest.update(ArraySource(chunk, "").fingerprint().encode())
        return digest.hexdigest()
