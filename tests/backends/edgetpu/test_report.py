"""The Edge TPU report's verdicts on hand-made .tflite files with known (un)supported ops.

Expected values are worked out by hand from Coral's documented rules, not by the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from edgekiln.backends.edgetpu.compatibility_model import TfliteReadError
from edgekiln.backends.edgetpu.report import UTILIZATION, report_from_tflite
from tests.backends.edgetpu.tflite_graphs import TinyTflite, small_cnn

CONV_MACS = 1 * 8 * 8 * 8 * 3 * 3 * 8  # output elements x (kh x kw x cin)
FC_MACS = 10 * 8


def devices(report):
    return [(op["op"], op["device"]) for op in report.ops]


def test_all_int8_cnn_maps_whole_with_float_edges_on_the_cpu():
    report = report_from_tflite(small_cnn())
    assert devices(report) == [("QUANTIZE", "cpu"), ("CONV_2D", "tpu"), ("CONV_2D", "tpu"), ("MEAN", "tpu"),
                               ("FULLY_CONNECTED", "tpu"), ("RESHAPE", "tpu"), ("SOFTMAX", "tpu"),
                               ("DEQUANTIZE", "cpu")]
    assert report.segment_end is None and report.cpu_after_segment == []
    assert report.counts == {"total": 8, "tpu": 6, "cpu": 2, "boundary": 2}
    assert report.macs == {"total": 2 * CONV_MACS + FC_MACS, "tpu": 2 * CONV_MACS + FC_MACS, "cpu": 0}
    # weights 8·3·3·8 int8 + 8 int32 biases per conv, axes 2 int32, FC 10·8 + 10 int32, shape 2 int32
    assert report.parameters["tpu_bytes"] == 2 * (576 + 32) + 8 + (80 + 40) + 8
    assert report.parameters["streamed_bytes"] == 0


def test_int8_io_model_has_no_cpu_op():
    report = report_from_tflite(small_cnn(float_io=False))
    assert report.counts["cpu"] == 0 and report.op_share_tpu == 1.0


def test_unsupported_op_in_the_middle_sends_everything_after_it_to_the_cpu():
    report = report_from_tflite(small_cnn(middle="LEAKY_RELU"))
    assert report.segment_end["op"] == "LEAKY_RELU" and report.segment_end["category"] == "unsupported op"
    assert "PRELU" in report.segment_end["reason"]
    after = [op for op in report.ops if op["index"] > report.segment_end["index"]]
    assert [op["op"] for op in after] == ["CONV_2D", "MEAN", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX", "DEQUANTIZE"]
    assert all(op["device"] == "cpu" for op in after)
    assert after[0]["category"] == "after segment"  # mappable on its own, cut off by the segment rule
    assert report.macs["tpu"] == CONV_MACS and report.macs["cpu"] == CONV_MACS + FC_MACS
    assert report.cpu_after_segment[0] == "#3 CONV_2D"


def test_two_dimensional_softmax_is_a_cpu_op():
    report = report_from_tflite(small_cnn(softmax_shape=(1, 2, 5), float_io=False))
    softmax = next(op for op in report.ops if op["op"] == "SOFTMAX")
    assert softmax["device"] == "cpu" and softmax["category"] == "op limit"
    assert "not 1-D" in softmax["reason"]
    assert report.segment_end["op"] == "SOFTMAX"


def test_float_op_inside_the_model_ends_the_segment_at_its_dequantize():
    report = report_from_tflite(small_cnn(middle="FLOAT_ADD", float_io=False))
    # The inner DEQUANTIZE writes no model output: it is not a boundary conversion.
    assert report.segment_end["op"] == "DEQUANTIZE" and report.segment_end["category"] == "unsupported op"
    add = next(op for op in report.ops if op["op"] == "ADD")
    assert add["category"] == "data type" and "FLOAT32" in add["reason"]


def test_dynamic_batch_is_reported():
    report = report_from_tflite(small_cnn(float_io=False, dynamic_batch=True))
    first = report.ops[0]
    assert first["category"] == "dynamic shape" and "[-1, 8, 8, 8]" in first["reason"]
    assert report.counts["tpu"] == 0


def test_batch_of_two_breaks_the_innermost_three_dims_rule():
    report = report_from_tflite(small_cnn(float_io=False, batch=2))
    assert report.ops[0]["category"] == "rank" and "[2, 8, 8, 8]" in report.ops[0]["reason"]


def test_too_new_op_version_is_flagged_for_the_whole_model():
    report = report_from_tflite(small_cnn(conv_version=6, float_io=False))
    assert report.ops[0]["category"] == "op version" and "#631" in report.ops[0]["reason"]
    assert any("refuse the model" in note for note in report.notes)


def test_mean_over_channels_and_dilated_depthwise_are_op_limits():
    b = TinyTflite()
    x = b.tensor("x", (1, 4, 4, 8))
    m = b.tensor("m", (1, 4, 4))
    from ai_edge_litert import schema_py_generated as s

    b.op("MEAN", [x, b.tensor("axes", (1,), "int32", data=np.array([3], np.int32))], [m], 2,
         ("ReducerOptions", s.ReducerOptionsT()))
    d = b.tensor("d", (1, 4, 4, 8))
    options = s.DepthwiseConv2DOptionsT()
    options.dilationHFactor = options.dilationWFactor = 2
    b.op("DEPTHWISE_CONV_2D", [x, b.weight("dw", (1, 3, 3, 8)), b.weight("db", (8,), "int32")], [d], 3,
         ("DepthwiseConv2DOptions", options))
    report = report_from_tflite(b.finish([x], [m, d]))
    assert "only x and/or y" in report.ops[0]["reason"]
    assert report.ops[1]["reason"].startswith("DEPTHWISE_CONV_2D: dilated")  # its own reason comes first
    assert report.ops[1]["macs"] == 4 * 4 * 8 * 3 * 3


def test_parameters_beyond_on_chip_memory_stream_and_enter_the_latency_estimate():
    b = TinyTflite()
    x = b.tensor("x", (1, 4096))
    y = b.tensor("y", (1, 2304))
    b.op("FULLY_CONNECTED", [x, b.weight("w", (2304, 4096)), b.weight("b", (2304,), "int32")], [y], 4)
    report = report_from_tflite(b.finish([x], [y]))
    params = 2304 * 4096 + 4 * 2304
    on_chip = 8 * 1024 * 1024
    assert report.parameters["tpu_bytes"] == params
    assert report.parameters["cached_bytes"] == on_chip
    assert report.parameters["streamed_bytes"] == params - on_chip
    assert report.ops[0]["parameters_streamed"] and "ops whose parameters stream" in report.to_text()
    macs = 2304 * 4096
    e = report.estimate
    assert e.compute_ms == pytest.approx(2 * macs / (4e12 * UTILIZATION) * 1e3)
    assert e.streaming_ms == pytest.approx((params - on_chip) / 0.5e9 * 1e3)
    assert e.transfer_ms == pytest.approx((4096 + 2304) / 0.5e9 * 1e3)
    assert e.total_ms == pytest.approx(e.compute_ms + e.streaming_ms + e.transfer_ms)


def test_json_and_text_carry_the_verdicts():
    report = report_from_tflite(small_cnn(middle="LEAKY_RELU"), label="leaky.tflite")
    data = json.loads(report.to_json())
    assert data["segment_end"]["op"] == "LEAKY_RELU" and data["mac_share_tpu"] == pytest.approx(0.4995, abs=1e-3)
    text = report.to_text()
    assert "leaky.tflite" in text and "TPU segment ends at op #2 LEAKY_RELU" in text
    assert "assumption: 25% of the 4 TOPS" in text


def test_not_a_tflite_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x08\x07onnx-not-tflite")
    with pytest.raises(TfliteReadError, match="not a TFLite flatbuffer"):
        report_from_tflite(bad)


# -- the command line ---------------------------------------------------------------------------

def test_inspect_reports_any_tflite_file(tmp_path):
    from click.testing import CliRunner

    from edgekiln.cli import main

    path = tmp_path / "peer.tflite"
    path.write_bytes(small_cnn(middle="LEAKY_RELU"))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["inspect", str(path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "TPU segment ends at op #2 LEAKY_RELU" in result.output
    assert json.loads(out.read_text())["counts"]["tpu"] == 1


def test_inspect_tflite_for_a_cpu_target_is_a_user_error(tmp_path):
    from click.testing import CliRunner

    from edgekiln.cli import main

    path = tmp_path / "peer.tflite"
    path.write_bytes(small_cnn())
    result = CliRunner().invoke(main, ["inspect", str(path), "--target", "cortex-a53"])
    assert result.exit_code == 2 and "Edge TPU only" in result.output


# -- zoo models through the whole edgetpu compile -----------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet_mnist", "inverted_residual", "se_hardswish", "ppocr_cls"])
def test_zoo_compile_writes_the_report(name):
    import warnings

    import edgekiln
    from tests.zoo import input_shapes, model_path, sample_input

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        artifact = edgekiln.compile(model_path(name), "edgetpu", input_shapes=input_shapes(name), quant="int8",
                                    calib=[sample_input(name, seed=s) for s in range(1, 3)], progress=False)
    report = json.loads(artifact.files["edgetpu_report.json"])
    assert "ops on the Edge TPU" in artifact.files["edgetpu_report.txt"].decode()
    assert not any(op["op"] in ("TRANSPOSE", "DEQUANTIZE") for op in report["ops"])
    # HARD_SWISH is not in Coral's table: the edgetpu pipeline writes hard-swish as a 1x1 depthwise conv and a
    # MUL, so the hard-swish models (se_hardswish, ppocr_cls) map whole too
    assert not any(op["op"] == "HARD_SWISH" for op in report["ops"])
    # every op maps: Coral's rules hold for the whole file
    assert report["segment_end"] is None and report["op_share_tpu"] == 1.0 and report["mac_share_tpu"] == 1.0


def test_peer_benchmark_columns_come_from_the_report():
    from benchmarks.edgetpu_peers import describe

    row = describe(small_cnn(middle="LEAKY_RELU"))
    assert (row["ops"], row["transpose"], row["dequantize"], row["quantize"]) == (9, 0, 1, 1)
    assert row["segment_end"] == "LEAKY_RELU" and row["tpu_op_share"] == pytest.approx(1 / 9, abs=1e-4)


def test_peer_benchmark_refuses_an_unknown_converter_before_any_work(capsys):
    from benchmarks.edgetpu_peers import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--converters", "edgekiln,tflite-converter", "--results", "/nonexistent/x.json"])
    assert exit_info.value.code == 2 and "unknown converter(s) tflite-converter" in capsys.readouterr().err


def test_an_already_compiled_model_has_its_segment_in_the_custom_op():
    b = TinyTflite()
    x, y = b.tensor("x", (1, 8, 8, 3), "uint8"), b.tensor("y", (1, 10), "uint8")
    z = b.tensor("z", (1, 10), "float32")
    b.op("CUSTOM:edgetpu-custom-op", [x], [y])
    b.op("DEQUANTIZE", [y], [z], version=2)
    report = report_from_tflite(b.finish([x], [z]))
    assert devices(report) == [("CUSTOM:edgetpu-custom-op", "tpu"), ("DEQUANTIZE", "cpu")]
    assert report.segment_end is None and any("already compiled" in n for n in report.notes)
