"""The quantization debugger: which layers lose the accuracy, why, and what to do about it.

Every number is a signal-to-quantization-noise ratio over the evaluation samples,

    SQNR(x, x̂) = 10 · log10( Σ x² / Σ (x − x̂)² )  dB           (x float, x̂ quantized)

clamped to ±100 dB (100 dB: no measurable error).  Each 6 dB is one bit of resolution.

    float graph      the optimized graph a quantized compile quantizes (after the fuse stage;
                     after cross-layer equalization with --equalize): the reference.
    QDQ graph        its quantized form (`QuantizeGraphPass`, the same config and ranges as
                     `compile`); onnxruntime runs both with every layer output exposed.

    layer-wise       each layer run on the FLOAT values of its inputs (Q/DQ'd as its inputs
                     are), with quantized weights, its output Q/DQ'd: the error that layer
                     adds on its own.  Built by cutting the QDQ graph after every layer and
                     feeding each cut from the float run.
    accumulated      the layer's output (as its readers see it, after Q/DQ) in the fully
                     quantized model versus float: the error carried so far.
    sensitivity      quantize ONLY layer i (everything else float) and measure the model
                     output SQNR S_i.  Noise powers add (≈ independent errors), so layer i's
                     share of the model's quantization noise is
                         share_i = 10^(−S_i/10) / Σ_j 10^(−S_j/10).
                     One onnxruntime session per layer: capped by `max_sensitivity_layers`
                     (the layers with the lowest layer-wise SQNR are measured first).
    outliers         weights: r_o = max|W[o, ...]| per output channel, spread = max r / median r
                     (what a per-tensor activation scale after the layer suffers; cross-layer
                     equalization evens it), and the same over input channels (per-output-
                     channel scales cannot absorb that one); all-zero channels; weight SQNR.
                     activations: calibrated range width / the 99.99th-percentile range width
                     (a range set by a few outliers wastes the int8 grid), and the spread of
                     per-channel max|x| of 4-D outputs.
    fix              keep the most sensitive layers in float, greedily in order of S_i, until K
                     are kept (`auto_keep_float`) or the output SQNR reaches `target_sqnr`;
                     the output SQNR is measured at every step and a layer whose float
                     version does not raise it is not kept (quantization errors can cancel).

Evaluation samples are held out of calibration when there are enough (at least twice
`eval_samples`); otherwise the first samples are used and the report says so.
"""

from __future__ import annotations

import math
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.input_shapes import parse_input_shapes
from edgekiln.compiler.pass_contract import node_label
from edgekiln.compiler.pass_manager import PassManager
from edgekiln.compiler.pipelines import quantized_stages_for
from edgekiln.compiler.qdq_format import match_weight
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.quantize_model import check_target_precisions
from edgekiln.compiler.requantize import dequantize, quantize
from edgekiln.compiler.target import Target, get_target
from edgekiln.errors import CalibrationError, OptionError
from edgekiln.passes.graph_edits import int_attr, set_constant_input
from edgekiln.quantization.quant_config import PrecisionRule, QuantConfig, base_op, is_weighted, precision_kind

MAX_DB = 100.0
DEFAULT_EVAL_SAMPLES = 8
DEFAULT_MAX_SENSITIVITY_LAYERS = 128
OUTLIER_PERCENTILE = "percentile:99.99"
# Suggestion thresholds.
ACTIVATION_OUTLIER_RATIO = 8.0     # calibrated range >= 8x the 99.99th-percentile range: 3 bits wasted
WEIGHT_SPREAD = 20.0               # channel ranges spread >= 20x
ACTIVATION_CHANNEL_SPREAD = 20.0
KEEP_FLOAT_SHARE = 0.2             # a layer causing >= 20 % of the output noise ...
GOOD_OUTPUT_DB = 35.0              # ... in a model whose output SQNR is below this
MAX_KEEP_FLOAT_SUGGESTIONS = 3
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_DEFAULT = ("", "ai.onnx")
# Ops whose output reuses the input's scale: they add no error of their own, so they are not
# sensitivity candidates (quantizing one alone measures its producer's rounding).
_SHARED_PARAMS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Resize", "Pad",
                            "MaxPool"})


# -- the report ------------------------------------------------------------------------------------

@dataclass
class WeightStats:
    precision: str
    channels: int
    max_abs: float
    channel_spread: float | None        # max / median of per-output-channel max|w| (None: median 0)
    input_channel_spread: float | None  # the same over input channels (reduction axis)
    zero_channels: int
    depthwise: bool
    sqnr_db: float | None               # float weights vs their dequantized values (whole tensor)
    zeroed: float | None                # share of the non-zero weights that quantize to 0


@dataclass
class ActivationStats:
    low: float                          # the calibrated range (the method asked for)
    high: float
    p_low: float                        # the 0.01th / 99.99th percentiles
    p_high: float
    outlier_ratio: float | None         # (high − low) / (p_high − p_low)
    channel_spread: float | None        # 4-D outputs: max / median of per-channel max|x|


