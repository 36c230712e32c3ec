"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest


def run_ort(model: onnx.ModelProto | bytes | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model in onnxruntime, one thread, all graph optimizations off (the model as written)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else (
        str(model) if isinstance(model, Path) else model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def max_relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    """max|a - e| / max|e| (relative to the output's scale, so near-zero elements do not explode)."""
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected))) / scale


@pytest.fixture
def save_model(tmp_path: Path):
    def save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, path)
        return path

    return save
