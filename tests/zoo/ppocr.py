"""The real PP-OCR ONNX models shipped inside the ``rapidocr-onnxruntime`` wheel.

* ``ppocr_det``: PP-OCRv4 text detector (DBNet, MobileNetV3 backbone), output is a
  1-channel text probability map the size of the input.
* ``ppocr_rec``: PP-OCRv4 recognizer (SVTR-LCNet, CTC over 6625 symbols), input height 48.
* ``ppocr_cls``: PP-OCR mobile v2.0 text-direction classifier (0 / 180 degrees).

The files are located with `importlib.util.find_spec`, without importing the package
(its own dependencies pull OpenCV).  Their inputs have symbolic batch / height / width;
`ppocr_input_shapes` picks small static shapes for the compiler's tests.  The weights are
Constant nodes, not initializers.  RapidOCR normalizes all three inputs as
``(pixel / 255 - 0.5) / 0.5`` in RGB channel order, NCHW float32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

PPOCR_MODELS: tuple[str, ...] = ("ppocr_det", "ppocr_rec", "ppocr_cls")
PPOCR_INPUT_NAME = "x"
INSTALL_HINT = "pip install --no-deps rapidocr-onnxruntime==1.4.4"

_FILES = {
    "ppocr_det": "ch_PP-OCRv4_det_infer.onnx",
    "ppocr_rec": "ch_PP-OCRv4_rec_infer.onnx",
    "ppocr_cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
# det: sides must be multiples of 32 (the FPN downsamples 5 times).
# rec: height is fixed at 48 for v4 (RapidOCR's rec_img_shape is 3x48x320); width 160.
# cls: RapidOCR's cls_image_shape.
_STATIC_SHAPES = {
    "ppocr_det": (1, 3, 160, 160),
    "ppocr_rec": (1, 3, 48, 160),
    "ppocr_cls": (1, 3, 48, 192),
}


class ZooModelUnavailableError(FileNotFoundError):
    """A zoo model whose files come from a package that is not installed."""


def ppocr_model(name: str) -> Path:
    """Path of the PP-OCR ONNX file `name`, inside the installed rapidocr-onnxruntime wheel."""
    if name not in _FILES:
        raise KeyError(f"unknown PP-OCR model {name!r}; choose one of {', '.join(PPOCR_MODELS)}")
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise ZooModelUnavailableError(
            f"PP-OCR model {name!r} comes from the rapidocr-onnxruntime wheel, which is not "
            f"installed. Install it without its OpenCV dependencies: {INSTALL_HINT}"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / _FILES[name]
    if not path.is_file():
        raise ZooModelUnavailableError(
            f"PP-OCR model file {path} is missing from the installed rapidocr-onnxruntime; "
            f"reinstall the version the zoo expects: {INSTALL_HINT}"
        )
    return path


def ppocr_input_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """A small static input shape for PP-OCR model `name`, keyed by input name."""
    return {PPOCR_INPUT_NAME: _STATIC_SHAPES[name]}


def ppocr_sample_input(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic printed page at `ppocr_input_shapes(name)`, normalized as PP-OCR expects.

    Dark glyph-sized strokes in lines of text on a light background, drawn from `seed`.
    Text-like input matters: on noise the detector's sigmoid output sits near 0 everywhere,
    where float rounding alone moves it by 1e-3 relative, so comparisons would test nothing.
    Drawn here rather than taken from scikit-image so every machine sees the same image.
    """
    shape = _STATIC_SHAPES[name]
    rng = np.random.default_rng(seed)
    height, width = shape[2], shape[3]
    page = np.full((height, width), 235.0) + rng.normal(0.0, 6.0, (height, width))
    line_height = max(8, min(height // 3, 24))
    for top in range(line_height // 2, height - line_height, int(line_height * 1.6)):
        x = int(rng.integers(2, 10))
        while x < width - 6:
            glyph_width = int(rng.integers(line_height // 3, line_height // 2 + 2))
            glyph_height = int(rng.integers(line_height * 2 // 3, line_height))
            # A glyph: a dark box with a lighter counter, like the bowl of an 'o' or 'e'.
            page[top:top + glyph_height, x:x + glyph_width] = rng.uniform(20, 60)
            page[top + 2:top + glyph_height - 2, x + 2:x + glyph_width - 2] = 200.0
            x += glyph_width + int(rng.integers(1, 4)) + (int(rng.integers(6, 12)) if rng.random() < 0.2 else 0)
    gray = (np.clip(page, 0, 255) / 255.0 - 0.5) / 0.5
    image = np.broadcast_to(gray.astype(np.float32), shape)  # the same page in all 3 channels
    return {PPOCR_INPUT_NAME: np.ascontiguousarray(image)}