@dataclass
class LayerReport:
    name: str
    op_type: str
    output: str                         # the float value name
    precision: str                      # the precision the config gives the node
    quantized: bool                     # the pass quantized it (a config precision can still stay float)
    note: str                           # why it stays float, when it does
    keep_float_pattern: str             # the --keep-float pattern that selects exactly this node
    sqnr_layerwise_db: float | None = None
    sqnr_accumulated_db: float | None = None
    sensitivity_db: float | None = None  # model output SQNR with only this layer quantized
    noise_share: float | None = None
    weight: WeightStats | None = None
    activation: ActivationStats | None = None


@dataclass
class Suggestion:
    kind: str                           # keep-float | calib-method | equalize | info
    layers: list[str]
    message: str
    option: str                         # the flag(s) to try


@dataclass
class FixStep:
    layer: str
    pattern: str
    output_sqnr_db: float               # with this layer (and those kept before it) in float
    kept: bool                          # it raised the output SQNR, so the fix keeps it


@dataclass
class KeepFloatFix:
    mode: str                           # "count" (auto_keep_float) or "target_sqnr"
    requested: float
    patterns: list[str]
    before_db: float
    after_db: float
    reached: bool
    steps: list[FixStep]
    command: str                        # the `edgekiln compile ...` line that applies it


