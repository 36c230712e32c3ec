"""Every zoo model and the PP-OCR det/rec/cls models pruned at 0.2 and 0.5 (slow): the smaller model passes the
ONNX checker, runs in onnxruntime with the output shapes of the original, and really is smaller; on the trained
digits and MNIST models the re-fit brings the outputs closer to the original's on held-out samples."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.input_shapes import parse_input_shapes
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.pruning.prune_stage import parameter_count, prune_channels
from tests.conftest import max_relative_error, run_ort
from tests.zoo import PPOCR_MODELS, ZOO_MODELS, input_shapes, model_path, sample_input

pytestmark = pytest.mark.slow


def pruned(name: str, options: PruneOptions):
    graph = load_model(model_path(name), parse_input_shapes(input_shapes(name)))
    before = parameter_count(graph)
    original = graph.to_proto()
    graph = prune_channels(graph, options, ExplainTrace())
    return original, graph.to_proto(), before, parameter_count(graph)


@pytest.mark.parametrize("ratio", [0.2, 0.5])
@pytest.mark.parametrize("name", [*ZOO_MODELS, *PPOCR_MODELS])
def test_pruned_zoo_model_is_valid_smaller_and_keeps_output_shapes(name, ratio):
    original, smaller, before, after = pruned(name, PruneOptions.parse(f"channels:{ratio}", refit=False))
    onnx.checker.check_model(smaller, full_check=True)
    assert after < before
    feeds = sample_input(name, seed=3)
    expected, got = run_ort(original, feeds), run_ort(smaller, feeds)
    assert [o.shape for o in got] == [o.shape for o in expected]
    assert all(np.isfinite(o).all() for o in got)


@pytest.mark.parametrize("name", ["lenet_mnist", "digits_cnn"])
def test_refit_is_closer_to_the_original_on_held_out_samples(name):
    calib = [sample_input(name, seed=s) for s in range(1, 17)]
    errors = []
    for refit in (False, True):
        original, smaller, _, _ = pruned(name, PruneOptions.parse("channels:0.3", refit=refit, calib=calib))
        errors.append(np.mean([max_relative_error(run_ort(original, f)[0], run_ort(smaller, f)[0])
                               for f in (sample_input(name, seed=s) for s in range(100, 108))]))
    assert errors[1] < 0.8 * errors[0], errors
