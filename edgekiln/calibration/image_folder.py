"""A folder of images as calibration data, with the model's preprocessing (Pillow, the `images` extra).

Each image goes through, in order:

    decode -> RGB (or L for grayscale) -> resize -> center crop -> x·scale -> (x − mean) / std
           -> channel order (RGB or BGR) -> layout (NCHW or NHWC, without the batch axis)

* resize: an int scales the shorter side to it (aspect kept); (h, w) resizes exactly;
  None scales the shorter side so the crop fits (aspect kept).  Bilinear.
* crop: (h, w) center crop; None crops to the model input's height and width.
* mean / std are per channel (in RGB order), in the units after `scale` (default 1/255,
  so ImageNet's mean is (0.485, 0.456, 0.406)); one value broadcasts.
* layout, grayscale: None reads them off the model input shape (a dim of 1 or 3 next to
  the batch axis -> NCHW; a single channel -> grayscale).

Images are decoded one at a time, when the sample is reached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edgekiln.calibration.data_readers import Chunk, hash_file
from edgekiln.errors import CalibrationError
from edgekiln.optional import require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image file becomes a model input (see the module docstring)."""

    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1 / 255
    layout: str | None = None
    channel_order: str = "RGB"
    grayscale: bool | None = None

    def __post_init__(self) -> None:
        if self.layout not in (None, "NCHW", "NHWC"):
            raise CalibrationError(f"image preprocessing: layout must be NCHW or NHWC, got {self.layout!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise CalibrationError(f"image preprocessing: channel order must be RGB or BGR, got {self.channel_order!r}")
        if any(s == 0 for s in self.std):
            raise CalibrationError(f"image preprocessing: std {self.std} has a zero (division by zero)")

    @classmethod
    def parse(cls, text: str) -> ImagePreprocessing:
        """From 'resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=NCHW,order=BGR,gray'."""
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            fields[key.strip()] = value.strip() if value else "true"
        return cls.from_mapping(fields)

    @classmethod
    def from_mapping(cls, fields: Mapping[str, Any]) -> ImagePreprocessing:
        """From a dict (a YAML config section); numbers may be strings, lists may be 'a/b/c' strings."""
        aliases = {"order": "channel_order", "gray": "grayscale", "size": "resize"}
        known = {"resize", "crop", "mean", "std", "scale", "layout", "channel_order", "grayscale"}
        values: dict[str, Any] = {}
        for key, value in fields.items():
            name = aliases.get(key, key)
            if name not in known:
                raise CalibrationError(f"image preprocessing: unknown field {key!r}; known: {', '.join(sorted(known))}")
            try:
                values[name] = _convert(name, value)
            except (ValueError, ZeroDivisionError):
                raise CalibrationError(f"image preprocessing: {key}={value!r} is not valid") from None
        return cls(**values)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, str):
        return [float(Fraction(v)) for v in value.replace("x", "/").split("/")]
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)]


def _convert(name: str, value: Any) -> Any:
    if name in ("layout", "channel_order"):
        return str(value).upper()
    if name == "grayscale":
        return str(value).lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)
    if name == "scale":  # '1/255' is a fraction here, not a list
        return float(Fraction(value.strip())) if isinstance(value, str) else float(value)
    if name in ("mean", "std"):
        return tuple(_numbers(value))
    sizes = [int(v) for v in _numbers(value)]  # resize / crop
    if name == "resize" and len(sizes) == 1:
        return sizes[0]
    return (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])


def image_geometry(shape: tuple[int, ...], spec: ImagePreprocessing, name: str) -> tuple[str, int, int, int]:
    """(layout, channels, height, width) of model input `name` with shape `shape` (batch axis first)."""
    if len(shape) != 4:
        raise CalibrationError(f"input {name!r} has shape {list(shape)}; an image folder needs a 4-D image input "
                               "(NCHW or NHWC)")
    layout = spec.layout or ("NCHW" if shape[1] in (1, 3) else "NHWC" if shape[3] in (1, 3) else None)
    if layout is None:
        raise CalibrationError(f"input {name!r} has shape {list(shape)}: cannot tell its channel axis; set the "
                               "image preprocessing layout (NCHW or NHWC)")
    channels, height, width = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    if channels not in (1, 3):
        raise CalibrationError(f"input {name!r} has {channels} channels in layout {layout}; images give 1 or 3")
    return layout, channels, height, width


def load_image(path: Path, spec: ImagePreprocessing, shape: tuple[int, ...], name: str) -> np.ndarray:
    """One image file -> one float32 sample for input `name` (shape without the batch axis)."""
    pil = require("PIL.Image", "images", "Calibrating from a folder of images")
    layout, channels, height, width = image_geometry(shape, spec, name)
    grayscale = spec.grayscale if spec.grayscale is not None else channels == 1
    if grayscale != (channels == 1):
        raise CalibrationError(f"image preprocessing asks grayscale={grayscale}, but input {name!r} has {channels} "
                               "channels")
    try:
        with pil.open(path) as image:
            image = image.convert("L" if grayscale else "RGB")
            crop_h, crop_w = spec.crop or (height, width)
            if isinstance(spec.resize, tuple):
                image = image.resize((spec.resize[1], spec.resize[0]), pil.Resampling.BILINEAR)
            else:
                shorter = spec.resize or max(crop_h, crop_w)
                factor = shorter / min(image.size)
                size = (max(1, round(image.size[0] * factor)), max(1, round(image.size[1] * factor)))
                image = image.resize(size, pil.Resampling.BILINEAR)
            if image.size[0] < crop_w or image.size[1] < crop_h:
                raise CalibrationError(f"{path}: after resizing to {image.size[1]}x{image.size[0]} it is smaller "
                                       f"than the crop {crop_h}x{crop_w}; increase the resize")
            left, top = (image.size[0] - crop_w) // 2, (image.size[1] - crop_h) // 2
            pixels = np.asarray(image.crop((left, top, left + crop_w, top + crop_h)), np.float32)
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot be read as an image ({exc})") from None
    if (crop_h, crop_w) != (height, width):
        raise CalibrationError(f"image preprocessing crops to {crop_h}x{crop_w}, but input {name!r} expects "
                               f"{height}x{width} (shape {list(shape)}); set crop={height}x{width}")
    pixels = pixels.reshape(crop_h, crop_w, -1) * np.float32(spec.scale)
    pixels = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    if layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, np.float32)


class ImageFolderSource:
    """One image per sample, in path order, decoded when reached."""

    def __init__(self, folder: Path, files: list[Path], input_name: str, input_shape: tuple[int, ...],
                 spec: ImagePreprocessing | None) -> None:
        require("PIL.Image", "images", "Calibrating from a folder of images")
        self.folder, self.files, self.spec = folder, files, spec or ImagePreprocessing()
        self.input_name, self.input_shape = input_name, input_shape
        image_geometry(input_shape, self.spec, input_name)  # fail now, not at the first image
        self.description = str(folder)

    def header_shapes(self):
        return None

    def chunks(self) -> Iterator[Chunk]:
        for path in self.files:
            yield str(path), {self.input_name: load_image(path, self.spec, self.input_shape, self.input_name)}

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"images" + repr(sorted(asdict(self.spec).items())).encode())
        for path in self.files:
            digest.update(path.relative_to(self.folder).as_posix().encode() + b"\0")
            hash_file(path, digest)
        return digest.hexdigest()