@dataclass
class QuantReport:
    model: str
    target: str
    quant: str
    options: dict[str, Any]
    calibration: dict[str, Any]         # samples, eval samples, held out or not, method
    output_sqnr_db: float               # the worst model output
    outputs: dict[str, float]           # per model output
    layers: list[LayerReport]
    sensitivity: dict[str, Any]         # how many candidates, how many measured, capped or not
    suggestions: list[Suggestion]
    fix: KeepFloatFix | None
    compile_command: str
    seconds: dict[str, float] = field(default_factory=dict)

    def layer(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in the report")

    def ranked(self) -> list[LayerReport]:
        """Layers with a sensitivity, most sensitive (lowest output SQNR alone) first."""
        return sorted((l for l in self.layers if l.sensitivity_db is not None), key=lambda l: l.sensitivity_db)

    def worst_layers(self, count: int = 10) -> list[LayerReport]:
        """The most sensitive layers, then the rest of the quantized ones by layer-wise SQNR."""
        ranked = self.ranked()
        rest = sorted((l for l in self.layers if l.quantized and l.sensitivity_db is None
                       and l.sqnr_layerwise_db is not None), key=lambda l: l.sqnr_layerwise_db)
        return (ranked + rest)[:count]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the API ---------------------------------------------------------------------------------------

def analyze(model: str | Path | onnx.ModelProto, quantization: QuantOptions, *, target: str | Target = "host",
            input_shapes: Any = None, eval_samples: int = DEFAULT_EVAL_SAMPLES,
            max_sensitivity_layers: int = DEFAULT_MAX_SENSITIVITY_LAYERS, auto_keep_float: int | None = None,
            target_sqnr: float | None = None, progress: bool = True,
            model_label: str | None = None) -> QuantReport:
    """The quantization report of `model` quantized with `quantization` (see the module docstring).

    `auto_keep_float` (K layers) or `target_sqnr` (dB) also computes the keep-float fix.
    `model_label` is how the compile command names the model (default: the path given).
    """
    if auto_keep_float is not None and target_sqnr is not None:
        raise OptionError("give --auto-keep-float K or --target-sqnr DB, not both")
    if auto_keep_float is not None and auto_keep_float < 1:
        raise OptionError(f"--auto-keep-float {auto_keep_float}: keep at least 1 layer in float")
    if eval_samples < 1:
        raise OptionError(f"--eval-samples {eval_samples}: evaluate on at least 1 sample")
    if max_sensitivity_layers < 0:
        raise OptionError(f"--max-sensitivity-layers {max_sensitivity_layers}: must be >= 0")
    clock = _Clock()
    target = target if isinstance(target, Target) else get_target(target)
    shapes = parse_input_shapes(input_shapes)
    setup = _Setup.build(model, quantization, target, shapes, eval_samples, progress)
    clock.lap("calibrate")
    full = setup.qdq(setup.config)
    layers = setup.describe_layers(full)
    outputs = setup.measure_layers(full, layers)
    clock.lap("layer-wise")
    sensitivity = setup.measure_sensitivity(layers, max_sensitivity_layers, progress)
    clock.lap("sensitivity")
    output_sqnr = min(outputs.values())
    label = model_label or (str(model) if not isinstance(model, onnx.ModelProto) else "model.onnx")
    command = compile_command(label, quantization, target.name, input_shapes)
    fix = None
    if auto_keep_float is not None or target_sqnr is not None:
        fix = setup.keep_float_fix(layers, output_sqnr, auto_keep_float, target_sqnr, progress)
        fix.command = compile_command(label, quantization, target.name, input_shapes, extra_keep_float=fix.patterns)
        clock.lap("fix")
    calibration = dict(setup.calibration_info)
    report = QuantReport(
        model=label, target=target.name, quant=setup.config.default, options=quantization.to_manifest(),
        calibration=calibration, output_sqnr_db=output_sqnr, outputs=outputs, layers=layers,
        sensitivity=sensitivity, suggestions=[], fix=fix, compile_command=command, seconds=clock.laps)
    report.suggestions = suggest(report, quantization)
    return report


def recommend_keep_float(model: str | Path | onnx.ModelProto, quantization: QuantOptions, *,
                         count: int | None = None, target_sqnr: float | None = None, **kwargs) -> list[str]:
    """`--keep-float` patterns for the `count` most sensitive layers, or for as many as the
    output SQNR needs to reach `target_sqnr` dB; pass them on to compile:

        patterns = recommend_keep_float("m.onnx", options, target_sqnr=30)
        compile_model("m.onnx", quantization=with_keep_float(options, patterns))
    """
    if count is None and target_sqnr is None:
        raise OptionError("recommend_keep_float needs count=K or target_sqnr=DB")
    report = analyze(model, quantization, auto_keep_float=count, target_sqnr=target_sqnr, **kwargs)
    return list(report.fix.patterns)


def with_keep_float(quantization: QuantOptions, patterns: Sequence[str]) -> QuantOptions:
    """`quantization` with `patterns` added to its --keep-float rules."""
    if quantization.config_file is not None:
        raise OptionError("the quantization comes from a --quant-config file, where --keep-float flags are "
                          f"ignored: add {list(patterns)} to its keep_float list")
    return replace(quantization, keep_float=tuple(quantization.keep_float) + tuple(patterns))


def keep_float_pattern(node_name: str) -> str:
    """A --keep-float glob matching exactly `node_name` (glob characters escaped)."""
    return re.sub(r"([*?\[])", r"[\1]", node_name)


def compile_command(model: str, quantization: QuantOptions, target: str = "host", input_shapes: Any = None,
                    extra_keep_float: Sequence[str] = ()) -> str:
    """The `edgekiln compile` command line that compiles with these options (and extra --keep-float)."""
    stem = Path(model).stem or "model"
    words = ["edgekiln", "compile", model, "-o", f"{stem}-{quantization.quant.replace(':', '-')}"]
    if target != "host":
        words += ["--target", target]
    for name, dims in parse_input_shapes(input_shapes).items():
        words += ["--input-shape", f"{name}={'x'.join(map(str, dims))}"]
    calib = quantization.calib if isinstance(quantization.calib, (str, Path)) else "CALIBRATION_DATA"
    words += ["--quant", quantization.quant, "--calib", str(calib)]
    if quantization.calib_method != QuantOptions.calib_method:
        words += ["--calib-method", quantization.calib_method]
    if quantization.calib_samples is not None:
        words += ["--calib-samples", str(quantization.calib_samples)]
    if quantization.preprocessing:
        words += ["--preprocess", quantization.preprocessing]
    if quantization.config_file is not None:
        words += ["--quant-config", str(quantization.config_file)]
    for rule in quantization.weights:
        words += ["--weights", rule]
    for pattern in (*quantization.keep_float, *extra_keep_float):
        words += ["--keep-float", pattern]
    if quantization.weight_method != "minmax":
        words += ["--weight-method", quantization.weight_method]
    if quantization.equalize:
        words.append("--equalize")
    if quantization.bias_correction != QuantOptions.bias_correction:
        words.append("--bias-correction" if quantization.bias_correction else "--no-bias-correction")
    if not quantization.float_outputs:
        words.append("--int8-outputs")
    command = shlex.join(words)
    if quantization.config_file is not None and extra_keep_float:
        command += f"   # and add to keep_float in {quantization.config_file}: {list(extra_keep_float)}"
    return command


# -- SQNR ------------------------------------------------------------------------------------------

class _Noise:
    """Σ x² and Σ (x − x̂)² accumulated over batches."""

    __slots__ = ("signal", "noise")

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def add(self, reference: np.ndarray, test: np.ndarray) -> None:
        reference = np.asarray(reference, np.float64)
        self.signal += float(np.sum(reference * reference))
        self.noise += float(np.sum((reference - np.asarray(test, np.float64)) ** 2))

    def db(self) -> float:
        return sqnr_from_powers(self.signal, self.noise)


def sqnr_from_powers(signal: float, noise: float) -> float:
    if noise <= signal * 10 ** (-MAX_DB / 10):
        return MAX_DB
    if signal <= noise * 10 ** (-MAX_DB / 10):
        return -MAX_DB
    return float(10 * math.log10(signal / noise))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """SQNR of `test` against `reference` in dB, clamped to ±100."""
    noise = _Noise()
    noise.add(reference, test)
    return noise.db()


# -- the work --------------------------------------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.start, 3)
        self.start = now


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=not enabled)


