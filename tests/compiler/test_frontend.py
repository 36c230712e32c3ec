"""The ONNX frontend: what it accepts, what it refuses, and that it keeps numerics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekiln.compiler.frontend import load_model
from edgekiln.errors import DynamicShapeError, ModelLoadError, OptionError
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import conv_relu_model, single_op_model

X = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_constant_nodes_become_initializers_and_numerics_hold(save_model):
    model = conv_relu_model(weights_in_constant_nodes=True)
    graph = load_model(save_model(model))
    assert "Constant" not in graph.count_ops()
    assert {"W", "B"} <= set(graph.main.initializers)
    assert max_relative_error(run_ort(model, {"x": X})[0], run_ort(graph.to_proto(), {"x": X})[0]) <= 1e-6


def test_old_opset_is_converted(save_model):
    model = conv_relu_model(opset=11)
    graph = load_model(save_model(model))
    assert graph.opset() == 17
    assert max_relative_error(run_ort(model, {"x": X})[0], run_ort(graph.to_proto(), {"x": X})[0]) <= 1e-6


def test_every_value_gets_a_static_shape(save_model):
    graph = load_model(save_model(conv_relu_model()))
    for node in graph.main:
        for value in node.outputs:
            assert graph.static_shape(value) == (1, 4, 8, 8)


def test_dead_nodes_are_removed(save_model):
    graph = load_model(save_model(conv_relu_model(extra_dead_node=True)))
    assert "Sigmoid" not in graph.count_ops()


def test_unnamed_nodes_get_stable_unique_names(save_model):
    path = save_model(conv_relu_model(unnamed=True))
    first = [n.name for n in load_model(path).main]
    second = [n.name for n in load_model(path).main]
    assert first == second
    assert len(set(first)) == len(first) and all(first)
    assert first[0].startswith("Conv")


def test_dynamic_batch_is_refused_naming_the_input(save_model):
    path = save_model(conv_relu_model(batch="N"))
    with pytest.raises(DynamicShapeError, match=r"input 'x'.*--input-shape x=Nx3x8x8"):
        load_model(path)


def test_input_shape_fixes_the_dynamic_dim(save_model):
    graph = load_model(save_model(conv_relu_model(batch="N")), {"x": (2, 3, 8, 8)})
    assert graph.static_shape(graph.outputs[0]) == (2, 4, 8, 8)


def test_input_shape_for_a_missing_input_is_refused(save_model):
    with pytest.raises(OptionError, match=r"'image'.*inputs 'x'"):
        load_model(save_model(conv_relu_model(batch="N")), {"image": (1, 3, 8, 8)})


def test_input_shape_of_the_wrong_rank_is_refused(save_model):
    with pytest.raises(OptionError, match="rank 4"):
        load_model(save_model(conv_relu_model(batch="N")), {"x": (1, 3, 8)})


def test_input_shape_that_contradicts_a_fixed_dim_is_refused(save_model):
    with pytest.raises(OptionError, match="dim 1 of input 'x' is fixed at 3"):
        load_model(save_model(conv_relu_model(batch="N")), {"x": (1, 4, 8, 8)})


def test_allow_dynamic_keeps_symbolic_dims_for_inspection(save_model):
    graph = load_model(save_model(conv_relu_model(batch="N")), allow_dynamic=True)
    assert graph.static_shape(graph.inputs[0]) is None


def test_data_dependent_shape_is_refused_naming_the_node(save_model):
    with pytest.raises(DynamicShapeError, match=r"nonzero_node \(NonZero\)"):
        load_model(save_model(single_op_model("NonZero", [1, 4], output_type=onnx.TensorProto.INT64)))


def test_truncated_file_is_refused(tmp_path, save_model):
    data = save_model(conv_relu_model()).read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated.onnx.*truncated"):
        load_model(truncated)


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n" * 20)
    with pytest.raises(ModelLoadError, match="notes.onnx"):
        load_model(path)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "absent.onnx")
    with pytest.raises(ModelLoadError, match="is a folder"):
        load_model(tmp_path)


def test_checker_failure_is_reported(save_model):
    model = conv_relu_model()
    model.graph.node[1].input[0] = "never_defined"
    with pytest.raises(ModelLoadError, match="checker"):
        load_model(save_model(model))


def _with_external_weights(tmp_path, location: str):
    model = conv_relu_model()
    expected_weights = numpy_helper.to_array(model.graph.initializer[0])
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.data",
              size_threshold=0)
    if location != "weights.data":
        saved = onnx.load(path, load_external_data=False)
        for tensor in saved.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(saved, path)
    return expected_weights, path


def test_external_data_next_to_the_model_loads(tmp_path):
    expected, path = _with_external_weights(tmp_path, "weights.data")
    graph = load_model(path)
    np.testing.assert_array_equal(graph.main.initializers["W"].const_value.numpy(), expected)


@pytest.mark.parametrize("location", ["../secret.data", "/etc/passwd", "sub/../../secret.data"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.data").write_bytes(b"\0" * 1024)
    _, path = _with_external_weights(tmp_path, location)
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "secret.data").write_bytes(b"\0" * 1024)
    _, path = _with_external_weights(tmp_path, "link.data")
    (path.parent / "link.data").symlink_to(tmp_path / "secret.data")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)


def test_missing_external_data_file_is_named(tmp_path):
    _, path = _with_external_weights(tmp_path, "weights.data")
    (path.parent / "weights.data").unlink()
    with pytest.raises(ModelLoadError, match="weights.data.*missing"):
        load_model(path)


def test_an_output_declared_without_shape_is_accepted(save_model):
    model = conv_relu_model()
    model.graph.output.append(onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, None))
    graph = load_model(save_model(model))
    assert [graph.static_shape(v) for v in graph.outputs] == [(1, 4, 8, 8), (1, 4, 8, 8)]
