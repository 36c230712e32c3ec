"""Whole models on the reference interpreter: float Programs against onnxruntime, and integer
Programs against onnxruntime running the QDQ graph they were lowered from."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgekiln.backends.reference import run_program
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.integer_lowering import IntegerLowering
from tests.backends.reference.qdq_models import (
    calibrate,
    isolated_kernel_agreement,
    lsb_agreement,
    model_feeds,
    quantize_graph,
    quantize_with_pass,
    quantized_float_graph,
    session,
)
from tests.conftest import max_relative_error, run_ort
from tests.zoo import all_models, input_shapes, model_path, sample_input

pytestmark = pytest.mark.slow

INTEGER_MODELS = ["digits_cnn", "lenet_mnist", "inverted_residual", "resnet_basic", "se_hardswish",
                  "tiny_transformer", "ppocr_cls", "ppocr_det", "ppocr_rec"]
# End to end, PP-OCR amplifies single 1-LSB differences: on ppocr_det the first one is one element
# of one conv (in 38400) whose exact value is 46.5000005, which onnxruntime's float32 sum rounds to
# 46 and the integer reference, exactly, to 47; the hard-swish / SE gate chains after it grow that
# into ~6% of the output map.  Each kernel alone stays within 1 LSB everywhere (the isolated check).
END_TO_END_WITHIN_1 = {"ppocr_det": 0.9, "ppocr_rec": 0.99}
PPOCR_CLS_MAX_LSB = 4  # two softmax probabilities


@pytest.mark.parametrize("name", all_models())
def test_float_program_matches_onnxruntime(name):
    result = compile_model(model_path(name), "host", input_shapes=input_shapes(name))
    feeds = sample_input(name)
    expected = run_ort(result.graph.to_proto(), feeds)
    got = run_program(result.program, feeds)
    tolerance = 1e-4 if name.startswith("ppocr") else 1e-5  # ppocr_det: 1.6e-5 after 100+ float32 layers
    for output, reference in zip(result.program.outputs, expected):
        assert max_relative_error(reference, got[output]) < tolerance, output


@pytest.fixture(scope="module")
def float_graphs():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = (quantized_float_graph(name), model_feeds(name))
        return cache[name]

    return get


@pytest.mark.parametrize("quantizer", ["helper", "pass"])
@pytest.mark.parametrize("name", INTEGER_MODELS)
def test_integer_program_agrees_with_the_qdq_graph(name, quantizer, float_graphs):
    float_graph, feeds = float_graphs(name)
    if quantizer == "pass":
        pytest.importorskip("edgekiln.passes.quantize_graph")
        qdq = quantize_with_pass(float_graph, feeds)
    else:
        qdq = quantize_graph(float_graph.clone(), calibrate(float_graph, feeds))
    lowering = IntegerLowering(qdq)
    program = lowering.lower(64)
    if quantizer == "pass":
        assert not lowering.float_reasons, lowering.float_reasons
    test_feeds = sample_input(name, seed=11)  # not a calibration input

    stats = isolated_kernel_agreement(qdq, program, test_feeds)
    total = sum(s[0] for s in stats.values())
    assert {op: s[3] for op, s in stats.items() if s[3] > 1} == {}
    assert sum(s[1] for s in stats.values()) / total > 0.999

    expected = session(qdq.to_proto()).run(None, test_feeds)
    got = run_program(program, test_feeds)
    for output, reference in zip(program.outputs, expected):
        scale = next(c for c in program.calls if output in c.outputs).attrs["scale"]
        equal, within = lsb_agreement(reference, got[output], scale)
        if name == "ppocr_cls":
            assert np.max(np.abs(got[output] - reference)) / scale <= PPOCR_CLS_MAX_LSB + 1e-3
        else:
            assert within >= END_TO_END_WITHIN_1.get(name, 0.99), (output, equal, within)


def test_ppocr_det_integer_program_runs_in_seconds(float_graphs):
    float_graph, feeds = float_graphs("ppocr_det")
    program = IntegerLowering(quantize_graph(float_graph.clone(), calibrate(float_graph, feeds))).lower(64)
    x = sample_input("ppocr_det")
    run_program(program, x)  # builds the cached evaluators of any float call
    start = time.perf_counter()
    run_program(program, x)
    assert time.perf_counter() - start < 10.0