@dataclass
class _Setup:
    reference: Graph                    # the float graph: the reference and what gets quantized
    corrected: Graph                    # the same after bias correction (or `reference` itself)
    config: QuantConfig
    ranges: dict
    percentile_ranges: dict
    eval_batches: list[dict[str, np.ndarray]]
    calibration_info: dict[str, Any]
    float_outputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    precisions: dict[str, str] = field(default_factory=dict)
    keep_outputs_float: bool = False    # QuantizeGraphPass(float_outputs=...), as compile decides it

    @classmethod
    def build(cls, model, options: QuantOptions, target: Target, shapes: dict, eval_samples: int,
              progress: bool) -> _Setup:
        from edgekiln.calibration import ImagePreprocessing, calibrate, open_calibration_data
        from edgekiln.passes.correct_bias import CorrectBiasPass

        config = options.config()
        check_target_precisions(config, target)
        graph = _load(model, shapes)
        unfolded = graph.clone() if str(options.calib).startswith("synthetic") else None
        for stage in quantized_stages_for(target.backend, equalize=options.equalize):
            graph = PassManager(stage.passes, stage=stage.name).run(graph)
        precisions = config.assign(graph)  # a rule matching nothing fails here, before any work
        preprocessing = ImagePreprocessing.parse(options.preprocessing) if options.preprocessing else None
        data = open_calibration_data(options.calib, graph, preprocessing=preprocessing, model_graph=unfolded,
                                     num_samples=options.calib_samples)
        calib_data, eval_batches, info = _split(data, graph, eval_samples)
        info["method"] = options.calib_method
        corrected = graph
        if options.bias_correction:
            corrected = graph.clone()
            PassManager([CorrectBiasPass(calib_data, config)], stage="bias-correction").run(corrected)
        ranges = calibrate(corrected, calib_data, method=options.calib_method, progress=progress)
        same = options.calib_method == OUTLIER_PERCENTILE
        percentile = ranges if same else calibrate(graph, calib_data, method=OUTLIER_PERCENTILE, progress=progress)
        return cls(graph, corrected, config, ranges, percentile, eval_batches, info, precisions=precisions,
                   keep_outputs_float=options.float_outputs and "fp32" in target.precisions)

    # -- quantized variants ---------------------------------------------------------------------
    def qdq(self, config: QuantConfig) -> _Quantized:
        """The QDQ graph for `config`; bias corrections apply only where the node is quantized."""
        from edgekiln.passes.correct_bias import CORRECTED_KEY
        from edgekiln.passes.quantize_graph import QuantizeGraphPass

        graph = self.corrected.clone()
        precisions = config.assign(graph)
        if self.corrected is not self.reference:
            for node in graph.main:
                marked = node.metadata_props.get(CORRECTED_KEY)
                if marked is not None and precisions.get(node.name) != marked:
                    original = self.reference.node(node.name)
                    bias = Graph.constant(original.inputs[2]) if len(original.inputs) > 2 else None
                    bias = bias if bias is not None else np.zeros(_out_channels(original), np.float32)
                    set_constant_input(graph, node, 2, bias, f"{node.name}_bias_uncorrected")
        result = QuantizeGraphPass(config, self.ranges, float_outputs=self.keep_outputs_float).run(graph)
        kept = {}
        for entry in result.not_applied:
            label, sep, reason = entry.partition(": kept float: ")
            if sep:
                kept[label] = reason
        return _Quantized(result.graph, precisions, kept)

    def only(self, name: str) -> QuantConfig:
        rule = PrecisionRule(keep_float_pattern(name), self.precisions[name], "--quant-report")
        return QuantConfig("fp32", (rule,), keep_first_last_int8=False, method=self.config.method)

    def without(self, patterns: Sequence[str]) -> QuantConfig:
        rules = tuple(PrecisionRule(p, "fp32", "--keep-float") for p in patterns)
        return replace(self.config, rules=self.config.rules + rules)

    def output_sqnr(self, graph: Graph) -> dict[str, float]:
        """{model output: SQNR} of `graph` against the float model on the evaluation batches."""
        session = _session(graph, [])
        names = [o.name for o in session.get_outputs()]
        noise = {name: _Noise() for name in names}
        for batch, reference in zip(self.eval_batches, self.float_outputs):
            for name, array in zip(names, session.run(names, batch)):
                if name in reference:
                    noise[name].add(reference[name], array)
        return {name: n.db() for name, n in noise.items() if n.signal or n.noise}

    # -- layers ---------------------------------------------------------------------------------
    def describe_layers(self, full: _Quantized) -> list[LayerReport]:
        layers = []
        weights = _weight_stats_by_node(full.graph, self.reference)
        for node in _layer_nodes(full.graph):
            out = node.outputs[0]
            name = node.name or ""
            precision = full.precisions.get(name, self.config.default)
            note = full.kept.get(node_label(node), "")
            if precision_kind(precision) == "fp32" and not note:
                note = "precision fp32 (--keep-float)"
            quantized = precision_kind(precision) != "fp32" and not note
            float_name = full.float_names.get(out.name, out.name)
            layers.append(LayerReport(
                name=name, op_type=node.op_type, output=float_name, precision=precision if quantized else "fp32",
                quantized=quantized, note=note, keep_float_pattern=keep_float_pattern(name),
                weight=weights.get(name), activation=self._activation_stats(float_name)))
        return layers

    def _activation_stats(self, name: str) -> ActivationStats | None:
        used, bulk = self.ranges.get(name), self.percentile_ranges.get(name)
        if used is None or bulk is None:
            return None
        width = bulk.high - bulk.low
        ratio = (used.high - used.low) / width if width > 0 else None
        return ActivationStats(used.low, used.high, bulk.low, bulk.high, ratio, None)

    def measure_layers(self, full: _Quantized, layers: list[LayerReport]) -> dict[str, float]:
        """Layer-wise and accumulated SQNR of every layer; the model outputs' SQNR."""
        nodes = _layer_nodes(full.graph)  # aligned with `layers` (describe_layers)
        visible, cut_params = [], []
        for node in nodes:
            name, params = _visible_value(node.outputs[0])
            visible.append(name)
            cut_params.append(params)
        cut, fed = _cut_graph(full.graph, set(self.float_names()), full.float_names)
        own_names = [f"{n.outputs[0].name}{_CUT}" if n.outputs[0].name in fed else None for n in nodes]
        float_session = _session(self.reference, self.float_names())
        qdq_session = _session(full.graph, sorted(set(visible)))
        cut_session = _session(cut, [name for name in own_names if name is not None])
        cut_outputs = [o.name for o in cut_session.get_outputs()]
        float_outputs = [o.name for o in float_session.get_outputs()]
        qdq_outputs = [o.name for o in qdq_session.get_outputs()]
        model_outputs = [v.name for v in self.reference.outputs]
        layerwise = [_Noise() for _ in layers]
        accumulated = [_Noise() for _ in layers]
        spread = [np.zeros(0) for _ in layers]
        outputs = {name: _Noise() for name in model_outputs}
        self.float_outputs = []
        for batch in self.eval_batches:
            ref = dict(zip(float_outputs, float_session.run(float_outputs, batch)))
            ref.update(batch)
            self.float_outputs.append({name: ref[name] for name in model_outputs})
            quantized = dict(zip(qdq_outputs, qdq_session.run(qdq_outputs, batch)))
            feeds = dict(batch)
            feeds.update({qdq_name: ref[float_name] for qdq_name, float_name in fed.items()})
            cut_values = dict(zip(cut_outputs, cut_session.run(cut_outputs, feeds)))
            for name in model_outputs:
                if np.issubdtype(ref[name].dtype, np.floating):
                    outputs[name].add(ref[name], quantized[name])
            for i, layer in enumerate(layers):
                reference = ref.get(layer.output)
                if reference is None or not np.issubdtype(reference.dtype, np.floating):
                    continue
                accumulated[i].add(reference, quantized[visible[i]])
                own = cut_values.get(own_names[i]) if own_names[i] is not None else None
                if own is not None:
                    if cut_params[i] is not None:  # the layer's own output rounding
                        own = dequantize(quantize(own, *cut_params[i]), *cut_params[i])
                    layerwise[i].add(reference, own)
                if reference.ndim == 4:
                    peak = np.max(np.abs(reference), axis=(0, 2, 3))
                    spread[i] = np.maximum(spread[i], peak) if spread[i].size else peak
        for i, layer in enumerate(layers):
            if layerwise[i].signal or layerwise[i].noise:
                layer.sqnr_layerwise_db = layerwise[i].db()
            if accumulated[i].signal or accumulated[i].noise:
                layer.sqnr_accumulated_db = accumulated[i].db()
            if layer.activation is not None and spread[i].size > 1:
                layer.activation.channel_spread = _spread(spread[i])
        return {name: noise.db() for name, noise in outputs.items() if noise.signal or noise.noise}

    def float_names(self) -> list[str]:
        """Every node output of the float graph (and its inputs): what the cut graph is fed from."""
        names = [v.name for v in self.reference.inputs]
        for node in self.reference.nodes:
            names += [v.name for v in node.outputs if v.name and v.dtype is not None]
        return list(dict.fromkeys(names))

    # -- sensitivity and the fix ---------------------------------------------------------------
    def measure_sensitivity(self, layers: list[LayerReport], cap: int, progress: bool) -> dict[str, Any]:
        candidates = [l for l in layers if l.quantized and l.name and l.op_type not in _SHARED_PARAMS]
        chosen = sorted(candidates, key=lambda l: (l.sqnr_layerwise_db if l.sqnr_layerwise_db is not None
                                                   else MAX_DB))[:cap]
        chosen_names = {l.name for l in chosen}
        with _progress(progress) as bar:
            task = bar.add_task("sensitivity (one layer quantized at a time)", total=len(chosen))
            for layer in layers:
                if layer.name in chosen_names:
                    sqnr = self.output_sqnr(self.qdq(self.only(layer.name)).graph)
                    layer.sensitivity_db = min(sqnr.values()) if sqnr else MAX_DB
                    bar.advance(task)
        powers = {l.name: 10 ** (-l.sensitivity_db / 10) for l in chosen}
        total = sum(powers.values())
        for layer in chosen:
            layer.noise_share = powers[layer.name] / total if total > 0 else 0.0
        weighted = sum(1 for l in candidates if l.weight is not None)
        capped = len(chosen) < len(candidates)
        note = (f"sensitivity measured for {len(chosen)} of {len(candidates)} quantized layers (those with the "
                f"lowest layer-wise SQNR); raise --max-sensitivity-layers to measure more" if capped
                else f"sensitivity measured for all {len(candidates)} quantized layers")
        return {"candidates": len(candidates), "weighted_candidates": weighted, "measured": len(chosen),
                "capped": capped, "cap": cap, "note": note}

    def keep_float_fix(self, layers: list[LayerReport], before: float, count: int | None, target: float | None,
                       progress: bool) -> KeepFloatFix:
        """Greedy: try the layers in order of sensitivity; keep one in float only when that raises
        the output SQNR (errors can cancel, so a layer's noise alone does not promise a gain)."""
        ranked = sorted((l for l in layers if l.sensitivity_db is not None), key=lambda l: l.sensitivity_db)
        if not ranked:
            raise OptionError("no layer has a sensitivity to rank (is --max-sensitivity-layers 0?); "
                              "measure sensitivity to choose layers to keep in float")
        patterns: list[str] = []
        steps: list[FixStep] = []
        current = before
        with _progress(progress) as bar:
            task = bar.add_task("keep-float fix", total=len(ranked))
            for layer in ranked:
                if (count is not None and len(patterns) >= count) or (target is not None and current >= target):
                    break
                sqnr = self.output_sqnr(self.qdq(self.without([*patterns, layer.keep_float_pattern])).graph)
                tried = min(sqnr.values()) if sqnr else MAX_DB
                kept = tried > current
                if kept:
                    patterns.append(layer.keep_float_pattern)
                    current = tried
                steps.append(FixStep(layer.name, layer.keep_float_pattern, tried, kept))
                bar.advance(task)
        reached = current >= target if target is not None else len(patterns) == count
        return KeepFloatFix("count" if count is not None else "target_sqnr",
                            float(count if count is not None else target), patterns, before, current, reached, steps,
                            command="")


