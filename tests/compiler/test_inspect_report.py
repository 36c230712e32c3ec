"""`inspect_model`: the report's JSON and console rendering, and the PP-OCR models end to end."""

from __future__ import annotations

import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.inspect_report import format_shape, humanize, inspect_model
from edgekiln.compiler.model_stats import model_summary
from edgekiln.compiler.op_support import REMOVED_BEFORE_LOWERING, supported_op_types, unsupported_nodes

F = TensorProto.FLOAT


@dataclass(frozen=True)
class StandInTarget:
    """Only the two fields inspect reads; keeps these tests off compiler/target.py."""

    name: str
    backend: str


CPU = StandInTarget("cortex-a76", "arm_cpu")
TPU = StandInTarget("coral-usb", "edgetpu")


def small_cnn(batch: int | str = "batch") -> Graph:
    """conv3x3 -> relu -> exp -> global pool -> flatten -> gemm, 10 classes (Exp: no Edge TPU op)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((10, 16)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Exp", ["r"], ["l"], name="exp"),
        helper.make_node("GlobalAveragePool", ["l"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", F, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("y", F, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return Graph.from_proto(onnx.shape_inference.infer_shapes(model), Path("small_cnn.onnx"))


def rendered(report, **kwargs) -> str:
    console = Console(record=True, width=220, color_system=None, file=io.StringIO())
    report.render(console, **kwargs)
    return console.export_text()


# -- formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "unit", "text"),
    [
        (0, "MAC", "0 MAC"),
        (999, "MAC", "999 MAC"),
        (12_345, "MAC", "12.3 kMAC"),
        (999_999, "MAC", "1.00 MMAC"),
        (702_469_440, "MAC", "702 MMAC"),
        (1_234_567_890, "MAC", "1.23 GMAC"),
        (10_760_000, "B", "10.8 MB"),
    ],
)
def test_humanize(count, unit, text):
    assert humanize(count, unit) == text


def test_format_shape_flags_dynamic_dims():
    assert format_shape((("batch"), 3, "?", 32)) == "[batch?, 3, ?, 32]"
    assert format_shape(None) == "?"


# -- the report ---------------------------------------------------------------------------------


def test_report_contents_for_a_static_model():
    report = inspect_model(small_cnn(batch=1), [CPU, TPU])
    s = report.summary
    conv_macs = 16 * 32 * 32 * 27
    assert s.macs == conv_macs + 10 * 16
    assert s.params == 16 * 27 + 16 + 160 + 10
    cpu, tpu = report.targets
    assert cpu.runs_all and cpu.lowered == 6 and cpu.precisions == ("fp32", "int8", "int4", "ternary")
    assert [u.node_name for u in tpu.unsupported] == ["exp"]

    text = rendered(report)
    assert "model small_cnn.onnx" in text
    assert "x: float32[1, 3, 32, 32]" in text
    assert "parameters  618 (2.47 kB as fp32)" in text
    assert f"compute     {humanize(s.macs, 'MAC')}" in text
    assert "Conv×1" in text and "Gemm×1" in text
    assert "target cortex-a76 (arm_cpu, fp32/int8/int4/ternary): runs all 6 ops" in text
    assert "target coral-usb (edgetpu, int8): cannot run 1 of 6 ops" in text
    assert "exp" in text and "no Edge TPU op" in text


def test_render_flags_dynamic_input_dims():
    report = inspect_model(small_cnn(batch="batch"), [CPU])
    text = rendered(report)
    assert "x: float32[batch?, 3, 32, 32]" in text
    assert "--input-shape" in text
    assert "layers of unknown cost" in text
    assert report.summary.dynamic_inputs == {"x": [(0, "batch")]}


def test_layer_table_top_n_by_macs_and_all():
    report = inspect_model(small_cnn(batch=1), [])
    top = rendered(report, max_layers=2)
    assert "top 2 of 6 layers by MACs" in top
    table = top[top.index("top 2 of 6"):]
    assert "conv" in table and "fc" in table and "exp" not in table and "flatten" not in table
    assert table.index("conv") < table.index("fc")
    everything = rendered(report, max_layers=None)
    assert "all 6 layers" in everything
    assert all(name in everything for name in ("conv", "relu", "exp", "pool", "flatten", "fc"))


def test_json_is_deterministic_and_complete():
    first = inspect_model(small_cnn(), [CPU, TPU]).to_json()
    second = inspect_model(small_cnn(), [CPU, TPU]).to_json()
    assert first == second
    data = json.loads(first)
    assert data["model"] == "small_cnn.onnx"
    assert data["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 32, 32], "dynamic_axes": [0]}]
    assert data["totals"]["params"] == 618 and data["totals"]["param_bytes_fp32"] == 2472
    assert [layer["name"] for layer in data["layers"]] == ["conv", "relu", "exp", "pool", "flatten", "fc"]
    assert data["layers"][0]["macs"] is None  # batch is dynamic
    assert data["targets"][0]["runs_all"] is True
    assert data["targets"][1]["unsupported"][0]["node_name"] == "exp"


# -- the PP-OCR models shipped in rapidocr-onnxruntime --------------------------------------------

PP_OCR = {
    # file: (natural input shape from rapidocr's config.yaml, batch 1)
    "ch_PP-OCRv4_det_infer.onnx": (1, 3, 736, 736),
    "ch_PP-OCRv4_rec_infer.onnx": (1, 3, 48, 320),
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": (1, 3, 48, 192),
}


def pp_ocr_path(name: str) -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("rapidocr-onnxruntime is not installed")
    return Path(spec.submodule_search_locations[0]) / "models" / name


def pinned(proto: onnx.ModelProto, shape: tuple[int, ...]) -> Graph:
    """Pin the input dims, fold the shape arithmetic and re-infer shapes (what compile does)."""
    import onnxscript.optimizer

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for dim, size in zip(proto.graph.input[0].type.tensor_type.shape.dim, shape):
        dim.Clear()
        dim.dim_value = size
    return Graph.from_proto(onnx.shape_inference.infer_shapes(onnxscript.optimizer.optimize(proto)))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PP_OCR))
def test_pp_ocr_models(name):
    path = pp_ocr_path(name)
    proto = onnx.load(path)
    graph = Graph.from_proto(onnx.shape_inference.infer_shapes(proto), path)

    # arm_cpu has a kernel for every op the model uses.
    ops = {n.op_type for n in graph.main if n.domain == ""} - set(REMOVED_BEFORE_LOWERING)
    assert ops <= supported_op_types("arm_cpu")

    # As shipped, every input has dynamic dims: stats still come out, flagged as dynamic.
    report = inspect_model(graph, [StandInTarget("a76", "arm_cpu"), StandInTarget("tpu", "edgetpu")])
    summary = report.summary
    assert summary.dynamic_inputs["x"] and summary.params > 100_000
    assert summary.unknown_cost_layers > 0 and summary.dynamic_layers > 0
    assert "?" in rendered(report) and json.loads(report.to_json())["inputs"][0]["dynamic_axes"]
    # ...and the only nodes arm_cpu refuses are Shape reads of dynamic tensors, with the fix named.
    for u in report.targets[0].unsupported:
        assert u.op_type == "Shape" and "--input-shape" in u.reason

    # Pinned to the natural shape, every cost is known and arm_cpu runs the whole model.
    static = pinned(proto, PP_OCR[name])
    static_summary = model_summary(static)
    assert static_summary.unknown_cost_layers == 0 and not static_summary.dynamic_inputs
    assert static_summary.macs > 10_000_000
    assert unsupported_nodes(static, "arm_cpu") == []
