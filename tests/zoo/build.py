"""Build, export and cache the zoo's torch models as ONNX files.

A model is built once and then read from the cache directory (``$EDGEKILN_ZOO_CACHE``,
default ``~/.cache/edgekiln/zoo``).  Every cached file name carries a key, the SHA-256 of

    the source of architectures.py, training.py and build.py  +  torch version
    +  ONNX opset  +  model name

so editing the zoo or upgrading torch builds fresh files instead of serving stale ones.
Per model the cache holds ``<name>-<key>.pt`` (the eval-mode state dict), the ONNX
exports ``<name>-<key>.onnx`` / ``<name>-<key>-dynbatch.onnx`` and, for the trained
models, ``<name>-<key>.heldout.npz`` and ``<name>-<key>.json`` (accuracy, training time).
Each file is written to a temporary name in the same directory and moved into place with
`os.replace`, so a parallel or interrupted run never leaves a half-written file; two
processes racing on a cold cache both build and the last rename wins.

Export uses the TorchScript exporter (``dynamo=False``, opset 17) with
``training=TrainingMode.PRESERVE``: in its default EVAL mode the exporter folds every
BatchNormalization into the preceding Conv, and the zoo exists to test that folding.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import nn

from tests.zoo import architectures as arch
from tests.zoo import training

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

_ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "lenet_mnist": arch.LeNet,
    "digits_cnn": arch.DigitsCNN,
    "inverted_residual": arch.InvertedResidualNet,
    "resnet_basic": arch.ResNetBasic,
    "repvgg": arch.RepVGGBlockNet,
    "mobileone": arch.MobileOneBlockNet,
    "se_hardswish": arch.SEHardSwishNet,
    "tiny_transformer": arch.TinyTransformer,
}
ZOO_MODELS: tuple[str, ...] = tuple(_ARCHITECTURES)
TRAINED_MODELS: tuple[str, ...] = tuple(training.RECIPES)

# The files whose text decides what a model is; any edit to them changes every cache key.
_KEYED_SOURCES = ("architectures.py", "training.py", "build.py")


def cache_dir() -> Path:
    """The zoo cache directory (created if missing); ``$EDGEKILN_ZOO_CACHE`` overrides it."""
    root = os.environ.get("EDGEKILN_ZOO_CACHE") or Path.home() / ".cache" / "edgekiln" / "zoo"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(name: str) -> str:
    """Hex digest naming `name`'s cached files (see the module docstring for what it covers)."""
    _check_name(name)
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for source in _KEYED_SOURCES:
        digest.update(source.encode() + b"\0" + (here / source).read_bytes() + b"\0")
    digest.update(f"torch={torch.__version__};opset={OPSET};model={name}".encode())
    return digest.hexdigest()[:16]


def zoo_input_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """The static (batch 1) input shape of zoo model `name`, keyed by input name."""
    _check_name(name)
    return {INPUT_NAME: (1, *_ARCHITECTURES[name].input_shape)}


def zoo_model(name: str, *, dynamic_batch: bool = False) -> Path:
    """Path of zoo model `name` as ONNX, building and caching it on first use.

    The default export has a static batch of 1; ``dynamic_batch=True`` gives the same
    weights with a symbolic ``batch`` dimension on the input and output.
    """
    suffix = "-dynbatch" if dynamic_batch else ""
    path = cache_dir() / f"{name}-{cache_key(name)}{suffix}.onnx"
    if not path.exists():
        proto = _export_onnx(name, zoo_torch_model(name), dynamic_batch)
        _atomic_write(path, lambda tmp: onnx.save(proto, tmp))
    return path