@dataclass
class _Quantized:
    graph: Graph
    precisions: dict[str, str]
    kept: dict[str, str]               # node label -> why the pass kept it float
    float_names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # QDQ value name -> float value name: a graph output's float source is renamed
        # `<name>_float` when its DequantizeLinear takes the output's name (qdq_format).
        for out in self.graph.outputs:
            producer = out.producer()
            if producer is not None and producer.op_type == "DequantizeLinear":
                q = producer.inputs[0].producer()
                if q is not None and q.op_type == "QuantizeLinear":
                    self.float_names[q.inputs[0].name] = out.name


# -- graph helpers ---------------------------------------------------------------------------------

_CUT = "__layerwise"


def _load(model, shapes: dict) -> Graph:
    if isinstance(model, onnx.ModelProto):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            onnx.save(model, path)
            graph = load_model(path, shapes)
        graph.source = None
        return graph
    return load_model(Path(model), shapes)


def _constant_derived(graph: Graph) -> set[int]:
    """ids of values computed from initializers only (weights and their DQ chains)."""
    constant = {id(v) for v in graph.main.initializers.values() if not v.is_graph_input()}
    for node in graph.main:
        if node.inputs and all(v is None or id(v) in constant for v in node.inputs):
            constant |= {id(v) for v in node.outputs}
    return constant


