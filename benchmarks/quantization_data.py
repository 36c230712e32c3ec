"""Shared by the quantization benchmarks: which inputs calibrate, which evaluate, and the SQNR.

Calibration and evaluation never share an input:

    model                      calibration                              evaluation
    lenet_mnist, digits_cnn    random images of the TRAINING split       the held-out split
                               (tests.zoo.training: what the model        (`zoo_heldout`, what the recorded
                               was trained on; seed 0)                    accuracy was measured on)
    other zoo models           `sample_input(name, seed=1000 + k)`      `sample_input(name, seed=k)`
    PP-OCR                     synthetic text pages, seeds 1000 + k     synthetic text pages, seeds k

The other zoo models are randomly initialized and see standard normal noise; PP-OCR sees
drawn pages of text (`tests.zoo.ppocr.ppocr_sample_input`).

    SQNR = 10 · log10( Σ y² / Σ (y - ŷ)² )  dB

over every element of every output of every evaluation input (y: the float model in
onnxruntime, ŷ: the quantized model), so one number per model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime as ort

# tests.zoo (and torch with it) is imported where it is used: the cost subprocesses of
# quantization_sqnr import this module and should start light.
Feeds = dict[str, np.ndarray]
CALIBRATION_SEED_BASE = 1000


def scoring_target():
    """The host target with its pipeline and precisions, lowered to the integer Program only.

    Quantized artifacts are scored with the integer reference interpreter, the definition of a
    correct output that every backend matches bit for bit (tests/backends/arm_cpu); building the
    C runtime for each of the hundreds of compiles a benchmark makes would measure nothing more.
    The mobile_gpu backend runs the same quantized stages as arm_cpu and builds nothing; compile
    with `check_ops=False` (its op-support check is the GPU's, not the host's).
    """
    from dataclasses import replace

    from edgekiln.compiler.target import get_target

    return replace(get_target("host"), backend="mobile_gpu")


def training_images(name: str) -> np.ndarray:
    """The training split of trained zoo model `name` (float32 NCHW), as tests.zoo.training split it."""
    from tests.zoo.training import RECIPES

    x_train, _, _, _ = RECIPES[name].load()
    return x_train


def calibration_feeds(name: str, count: int) -> list[Feeds]:
    """`count` batch-1 calibration inputs for `name` (see the module docstring)."""
    from tests.zoo import TRAINED_MODELS, sample_input

    if name in TRAINED_MODELS:
        images = training_images(name)
        chosen = np.random.default_rng(0).choice(len(images), size=min(count, len(images)), replace=False)
        return [{"input": images[i:i + 1]} for i in sorted(chosen)]
    return [sample_input(name, seed=CALIBRATION_SEED_BASE + k) for k in range(count)]


def evaluation_feeds(name: str, count: int | None) -> list[Feeds]:
    """Batch-1 evaluation inputs: the first `count` held-out images (None: all), or seeds 0..count-1."""
    from tests.zoo import TRAINED_MODELS, sample_input, zoo_heldout

    if name in TRAINED_MODELS:
        images, _ = zoo_heldout(name)
        images = images if count is None else images[:count]
        return [{"input": images[i:i + 1]} for i in range(len(images))]
    return [sample_input(name, seed=k) for k in range(count or 8)]


def heldout_labels(name: str, count: int | None) -> np.ndarray:
    from tests.zoo import zoo_heldout

    _, labels = zoo_heldout(name)
    return labels if count is None else labels[:count]


def ort_session(model: bytes, optimize: bool = False) -> ort.InferenceSession:
    """One-thread session; `optimize=False` runs the graph as written (a QDQ graph as its float reference)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


Runner = Callable[[Feeds], Sequence[np.ndarray]]


def ort_runner(model: bytes, optimize: bool = False) -> Runner:
    """feeds -> outputs in the model's output order."""
    session = ort_session(model, optimize)
    return lambda feeds: session.run(None, feeds)


def artifact_runner(artifact, output_names: Sequence[str]) -> Runner:
    """feeds -> an artifact's outputs (the integer reference for a quantized compile), in `output_names` order."""
    def run(feeds: Feeds) -> list[np.ndarray]:
        out = artifact.run(feeds)
        return [out[name] for name in output_names]
    return run


def outputs(runner: Runner, feeds: Sequence[Feeds]) -> list[list[np.ndarray]]:
    return [list(runner(f)) for f in feeds]


def sqnr_db(reference: list[list[np.ndarray]], actual: list[list[np.ndarray]]) -> float:
    """SQNR over every element of every output of every input (see the module docstring)."""
    signal = noise = 0.0
    for ref_sample, act_sample in zip(reference, actual, strict=True):
        for expected, got in zip(ref_sample, act_sample, strict=True):
            y = np.asarray(expected, np.float64)
            signal += float(np.sum(y ** 2))
            noise += float(np.sum((y - np.asarray(got, np.float64)) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(signal / noise))


def top1(logits: list[list[np.ndarray]]) -> np.ndarray:
    """Predicted class of each sample (first output, batch 1)."""
    return np.array([int(np.argmax(sample[0])) for sample in logits])
