"""The quantization benchmarks' core functions, on digits_cnn with minimal settings, so the scripts cannot rot."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import (
    calibration_speed,
    quantization_accuracy,
    quantization_sqnr,
    readme_tables,
    weight_bytes,
)

pytestmark = pytest.mark.slow


def test_accuracy_benchmark_rows_and_mixed_precision():
    rows = quantization_accuracy.measure("digits_cnn", calib_count=16, eval_count=60, precisions=("ternary",),
                                         keep_float=1)
    by_config = {r["config"]: r for r in rows}
    assert list(by_config) == ["FP32", "W8A8 int8", "all ternary", "ternary, first/last int8",
                               "ternary, first/last int8 + 1 float"]
    fp32 = by_config["FP32"]["accuracy_integer"]
    assert fp32 >= 0.9
    assert by_config["W8A8 int8"]["accuracy_integer"] >= fp32 - 0.05
    assert by_config["all ternary"]["layers"] == "ternaryx3"
    assert by_config["ternary, first/last int8"]["layers"] == "int8x2 ternaryx1"
    kept = by_config["ternary, first/last int8 + 1 float"]
    assert kept["layers"] == "fp32x1 int8x2" and len(kept["keep_float"]) == 1
    # digits_cnn has one middle layer: keeping it float leaves only int8 layers, which lose little.
    assert kept["accuracy_integer"] >= fp32 - 0.05
    markdown = readme_tables.quantization_accuracy({"rows": rows})
    assert markdown.count("\n") == len(rows) + 1 and "| digits_cnn | all ternary | ternaryx3 |" in markdown


def test_sqnr_benchmark_against_onnxruntime_with_cost():
    row = quantization_sqnr.measure("digits_cnn", calib_count=8, eval_count=8, edgekiln_methods=("mse",),
                                    ort_methods=("MinMax",), cost_methods=("minmax",))
    # mse x equalize x bias correction, with float outputs, + the legacy configuration
    assert len(row["edgekiln_grid"]) == 5 and len(row["ort_grid"]) == 1
    assert all("error" not in r for r in [*row["edgekiln_grid"], *row["ort_grid"]])
    ek, ort, legacy = row["edgekiln_default"], row["ort_default"], row["edgekiln_legacy"]
    assert ek["config"] == "mse+bias-corr" and ort["config"] == "MinMax"
    assert legacy["config"] == "minmax+int8-outputs" and abs(legacy["sqnr_qdq"] - ort["sqnr_qdq"]) < 3
    # Same data, same W8A8 scheme on a small CNN: both well above 25 dB and within a few dB of each other.
    assert 25 < ek["sqnr_integer"] < 80 and 25 < ort["sqnr_run"] < 80
    assert row["edgekiln_best"]["sqnr_integer"] >= ek["sqnr_integer"]
    for key in ("edgekiln/minmax", "ort/MinMax"):
        cost = row["cost"][key]
        assert "error" not in cost, cost
        assert cost["seconds"] > 0 and cost["py_peak_mib"] > 0 and cost["rss_peak_mib"] >= 0
    markdown = readme_tables.quantization_sqnr({"rows": [row]})
    assert "| digits_cnn |" in markdown and "| digits_cnn | minmax |" in markdown
    assert quantization_sqnr.render([row]).row_count == 1 and quantization_sqnr.render_cost([row]).row_count == 1


def test_weight_bytes_benchmark_counts_every_parameter():
    configs = (("int8", "int8", None), ("ternary no guard", "ternary", False))
    row = weight_bytes.measure("digits_cnn", configs=configs)
    int8, ternary = row["configs"]["int8"], row["configs"]["ternary no guard"]
    assert int8["precisions"] == {"int8": 3} and ternary["precisions"] == {"ternary": 3}
    assert int8["float_bytes"] == 0 and ternary["bias_bytes"] == int8["bias_bytes"]
    # digits_cnn holds only weights W and biases B: FP32 = 4 (W + B); int8 values = W; int32 biases = 4 B
    # (their scale, input scale x weight scale, is derived, not stored).
    assert 4 * int8["value_bytes"] + int8["bias_bytes"] == row["fp32_bytes"]
    assert int8["value_bytes"] / 5 <= ternary["value_bytes"] <= int8["value_bytes"] / 5 + 3  # 5 per byte, per tensor
    assert ternary["ratio"] < int8["ratio"] < 0.3
    # What the program stores: the same values and biases, plus an int32 multiplier and shift per channel.
    program = int8["program"]
    assert program["quantized"] == int8["value_bytes"] and program["bias"] == int8["bias_bytes"]
    assert program["multiplier"] == program["bias"] and 0 < program["shift"] < program["bias"]  # the head has no shift
    # What the arm_cpu blob stores (read back from the blob): int32 folded biases, int32 multipliers (the
    # float head's float32 scales), one int8 shift per requantized channel, no row sums, nothing else.
    stored = int8["artifact"]["fast"]
    assert int8["artifact"]["compact"] == stored  # int8 weights have one layout
    channels = int8["bias_bytes"] // 4
    assert stored["quantized"] == int8["value_bytes"] and stored["bias"] == stored["multiplier"] == 4 * channels
    assert stored["shift"] == program["shift"] // 4 and stored["ratio"] == stored["other"] == 0
    assert stored["total"] < program["total"]
    # floor: values + an int32 bias and a 32-bit scale per channel, one byte per channel under the blob
    assert int8["floor"]["floor_bytes"] == int8["value_bytes"] + 8 * channels == stored["total"] - stored["shift"]
    assert int8["verdict"] == ("met" if int8["artifact_meets_bar"] else "missed" if int8["bar_possible"] else "impossible")
    # ternary: the fast layout pads rows to 64-value blocks at 2 bits; the compact one stores five per byte,
    # exactly the QDQ count, so the blob's values are the floor's
    fast, compact = ternary["artifact"]["fast"], ternary["artifact"]["compact"]
    assert compact["quantized"] == ternary["value_bytes"] and compact["padding"] == 0
    assert fast["quantized"] > compact["quantized"] and fast["total"] > compact["total"]
    # peers: onnxruntime's QDQ file holds at least the int8 values and a scale per channel
    ort = row["peers"]["onnxruntime"]
    assert ort["fp32"] == row["fp32_bytes"]  # quant_pre_process folds the same BatchNorms
    assert int8["value_bytes"] + 4 * channels <= ort["QInt8"] and int8["value_bytes"] // 2 < ort["QInt4"] < ort["QInt8"]
    assert row["peers"]["tflite_int8"] > int8["value_bytes"] + 4 * channels
    markdown = readme_tables.weight_bytes({"rows": [row]})
    assert "| digits_cnn |" in markdown and "int8 | ternary no guard |" in markdown
    assert "fast / compact / floor" in markdown


def test_calibration_speed_benchmark_compiles_the_5m_cnn(tmp_path):
    model, data = tmp_path / "cnn.onnx", tmp_path / "images.npy"
    parameters = calibration_speed.build_model(model)
    assert 5.0e6 <= parameters <= 5.5e6  # the "5 M-parameter CNN"
    np.save(data, np.random.default_rng(0).standard_normal((2, *calibration_speed.IMAGE), dtype=np.float32))
    row = calibration_speed.measure(model, data, "minmax")
    # every Conv output and the input, after folding: the stem, 8 blocks (3 or 4 each), pool, head
    assert row["observed"] >= 20 and row["calls"] >= 20
    assert 0 < row["calibrate_s"] < row["compile_s"] and row["peak_rss_mib"] > 0