def _layer_nodes(graph: Graph) -> list[ir.Node]:
    """The model's own nodes with a float first output: not Q/DQ machinery, not constant-derived."""
    constant = _constant_derived(graph)
    found = []
    for node in graph.main:
        if node.domain in _DEFAULT and node.op_type in _QDQ_OPS:
            continue
        if not node.outputs or id(node.outputs[0]) in constant or node.outputs[0].dtype != ir.DataType.FLOAT:
            continue
        found.append(node)
    return found


def _visible_value(value: ir.Value) -> tuple[str, tuple[float, int] | None]:
    """The name readers see for `value` (its DQ output when it is Q/DQ'd) and the Q parameters."""
    for user, index in value.uses():
        if user.op_type == "QuantizeLinear" and user.domain in _DEFAULT and index == 0:
            scale, zero = Graph.constant(user.inputs[1]), Graph.constant(user.inputs[2])
            for reader, _ in user.outputs[0].uses():
                if reader.op_type == "DequantizeLinear" and scale is not None and zero is not None:
                    return reader.outputs[0].name, (float(scale.reshape(())), int(zero.reshape(())))
    return value.name, None


def _cut_graph(qdq: Graph, float_names: set[str], renamed: dict[str, str]) -> tuple[Graph, dict[str, str]]:
    """The QDQ graph cut after every layer: each layer output's readers read a new graph input
    of the same name (fed the float value), and the layer's own result is a graph output
    `<name>__layerwise`.  Returns the graph and {graph input: float value name}."""
    cut = qdq.clone()
    fed: dict[str, str] = {}
    for node in _layer_nodes(cut):
        for out in node.outputs:
            float_name = renamed.get(out.name, out.name)
            if not out.name or float_name not in float_names:
                continue
            name, was_output = out.name, out.is_graph_output()
            out.name = f"{name}{_CUT}"
            feed = ir.Value(name=name, shape=out.shape, type=out.type)
            if out.uses():  # a float graph output (QuantizeGraphPass float_outputs) has no readers to rewire
                out.replace_all_uses_with(feed)
            cut.main.inputs.append(feed)
            if not was_output:
                cut.main.outputs.append(out)
            fed[name] = float_name
    return cut, fed