def zoo_torch_model(name: str) -> nn.Module:
    """The eval-mode torch model whose weights the cached ONNX files hold."""
    weights = _ensure_weights(name)
    model = _ARCHITECTURES[name]()
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def zoo_sample_input(name: str, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """A float32 input for zoo model `name`: ``{"input": array of shape (batch, C, H, W)}``.

    Trained models get `batch` distinct held-out images (chosen by `seed`); the others get
    standard normal noise from `seed`.  Static exports only accept ``batch=1``.
    """
    shape = (batch, *_ARCHITECTURES[_check_name(name)].input_shape)
    rng = np.random.default_rng(seed)
    if name in TRAINED_MODELS:
        images, _ = zoo_heldout(name)
        return {INPUT_NAME: images[rng.choice(len(images), size=batch, replace=False)]}
    return {INPUT_NAME: rng.standard_normal(shape, dtype=np.float32)}


def zoo_heldout(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(inputs float32 (N, C, H, W), labels int64 (N,)) held out when training `name`."""
    _ensure_weights(_check_trained(name))
    with np.load(_artifact(name, ".heldout.npz")) as data:
        return data["x"], data["y"]


def zoo_accuracy(name: str) -> float:
    """Held-out top-1 accuracy of trained model `name`, as measured right after training."""
    return float(zoo_training_info(name)["accuracy"])


def zoo_training_info(name: str) -> dict[str, Any]:
    """What training `name` recorded: accuracy, train_seconds, epochs, n_test, torch."""
    _ensure_weights(_check_trained(name))
    return json.loads(_artifact(name, ".json").read_text())


def _check_name(name: str) -> str:
    if name not in _ARCHITECTURES:
        raise KeyError(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO_MODELS)}")
    return name


def _check_trained(name: str) -> str:
    if _check_name(name) not in TRAINED_MODELS:
        raise KeyError(f"zoo model {name!r} is not trained; only {', '.join(TRAINED_MODELS)} are")
    return name


def _artifact(name: str, suffix: str) -> Path:
    return cache_dir() / f"{name}-{cache_key(name)}{suffix}"


def _ensure_weights(name: str) -> Path:
    """Create (train or randomly initialize) and cache `name`'s weights; return the .pt path."""
    weights = _artifact(_check_name(name), ".pt")
    if name in TRAINED_MODELS:
        heldout, info = _artifact(name, ".heldout.npz"), _artifact(name, ".json")
        if weights.exists() and heldout.exists() and info.exists():
            return weights
        result = training.train(name)
        recipe = training.RECIPES[name]
        record = {
            "accuracy": result.accuracy,
            "train_seconds": round(result.train_seconds, 2),
            "epochs": recipe.epochs,
            "n_test": len(result.y_test),
            "torch": torch.__version__,
        }
        _atomic_write(heldout, lambda tmp: _save_npz(tmp, x=result.x_test, y=result.y_test))
        _atomic_write(info, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
        model = result.model
    else:
        if weights.exists():
            return weights
        model = _random_model(name)
    _atomic_write(weights, lambda tmp: _save_state_dict(tmp, model))
    return weights


def _random_model(name: str) -> nn.Module:
    """An untrained model with seeded weights and non-trivial BatchNorm statistics."""
    seed = zlib.crc32(name.encode())  # stable across processes, unlike hash()
    torch.manual_seed(seed)
    model = _ARCHITECTURES[name]()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn((16, *model.input_shape), generator=generator)
    arch.init_norm_layers(model, example, generator)
    return model


def _export_onnx(name: str, model: nn.Module, dynamic_batch: bool) -> onnx.ModelProto:
    """Export `model` with the TorchScript exporter; tag the result with zoo metadata."""
    example = torch.zeros(zoo_input_shapes(name)[INPUT_NAME])
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter announces its own deprecation on every call.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # PRESERVE + constant folding is safe here: the model is in eval mode.
        warnings.filterwarnings("ignore", message=".*constant folding be turned off.*")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            training=torch.onnx.TrainingMode.PRESERVE,  # keep BatchNormalization nodes
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {"edgekiln.zoo.name": name, "edgekiln.zoo.key": cache_key(name)}
    if name in TRAINED_MODELS:
        metadata["edgekiln.zoo.heldout_accuracy"] = f"{zoo_accuracy(name):.4f}"
    onnx.helper.set_model_props(proto, metadata)
    return proto


def _save_state_dict(path: Path, model: nn.Module) -> None:
    # Through a buffer: torch.save names the zip's root folder after the (random) file name.
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    path.write_bytes(buffer.getvalue())


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    # Through a file object: np.savez would append ".npz" to a temporary file name.
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file beside `path`, then rename it onto `path`."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cached files are ordinary files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
