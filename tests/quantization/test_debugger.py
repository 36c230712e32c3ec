"""The quantization debugger: SQNR per layer, sensitivity ranking, outliers, suggestions, the keep-float fix.

The hand-made model has one deliberately bad layer: conv2 reads a dead input channel (conv1's
channel 0 is all zeros) through weights 1000x larger than the rest.  The float function does
not depend on those weights, but conv2's per-output-channel int8 scales are set by them, so
every other weight of conv2 rounds to zero: conv2, and only conv2, wrecks the output.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.errors import OptionError
from edgekiln.quantization.debugger import (
    MAX_DB,
    analyze,
    compile_command,
    keep_float_pattern,
    recommend_keep_float,
    sqnr_db,
    with_keep_float,
)
from edgekiln.quantization.report_writer import render_html, write_report


def legacy_options(**kwargs) -> QuantOptions:
    """The options these tests were written against (minmax ranges, no bias correction, int8 outputs; the
    defaults changed since): pinned so that each planted bad layer stays as bad as the tests say."""
    return QuantOptions(**{"calib_method": "minmax", "bias_correction": False, "float_outputs": False, **kwargs})

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BAD = "conv2"


def chain_model(bad: bool = True, size: int = 8) -> onnx.ModelProto:
    """x[1,4,size,size] -> conv1+relu (8) -> conv2+relu (8) -> conv3 (4, 1x1) -> y."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    w2 = rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)
    w3 = rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32)
    if bad:
        w1[0], b1[0] = 0.0, 0.0   # a dead channel ...
        w2[:, 0] *= 1000.0        # ... read through huge weights
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, size, size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def samples(count: int = 24, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (count, 4, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def bad_report():
    return analyze(chain_model(), legacy_options(calib=samples()), eval_samples=8, auto_keep_float=1, progress=False)


def test_sqnr_definition():
    x = np.array([3.0, 4.0])
    assert sqnr_db(x, x) == MAX_DB
    assert sqnr_db(x, x + np.array([0.3, 0.4])) == pytest.approx(20.0)  # noise power 1 % of signal


def test_report_holds_every_field(bad_report):
    report = bad_report
    assert report.calibration == {"data": "calibration array", "samples": 24, "calibration_samples": 16,
                                  "eval_samples": 8, "held_out": True, "method": "minmax"}
    assert [l.name for l in report.layers] == ["conv1", "conv2", "conv3"]  # Relus fused into the convs
    for layer in report.layers:
        assert layer.quantized and layer.precision == "int8"
        assert -MAX_DB <= layer.sqnr_layerwise_db <= MAX_DB
        assert -MAX_DB <= layer.sqnr_accumulated_db <= MAX_DB
        assert layer.sensitivity_db is not None and 0 <= layer.noise_share <= 1
        assert layer.weight is not None and layer.activation is not None
    assert sum(l.noise_share for l in report.layers) == pytest.approx(1.0)
    assert report.sensitivity["measured"] == report.sensitivity["candidates"] == 3
    assert set(report.outputs) == {"y"} and report.output_sqnr_db == report.outputs["y"]


def test_the_bad_layer_is_found_and_named(bad_report):
    report = bad_report
    assert report.ranked()[0].name == BAD
    bad = report.layer(BAD)
    assert bad.noise_share > 0.9
    # Its own (layer-wise) error is the worst, and the error before it is small.
    assert bad.sqnr_layerwise_db == min(l.sqnr_layerwise_db for l in report.layers) < 10
    assert report.layer("conv1").sqnr_accumulated_db > 30
    assert bad.weight.input_channel_spread > 500 and bad.weight.zeroed > 0.8
    assert report.layer("conv1").weight.zero_channels == 1
    keep = [s for s in report.suggestions if s.kind == "keep-float"]
    assert keep[0].layers == [BAD] and keep[0].option == f"--keep-float {BAD}"
    assert any(s.kind == "equalize" and s.layers == [BAD] for s in report.suggestions)
    assert any(s.kind == "info" and s.layers == ["conv1"] for s in report.suggestions)


def test_auto_keep_float_raises_output_sqnr(bad_report):
    fix = bad_report.fix
    assert fix.patterns == [BAD] and fix.reached
    assert fix.before_db < 10 and fix.after_db > fix.before_db + 20
    assert f"--keep-float {BAD} " in fix.command and fix.command.endswith("--no-bias-correction --int8-outputs")
    # The fix is what compile would do: the same options with --keep-float added.
    rerun = analyze(chain_model(), with_keep_float(legacy_options(calib=samples()), fix.patterns), eval_samples=8,
                    max_sensitivity_layers=0, progress=False)
    assert rerun.output_sqnr_db == pytest.approx(fix.after_db)
    assert not rerun.layer(BAD).quantized and rerun.layer(BAD).note == "precision fp32 (--keep-float)"


def test_target_sqnr_stops_once_reached():
    options = legacy_options(calib=samples())
    assert recommend_keep_float(chain_model(), options, target_sqnr=25.0, eval_samples=8, progress=False) == [BAD]
    # Everything in float is exact; with one measured layer the target is out of reach.
    report = analyze(chain_model(), options, eval_samples=8, target_sqnr=MAX_DB, progress=False)
    assert report.fix.reached and len(report.fix.patterns) == 3 and report.fix.after_db == MAX_DB
    report = analyze(chain_model(), options, eval_samples=8, target_sqnr=MAX_DB, max_sensitivity_layers=1,
                     progress=False)
    assert not report.fix.reached and report.fix.patterns == [BAD]


def test_outlier_dominated_activation_range_suggests_percentile():
    data = np.random.default_rng(2).uniform(0, 1, (48, 4, 32, 32)).astype(np.float32)
    data[20, 0, 3, 3] = 400.0  # one pixel of one calibration sample: far fewer than 0.01 % of the values
    model = chain_model(bad=False, size=32)
    report = analyze(model, legacy_options(calib=data), eval_samples=8, progress=False)
    calib = [s for s in report.suggestions if s.kind == "calib-method"]
    assert calib and calib[0].option.startswith("--calib-method percentile")
    first = report.layer("conv1").activation
    assert first.outlier_ratio > 8 and first.high > 100 > first.p_high
    # With percentile ranges the suggestion goes away and the output gets better.
    clipped = analyze(model, legacy_options(calib=data, calib_method="percentile"), eval_samples=8, progress=False)
    assert not [s for s in clipped.suggestions if s.kind == "calib-method"]
    assert clipped.output_sqnr_db > report.output_sqnr_db + 10


def test_few_samples_are_evaluated_without_holding_out():
    report = analyze(chain_model(bad=False), legacy_options(calib=samples(5)), eval_samples=8,
                     max_sensitivity_layers=1, progress=False)
    assert report.calibration["held_out"] is False
    assert report.calibration["eval_samples"] == report.calibration["calibration_samples"] == 5
    assert report.sensitivity["measured"] == 1 and report.sensitivity["capped"]
    assert "raise --max-sensitivity-layers" in report.sensitivity["note"]


def test_digits_cnn_example():
    digit = np.load(EXAMPLES / "digits_input.npy")  # (1, 1, 8, 8) in [0, 1]
    rng = np.random.default_rng(0)
    images = np.clip(digit + rng.normal(0, 0.1, (24, 1, 8, 8)), 0, 1).astype(np.float32)
    report = analyze(EXAMPLES / "digits_cnn.onnx", legacy_options(calib=images), eval_samples=8, progress=False)
    assert report.output_sqnr_db > 25
    weighted = [l for l in report.layers if l.weight is not None]
    assert len(weighted) == 3 and all(l.sensitivity_db is not None for l in weighted)
    # Data-movement ops add no error of their own and are not sensitivity candidates.
    assert report.layer("/features/features.4/MaxPool").sensitivity_db is None


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_report_files(bad_report, tmp_path):
    out = write_report(bad_report, tmp_path / "report")
    data = json.loads((out / "report.json").read_text())
    assert {"model", "target", "quant", "calibration", "output_sqnr_db", "outputs", "layers", "sensitivity",
            "suggestions", "fix", "compile_command"} <= set(data)
    assert {"name", "op_type", "precision", "sqnr_layerwise_db", "sqnr_accumulated_db", "sensitivity_db",
            "noise_share", "weight", "activation", "keep_float_pattern"} <= set(data["layers"][0])
    assert data["fix"]["patterns"] == [BAD]
    html = (out / "report.html").read_text()
    parser = _Collector()
    parser.feed(html)
    assert parser.tags.count("svg") >= 3 and "rect" in parser.tags and "polyline" in parser.tags
    assert not parser.urls and "http://" not in html and "https://" not in html and "<script" not in html
    assert bad_report.fix.command in html.replace("&#39;", "'")
    with pytest.raises(Exception, match="already exists"):
        write_report(bad_report, out)
    write_report(bad_report, out, force=True)


def test_render_without_fix_shows_the_compile_command():
    report = analyze(chain_model(bad=False), legacy_options(calib=samples(16)), eval_samples=8, progress=False)
    html = render_html(report)
    assert report.fix is None and report.compile_command in html


def test_keep_float_pattern_and_command():
    assert keep_float_pattern("blocks[0]/Conv*") == "blocks[[]0]/Conv[*]"
    options = QuantOptions(quant="int4:g64", calib="data dir/calib.npz", calib_method="entropy", equalize=True,
                           keep_float=("head.*",))
    command = compile_command("models/m.onnx", options, "rpi4", {"x": (1, 3, 8, 8)}, extra_keep_float=["a b"])
    assert command == ("edgekiln compile models/m.onnx -o m-int4-g64 --target rpi4 --input-shape x=1x3x8x8 "
                       "--quant int4:g64 --calib 'data dir/calib.npz' --calib-method entropy "
                       "--keep-float 'head.*' --keep-float 'a b' --equalize")


def test_bad_options():
    options = legacy_options(calib=samples(4))
    with pytest.raises(OptionError, match="not both"):
        analyze(chain_model(), options, auto_keep_float=1, target_sqnr=30, progress=False)
    with pytest.raises(OptionError, match="at least 1"):
        analyze(chain_model(), options, auto_keep_float=0, progress=False)
    with pytest.raises(OptionError, match="max-sensitivity-layers 0"):
        analyze(chain_model(), options, auto_keep_float=1, max_sensitivity_layers=0, progress=False)
    with pytest.raises(OptionError, match="quant-config"):
        with_keep_float(QuantOptions(calib="x.npy", config_file="q.yaml"), ["a"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inverted_residual", "ppocr_cls"])
def test_zoo_models(name):
    from tests.zoo import input_shapes, model_path, sample_input

    feeds = [sample_input(name, seed=seed) for seed in range(12)]
    report = analyze(model_path(name), QuantOptions(calib=feeds), input_shapes=input_shapes(name), eval_samples=4,
                     auto_keep_float=2, progress=False)
    assert report.calibration["held_out"] and report.sensitivity["measured"] > 3
    assert report.fix.after_db > report.fix.before_db
    assert all(l.sqnr_layerwise_db is not None for l in report.layers if l.quantized)
    assert "<svg" in render_html(report)