def _session(graph: Graph, extra_outputs: Sequence[str]) -> ort.InferenceSession:
    """An onnxruntime session for `graph` with `extra_outputs` (value names) also returned."""
    proto = graph.to_proto()
    present = {o.name for o in proto.graph.output} | {i.name for i in proto.graph.input}
    types = {v.name: v.dtype for v in graph.inputs}
    types.update({v.name: v.dtype for n in graph.nodes for v in n.outputs})
    for name in extra_outputs:
        if name not in present and types.get(name) is not None:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, int(types[name]), None))
            present.add(name)
    options = ort.SessionOptions()
    # No graph optimizations: even the basic level has onnxruntime quantize the float weights of
    # a Conv / Gemm that reads a DequantizeLinear output ("WeightBiasQuantization"), which
    # would silently quantize every layer kept in float next to a quantized one.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


# -- statistics ------------------------------------------------------------------------------------

def _spread(peaks: np.ndarray) -> float | None:
    """max / median of the non-zero channel peaks (None when fewer than two are non-zero)."""
    live = peaks[peaks > 0]
    if live.size < 2:
        return None
    return float(np.max(live) / np.median(live))


def _out_channels(node: ir.Node) -> int:
    w = Graph.constant(node.inputs[1])
    axes = _weight_axes(node, w)
    return int(w.shape[axes[0]])


def _weight_axes(node: ir.Node, w: np.ndarray) -> tuple[int, int]:
    """(output channel axis, input channel axis) of the weight."""
    base = base_op(node)
    if base == "Conv":
        return 0, 1
    if base == "ConvTranspose":
        return 1, 0
    if base == "Gemm" and int_attr(node, "transB", 0):
        return 0, 1
    return w.ndim - 1, w.ndim - 2  # Gemm transB=0, MatMul: [K, N]


def _weight_stats_by_node(qdq: Graph, reference: Graph) -> dict[str, WeightStats]:
    """Weight outliers of every weighted node: its float weight (from the float graph, by node
    name) against what its QDQ chain computes."""
    float_nodes = {node.name: node for node in reference.main if node.name and is_weighted(node)}
    stats = {}
    for node in qdq.main:
        original = float_nodes.get(node.name)
        if original is None or base_op(node) is None:
            continue
        w = Graph.constant(original.inputs[1])
        quantized = match_weight(node.inputs[1])
        out_axis, in_axis = _weight_axes(original, w)
        per_out = np.max(np.abs(w), axis=tuple(a for a in range(w.ndim) if a != out_axis))
        per_in = np.max(np.abs(w), axis=tuple(a for a in range(w.ndim) if a != in_axis))
        depthwise = base_op(node) == "Conv" and int_attr(node, "group", 1) > 1 and w.shape[1] == 1
        w_hat = _dequantized(quantized).reshape(w.shape) if quantized is not None else None
        stats[node.name] = WeightStats(
            precision=quantized.precision if quantized is not None else "fp32", channels=int(per_out.size),
            max_abs=float(np.max(per_out)) if per_out.size else 0.0, channel_spread=_spread(per_out),
            input_channel_spread=None if depthwise else _spread(per_in), zero_channels=int(np.sum(per_out == 0)),
            depthwise=depthwise,
            sqnr_db=sqnr_db(w, w_hat) if w_hat is not None else None,
            zeroed=float(np.mean(w_hat[w != 0] == 0)) if w_hat is not None and np.any(w != 0) else None)
    return stats


def _dequantized(weight) -> np.ndarray:
    """The float weight a QDQ chain computes, in the node's own layout."""
    q = weight.q_values.astype(np.float32)
    if weight.group_size is not None:
        values = (q.reshape(q.shape[0], -1, weight.group_size) * weight.scale.reshape(q.shape[0], -1, 1))
        values = values.reshape(q.shape)
    else:
        values = q * weight.scale.reshape((-1,) + (1,) * (q.ndim - 1))
    return values.T if weight.transposed else values


# -- calibration data split --------------------------------------------------------------------------

class _Skip:
    """The samples of `data` after the first `skip`, re-readable (calibration and bias
    correction each read them once)."""

    def __init__(self, samples: Callable[[], Iterator], skip: int, count: int | None) -> None:
        self._samples, self._skip, self._count = samples, skip, count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for index, (_, sample) in enumerate(self._samples()):
            if index >= self._skip:
                yield sample

    def __len__(self) -> int:
        return self._count


