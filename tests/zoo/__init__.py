"""Test model zoo: small torch-built ONNX models plus the real PP-OCR models.

Two families, one set of names:

* the zoo (`ZOO_MODELS`): plain-torch architectures exported to ONNX opset 17 and cached
  on disk (`zoo_model`); ``lenet_mnist`` and ``digits_cnn`` are trained on real digits and
  come with held-out data (`zoo_heldout`) and accuracy (`zoo_accuracy`);
* PP-OCR (`PPOCR_MODELS`): the detector, recognizer and direction classifier shipped by
  the rapidocr-onnxruntime wheel (`ppocr_model`), with dynamic input dims.

`model_path`, `input_shapes` and `sample_input` accept a name from either family.

    >>> from tests.zoo import model_path, sample_input
    >>> path = model_path("resnet_basic")          # builds once, then cached
    >>> feeds = sample_input("resnet_basic")       # {"input": float32 (1, 3, 32, 32)}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.zoo.build import (
    TRAINED_MODELS,
    ZOO_MODELS,
    cache_dir,
    zoo_accuracy,
    zoo_heldout,
    zoo_input_shapes,
    zoo_model,
    zoo_sample_input,
    zoo_torch_model,
    zoo_training_info,
)
from tests.zoo.ppocr import (
    PPOCR_MODELS,
    ZooModelUnavailableError,
    ppocr_input_shapes,
    ppocr_model,
    ppocr_sample_input,
)

__all__ = [
    "PPOCR_MODELS",
    "TRAINED_MODELS",
    "ZOO_MODELS",
    "ZooModelUnavailableError",
    "all_models",
    "cache_dir",
    "input_shapes",
    "model_path",
    "ppocr_input_shapes",
    "ppocr_model",
    "ppocr_sample_input",
    "sample_input",
    "zoo_accuracy",
    "zoo_heldout",
    "zoo_input_shapes",
    "zoo_model",
    "zoo_sample_input",
    "zoo_torch_model",
    "zoo_training_info",
]


def all_models() -> list[str]:
    """Every model name: the torch zoo first, then PP-OCR."""
    return [*ZOO_MODELS, *PPOCR_MODELS]


def model_path(name: str) -> Path:
    """The ONNX file for any model name (zoo models are built with a static batch of 1)."""
    return ppocr_model(name) if name in PPOCR_MODELS else zoo_model(name)


def input_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Static input shapes for any model name, keyed by input name."""
    return ppocr_input_shapes(name) if name in PPOCR_MODELS else zoo_input_shapes(name)


def sample_input(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch-1 input for any model name, matching `input_shapes(name)`."""
    return ppocr_sample_input(name, seed) if name in PPOCR_MODELS else zoo_sample_input(name, 1, seed)
