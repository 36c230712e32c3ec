"""Data-free calibration inputs, in the spirit of ZeroQ (Cai et al., 2020).

A trained BatchNormalization layer remembers the per-channel mean μ and variance σ² of
the activations that entered it during training.  Starting from Gaussian noise, optimize a
batch of N inputs x so that the activations entering every BN, computed by the model
itself, have the same statistics:

    L(x) = Σ_BN  ‖μ̃_BN(x) − μ_BN‖₂ + ‖σ̃_BN(x) − σ_BN‖₂

μ̃, σ̃ per channel over the batch and spatial axes (biased), σ = √(running_var).  Adam,
lr 0.05, until `iterations` or `time_budget_s`; the x with the lowest L is kept.

This needs the graph BEFORE BatchNorm folding (the frontend-loaded graph) and gradients,
so the ancestors of the BN inputs are translated to torch (`TorchPrefix`; torch is the
`torch` extra, imported only here).  Ops after the last BN never run.  When the model has
no BN, or the prefix holds an op the table cannot translate, the inputs are Gaussian
(standard normal, or uniform pixels through a declared `ImagePreprocessing`) with a warning.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgekiln.calibration.torch_prefix import PrefixError, TorchPrefix
from edgekiln.compiler.graph import Graph
from edgekiln.errors import CalibrationError
from edgekiln.optional import require

DEFAULT_ITERATIONS = 500
DEFAULT_TIME_BUDGET_S = 20.0
LEARNING_RATE = 0.05


@dataclass
class SyntheticInputs:
    """The synthesized batch ({input name: [N, ...]}) and how it was made."""

    inputs: dict[str, np.ndarray]
    method: str  # "zeroq" or "gaussian"
    reason: str = ""  # why Gaussian, when it is
    loss_noise: float | None = None  # L at the Gaussian start
    loss_final: float | None = None  # L of the returned batch
    iterations: int = 0
    seconds: float = 0.0
    bn_count: int = 0
    history: list[float] = field(default_factory=list)


def gaussian_inputs(inputs: Sequence, count: int, seed: int = 0, preprocessing=None) -> dict[str, np.ndarray]:
    """Standard normal samples, or uniform pixels in [0, 1/scale) normalized by `preprocessing` (image inputs)."""
    from edgekiln.calibration.image_folder import image_geometry

    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs:
        _require_float(spec)
        shape = (count, *spec.sample_shape)
        if preprocessing is None or len(spec.shape) != 4:
            arrays[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            continue
        layout, channels, _, _ = image_geometry(spec.shape, preprocessing, spec.name)
        pixels = rng.uniform(0.0, 1.0, shape)  # already in the units after `scale`
        axis_shape = (1, channels, 1, 1) if layout == "NCHW" else (1, 1, 1, channels)
        mean = np.broadcast_to(np.asarray(preprocessing.mean, np.float64), (channels,)).reshape(axis_shape)
        std = np.broadcast_to(np.asarray(preprocessing.std, np.float64), (channels,)).reshape(axis_shape)
        arrays[spec.name] = ((pixels - mean) / std).astype(spec.dtype)
    return arrays


def _require_float(spec) -> None:
    if not np.issubdtype(spec.dtype, np.floating):
        raise CalibrationError(f"synthetic calibration data need float inputs, but input {spec.name!r} is "
                               f"{spec.dtype}; give real calibration data (.npy/.npz)")


def batch_norm_nodes(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")]


def synthesize(graph: Graph | None, inputs: Sequence, count: int, *, seed: int = 0, preprocessing=None,
               iterations: int = DEFAULT_ITERATIONS, time_budget_s: float = DEFAULT_TIME_BUDGET_S,
               threads: int = 1) -> SyntheticInputs:
    """`count` synthetic samples per input (see the module docstring); `inputs` are `InputSpec`s."""
    if count < 1:
        raise CalibrationError(f"synthetic calibration needs at least 1 sample, got {count}")
    for spec in inputs:
        _require_float(spec)

    def fallback(reason: str) -> SyntheticInputs:
        warnings.warn(f"synthetic calibration data: {reason}; using Gaussian inputs instead, so activation ranges "
                      "may not match real data. Give real calibration data (--calib DATA) for best accuracy",
                      stacklevel=3)
        return SyntheticInputs(gaussian_inputs(inputs, count, seed, preprocessing), "gaussian", reason)

    if graph is None:
        return fallback("no model graph was given to match BatchNorm statistics against")
    bns = batch_norm_nodes(graph)
    if not bns:
        return fallback("the model has no BatchNormalization layers to take statistics from")
    torch = require("torch", "torch", "Data-free (synthetic) calibration")
    stats = []
    for node in bns:
        mean, var = (Graph.constant(node.inputs[i]) for i in (3, 4))
        if mean is None or var is None:
            return fallback(f"BatchNormalization {node.name!r} has non-constant running statistics")
        stats.append((node.inputs[0].name, torch.from_numpy(np.array(mean, np.float32)),
                      torch.from_numpy(np.sqrt(np.maximum(np.array(var, np.float32), 0.0)))))
    try:
        prefix = TorchPrefix(graph, [name for name, _, _ in stats])
    except PrefixError as exc:
        return fallback(f"{exc} (it comes before a BatchNormalization)")
    return _optimize(torch, prefix, stats, inputs, count, seed, preprocessing, iterations, time_budget_s, threads)


def _bn_loss(torch, activations: dict, stats: list):
    total = 0.0
    for name, mean, std in stats:
        x = activations[name]
        axes = [0, *range(2, x.dim())]
        batch_mean = x.mean(dim=axes)
        batch_std = torch.sqrt(x.var(dim=axes, unbiased=False) + 1e-8)
        total = total + torch.linalg.vector_norm(batch_mean - mean) + torch.linalg.vector_norm(batch_std - std)
    return total


def _optimize(torch, prefix: TorchPrefix, stats: list, inputs: Sequence, count: int, seed: int, preprocessing,
              iterations: int, time_budget_s: float, threads: int) -> SyntheticInputs:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        start_arrays = gaussian_inputs(inputs, count, seed, preprocessing)
        variables = {name: torch.tensor(array, requires_grad=True) for name, array in start_arrays.items()}
        optimizer = torch.optim.Adam(list(variables.values()), lr=LEARNING_RATE)
        best_loss, best, history = float("inf"), None, []
        done = 0
        for done in range(1, iterations + 1):
            optimizer.zero_grad()
            loss = _bn_loss(torch, prefix(variables), stats)
            value = float(loss.detach())
            history.append(value)
            if value < best_loss:
                best_loss = value
                best = {name: v.detach().numpy().copy() for name, v in variables.items()}
            loss.backward()
            optimizer.step()
            if time.perf_counter() - start > time_budget_s:
                break
        with torch.no_grad():  # the last step's result was never scored
            final = float(_bn_loss(torch, prefix(variables), stats))
        if final < best_loss:
            best_loss, best = final, {name: v.detach().numpy().copy() for name, v in variables.items()}
    finally:
        torch.set_num_threads(previous_threads)
    return SyntheticInputs(best, "zeroq", loss_noise=history[0], loss_final=best_loss, iterations=done,
                           seconds=time.perf_counter() - start, bn_count=len(stats), history=history)