def _split(data, graph: Graph, eval_samples: int):
    """(calibration data, evaluation batches, info): the first `eval_samples` samples are held
    out when at least as many remain for calibration."""
    from edgekiln.calibration import open_calibration_data

    batch = data.batch_size
    wanted = max(batch, -(-eval_samples // batch) * batch)
    total = data.num_samples
    samples = data.samples
    if total is None:  # an iterable of unknown length (API): read it once into memory
        listed = [s for _, s in data.samples()]
        total, samples = len(listed), (lambda: ((str(i), s) for i, s in enumerate(listed)))
        data = open_calibration_data(listed, graph)
    evaluation = []
    for index, (_, sample) in enumerate(samples()):
        if index >= wanted:
            break
        evaluation.append(sample)
    held_out = total - wanted >= wanted
    if held_out:
        calib = open_calibration_data(_Skip(samples, wanted, total - wanted), graph)
        calib.num_samples = total - wanted  # an iterable does not say; the progress bar wants it
    else:
        calib = data
        evaluation = evaluation[:max(batch, len(evaluation) // batch * batch)]
    if len(evaluation) < batch:
        raise CalibrationError(f"{data.description}: {len(evaluation)} sample(s) cannot fill one batch of {batch}")
    eval_batches = list(open_calibration_data(evaluation, graph))
    info = {"data": data.description, "samples": total, "calibration_samples": total - wanted if held_out else total,
            "eval_samples": len(evaluation), "held_out": held_out}
    return calib, eval_batches, info


# -- suggestions ---------------------------------------------------------------------------------------

def suggest(report: QuantReport, options: QuantOptions) -> list[Suggestion]:
    """Concrete next steps from the measurements (module docstring: thresholds at the top)."""
    found: list[Suggestion] = []
    ranked = report.ranked() if report.output_sqnr_db < GOOD_OUTPUT_DB else []
    for layer in ranked[:MAX_KEEP_FLOAT_SUGGESTIONS]:
        if (layer.noise_share or 0) < KEEP_FLOAT_SHARE or layer.sensitivity_db >= MAX_DB:
            break
        found.append(Suggestion(
            "keep-float", [layer.name],
            f"layer {layer.name} ({layer.op_type}) alone brings the output SQNR down to {layer.sensitivity_db:.1f} dB "
            f"({layer.noise_share:.0%} of the model's quantization noise): keep it in float",
            f"--keep-float {shlex.quote(layer.keep_float_pattern)}"))
    if options.calib_method == "minmax":
        outliers = sorted((l for l in report.layers if l.quantized and l.activation is not None
                           and (l.activation.outlier_ratio or 0) >= ACTIVATION_OUTLIER_RATIO),
                          key=lambda l: -l.activation.outlier_ratio)
        for layer in outliers[:3]:
            found.append(Suggestion(
                "calib-method", [layer.name],
                f"layer {layer.name}: activation range is {layer.activation.outlier_ratio:.0f}x its 99.99th "
                f"percentile range (a few outliers set the int8 step)", "--calib-method percentile (or entropy)"))
        if len(outliers) > 3:
            found.append(Suggestion("calib-method", [l.name for l in outliers[3:]],
                                    f"{len(outliers) - 3} more layer(s) have outlier-dominated activation ranges",
                                    "--calib-method percentile (or entropy)"))
    equalize = []
    for layer in report.layers:
        if not layer.quantized:
            continue
        reasons = []
        w = layer.weight
        if w is not None and (w.channel_spread or 0) >= WEIGHT_SPREAD:
            reasons.append(f"{'depthwise ' if w.depthwise else ''}weight ranges spread {w.channel_spread:.0f}x "
                           "across output channels")
        if w is not None and (w.input_channel_spread or 0) >= WEIGHT_SPREAD:
            zeroed = f"; {w.zeroed:.0%} of its weights round to 0" if w.zeroed else ""
            reasons.append(f"weight ranges spread {w.input_channel_spread:.0f}x across input channels (per-output-"
                           f"channel scales cannot absorb that{zeroed})")
        a = layer.activation
        if w is not None and a is not None and (a.channel_spread or 0) >= ACTIVATION_CHANNEL_SPREAD:
            reasons.append(f"output channel ranges spread {a.channel_spread:.0f}x under one per-tensor scale")
        if reasons:
            equalize.append((layer, reasons))
    equalize.sort(key=lambda item: item[0].sqnr_layerwise_db if item[0].sqnr_layerwise_db is not None else MAX_DB)
    for layer, reasons in equalize[:3]:
        after = (" (still there after --equalize: the pair cannot be equalized; 'edgekiln compile --explain' "
                 "says why)") if options.equalize else ""
        found.append(Suggestion("equalize", [layer.name], f"layer {layer.name}: {'; '.join(reasons)}{after}",
                                f"--keep-float {shlex.quote(layer.keep_float_pattern)}" if options.equalize
                                else "--equalize"))
    if len(equalize) > 3 and not options.equalize:
        found.append(Suggestion("equalize", [l.name for l, _ in equalize[3:]],
                                f"{len(equalize) - 3} more layer(s) have channel ranges spread >= "
                                f"{WEIGHT_SPREAD:.0f}x", "--equalize"))
    dead = [l for l in report.layers if l.weight is not None and l.weight.zero_channels]
    for layer in dead[:3]:
        found.append(Suggestion(
            "info", [layer.name],
            f"layer {layer.name}: {layer.weight.zero_channels} of {layer.weight.channels} output channels have "
            "all-zero weights (they quantize exactly; structured pruning would remove them)", ""))
    return found
