"""ReferenceRunner runs an artifact's program/ files; run_program checks its inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekiln.backends.reference import ReferenceRunner, run_program
from edgekiln.compiler.artifact import program_files
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.integer_lowering import lower_quantized_graph
from edgekiln.errors import ArtifactError
from tests.backends.reference.qdq_models import calibrate, quantize_graph, session
from tests.conftest import run_ort
from tests.support.graphs import conv_relu_model

X = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_runner_runs_a_compiled_float_artifact():
    result = compile_model(conv_relu_model(), "host")
    runner = ReferenceRunner(result.artifact.files, result.artifact.manifest)
    got = runner.run({"x": X})
    np.testing.assert_allclose(got["y"], run_ort(conv_relu_model(), {"x": X})[0], rtol=1e-5, atol=1e-5)


def test_runner_runs_an_integer_program_bit_exactly():
    graph = Graph.from_proto(onnx.shape_inference.infer_shapes(conv_relu_model()))
    graph = quantize_graph(graph, calibrate(graph, [{"x": X}, {"x": -X}]))
    program = lower_quantized_graph(graph)
    runner = ReferenceRunner(program_files(program), {})
    np.testing.assert_array_equal(runner.run({"x": X})["y"], run_program(program, {"x": X})["y"])
    np.testing.assert_array_equal(runner.run({"x": X})["y"], session(graph.to_proto()).run(None, {"x": X})[0])


def test_bad_inputs_and_artifacts_are_clear_errors():
    result = compile_model(conv_relu_model(), "host")
    with pytest.raises(ArtifactError, match="'x' is missing"):
        run_program(result.program, {})
    with pytest.raises(ArtifactError, match=r"shape \[1, 3, 4, 4\]"):
        run_program(result.program, {"x": X[:, :, :4, :4]})
    with pytest.raises(ArtifactError, match="program.json"):
        ReferenceRunner({"model.onnx": b""}, {})
