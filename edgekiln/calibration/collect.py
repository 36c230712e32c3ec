"""`calibrate`: run the float graph on calibration data and observe every activation's range.

The graph (the final float graph, after fusion) is run in onnxruntime with every value to
observe added as a graph output, one batch at a time (a batch is what `CalibrationData`
yields: the model's own static batch, usually one sample).  Each output array goes to that
value's observer and is dropped, so memory holds one batch's activations plus the
observers' fixed state (2048-bin histograms at most), whatever the number of samples.

Observed by default: every float graph input and every float output of every node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from edgekiln.calibration import stats_cache
from edgekiln.calibration.calibration_data import CalibrationData
from edgekiln.calibration.observers import NonFiniteError, Observer, make_observer
from edgekiln.compiler.graph import Graph
from edgekiln.errors import CalibrationError

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class ActivationRange:
    """The clipping range of one activation: low <= 0 <= high and high > low, always."""

    low: float
    high: float
    method: str
    samples: int


def observed_values(graph: Graph, values: Sequence[str] | None = None) -> list[str]:
    """The value names to observe: `values` (checked), or every float graph input and node output."""
    available = {v.name: v for v in graph.inputs}
    for node in graph.nodes:
        for out in node.outputs:
            if out.name:
                available[out.name] = out
    if values is not None:
        unknown = [v for v in values if v not in available]
        if unknown:
            raise CalibrationError(f"cannot calibrate value(s) {', '.join(map(repr, unknown[:5]))}: no graph input "
                                   "or node output has that name")
        return list(dict.fromkeys(values))
    return [name for name, v in available.items() if v.dtype is not None and int(v.dtype) in _FLOAT_TYPES]


def _session(graph: Graph, names: list[str], threads: int) -> tuple[ort.InferenceSession, list[str]]:
    proto = graph.to_proto()
    inputs = {i.name for i in proto.graph.input}
    present = {o.name for o in proto.graph.output}
    types = {v.name: v.dtype for v in [*graph.inputs, *(o for n in graph.nodes for o in n.outputs)]}
    for name in names:
        if name not in present and name not in inputs:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, int(types[name]), None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Basic optimizations only (constant folding, no fusions): the values observed are the graph's own.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise CalibrationError(f"onnxruntime cannot run {_model_label(graph)} for calibration: {exc}") from None
    return session, [n for n in names if n not in inputs]


def _model_label(graph: Graph) -> str:
    return graph.source.name if graph.source is not None else (graph.main.name or "the model")


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled,
                    transient=False)


def calibrate(graph: Graph, data: CalibrationData, method: str = "minmax", values: Sequence[str] | None = None,
              progress: bool = True, cache: bool = False, threads: int = 1) -> dict[str, ActivationRange]:
    """{value name: ActivationRange} for every observed value (see the module docstring).

    `method`: "minmax", "percentile" / "percentile:99.9", "entropy" or "mse".  With `cache`
    the ranges are read from / written to the statistics cache (data that cannot be
    fingerprinted, such as a generator, are never cached).
    """
    names = observed_values(graph, values)
    make_observer(method)  # an unknown method fails before any work
    key = None
    if cache:
        fingerprint = data.fingerprint()
        if fingerprint is not None:
            graph_hash = hashlib.sha256(graph.to_bytes()).hexdigest()
            key = stats_cache.cache_key(graph_hash, fingerprint, method, names)
            stored = stats_cache.load_entry(key)
            if stored is not None and set(stored) == set(names):
                return {name: ActivationRange(**stored[name]) for name in names}
    ranges = _collect(graph, data, method, names, progress, threads)
    if key is not None:
        stats_cache.store_entry(key, {name: asdict(r) for name, r in ranges.items()})
    return ranges


def _collect(graph: Graph, data: CalibrationData, method: str, names: list[str], progress: bool,
             threads: int) -> dict[str, ActivationRange]:
    session, outputs = _session(graph, names, threads)
    observers: dict[str, Observer] = {name: make_observer(method) for name in names}
    samples = 0
    with _progress(progress) as bar:
        task = bar.add_task(f"calibrating {_model_label(graph)} ({method})", total=data.num_samples)
        for batch in data:
            results = session.run(outputs, batch)
            for name, array in [*zip(outputs, results), *((n, batch[n]) for n in names if n in batch)]:
                _observe(observers[name], name, array, samples, data.batch_size)
            del results
            samples += data.batch_size
            bar.update(task, completed=samples)
    if samples == 0:
        raise CalibrationError(f"{data.description}: no complete batch to calibrate with")
    ranges = {}
    for name in names:
        low, high = observers[name].range()
        ranges[name] = ActivationRange(low, high, method, samples)
    return ranges


def _observe(observer: Observer, name: str, array: np.ndarray, first_sample: int, batch: int) -> None:
    try:
        observer.update(array)
    except NonFiniteError:
        samples = f"sample {first_sample}" if batch == 1 else f"samples {first_sample}..{first_sample + batch - 1}"
        raise CalibrationError(f"value {name!r} is NaN or infinite on calibration {samples}; the float model "
                               "overflows on this input: check the data's normalization, or the weights") from None
