"""Artifact weight bytes vs FP32 for int8 / int4:g64 / ternary, with and without the first/last-layer int8 guard.

    python -m benchmarks.weight_bytes [--models lenet_mnist,ppocr_rec]

Per model (every zoo and PP-OCR model at its static test shape):

    FP32 bytes       every float initializer of the optimized float graph (compile without
                     --quant: BatchNorm folded, so both sides count the same parameters)
    quantized bytes  Σ packed_weight_bytes(q, precision) over the weight and bias DequantizeLinear
                     chains of the QDQ graph (values packed at 8 / 4 / 2 bits plus their scales;
                     int32 biases at 4 bytes plus a 4-byte scale per value, as the packing rule
                     says) + the float bytes of every float initializer that stays float
                     (LayerNorm parameters, constant operands of Mul/Add, layers kept float)

    artifact bytes   what the integer Program's constants (program/constants.bin) really hold,
                     low-bit values packed: packed weights + per output channel an int32 bias,
                     an int32 requantization multiplier and an int32 shift (the float scales are
                     not stored: the multipliers carry them; a layer writing a float graph
                     output stores one float32 scale per channel instead, counted with the
                     multipliers, and its bias as float32 integers) + int32 per-group ratios (int4 /
                     ternary groups) + everything else (activation lookup tables, softmax and
                     LayerNorm constants, float layers).  The arm_cpu blob adds per channel the
                     int32 weight row sums its GEMM uses for the input zero point.
    floor            per weighted layer, the least any per-channel scheme can store: the packed
                     values plus one int32 bias per output channel, no scales at all.  Where the
                     floor of a layer is above the bar the bar is arithmetically impossible for
                     it (an int8 depthwise 3x3: (9 + 4) / (36 + 4) = 0.325 > 0.26); the table
                     counts those layers and the whole model's floor.

Activation quantization parameters (one float32 scale + one int8 zero point per quantized
tensor) are not weights: reported in the JSON, left out of the ratio.  Calibration data does
not change a byte count, so two sample inputs calibrate (defaults otherwise, bias correction
off: it changes no byte).

The issue's bars: INT8 <= 0.26x, INT4 <= 0.14x, ternary <= 0.08x of FP32.  The low-bit
precisions are measured twice: with the default guard (first and last weighted layer int8)
and without it (`keep_first_last_int8=False`, every weighted layer at the precision).

Writes benchmarks/results/weight_bytes.json.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from benchmarks.quantization_data import scoring_target
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.qdq_format import PRECISION_KEY
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.quantization.weights import packed_weight_bytes
from tests.zoo import all_models, input_shapes, model_path, sample_input

RESULTS = Path(__file__).parent / "results" / "weight_bytes.json"
BARS = {"int8": 0.26, "int4": 0.14, "ternary": 0.08}
# (label, --quant, keep_first_last_int8)
CONFIGS = (("int8", "int8", None), ("int4:g64", "int4:g64", None), ("int4:g64 no guard", "int4:g64", False),
           ("ternary", "ternary", None), ("ternary no guard", "ternary", False))
VALUE_BITS = {"int8": 8, "int4": 4, "ternary": 2}  # the packing rule of packed_weight_bytes, for the breakdown
BREAKDOWN = ("int8", "int4:g64 no guard", "ternary no guard")
_FLOATS = ("FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16")


def _is_float(value) -> bool:
    return value.const_value is not None and value.const_value.dtype.name in _FLOATS


def float_bytes(graph: Graph) -> int:
    """Bytes of every float initializer."""
    return sum(v.const_value.nbytes for v in graph.main.initializers.values() if _is_float(v))


def quantized_bytes(graph: Graph) -> dict:
    """Bytes of a QDQ graph's weights: packed weights, int32 biases, float left over, activation parameters."""
    counted: set[str] = set()
    weights = biases = activation_params = values = 0
    precisions: Counter = Counter()
    for node in graph.main:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        params = [v for v in node.inputs[1:] if v is not None]
        counted.update(v.name for v in params)
        precision = node.metadata_props.get(PRECISION_KEY) if node.op_type == "DequantizeLinear" else None
        if precision is None:  # an activation's Q or DQ: its scale and zero point only
            activation_params += sum(v.const_value.nbytes for v in params if v.name in graph.main.initializers
                                     and node.op_type == "QuantizeLinear")
            continue
        source = node.inputs[0]
        group = source.producer()
        if group is not None and group.op_type == "Reshape":  # grouped: int8 values -> Reshape -> DQ
            counted.update(v.name for v in group.inputs)
            source = group.inputs[0]
        counted.add(source.name)
        q = Graph.constant(source)
        size = packed_weight_bytes(q, precision)
        if precision == "int32":
            biases += size
        else:
            weights += size
            values += math.ceil(q.size * VALUE_BITS[precision.split(":")[0]] / 8)
            precisions[precision] += 1
    left = sum(v.const_value.nbytes for name, v in graph.main.initializers.items()
               if name not in counted and _is_float(v))
    return {"weight_bytes": weights, "value_bytes": values, "scale_bytes": weights - values, "bias_bytes": biases,
            "float_bytes": left,
            "activation_param_bytes": activation_params, "total": weights + biases + left,
            "precisions": dict(sorted(precisions.items()))}


ARTIFACT_KINDS = ("quantized", "bias", "multiplier", "shift", "ratio")  # constant name suffixes integer lowering uses


def artifact_bytes(program) -> dict:
    """Bytes of the integer Program's constants by kind (module docstring), low-bit values packed."""
    kinds: Counter = Counter()
    for name, array in program.constants.items():
        spec = program.tensors[name]
        suffix = name.rsplit("_", 1)[-1]
        # A float graph output's layer keeps its int32 bias as float32 integers ("<call>_bias_integers")
        # and one float32 scale per channel ("<call>_output_scale") instead of a multiplier and a shift.
        suffix = {"integers": "bias"}.get(suffix, suffix) if not name.endswith("_output_scale") else "multiplier"
        kind = suffix if suffix in ARTIFACT_KINDS else "other"
        bits = spec.quant.bits if kind == "quantized" and spec.quant is not None else 8 * array.itemsize
        kinds[kind] += math.ceil(array.size * bits / 8)
    return {**{k: kinds[k] for k in (*ARTIFACT_KINDS, "other")}, "total": sum(kinds.values())}


def floor_bytes(graph: Graph, bar: float) -> dict:
    """Per weighted layer of the QDQ graph: packed values + an int32 bias per channel vs its FP32 bytes."""
    total_floor = total_fp32 = impossible = layers = 0
    for node in graph.main:
        if node.op_type != "DequantizeLinear" or node.metadata_props.get(PRECISION_KEY) in (None, "int32"):
            continue
        precision = node.metadata_props[PRECISION_KEY]
        source = node.inputs[0]
        group = source.producer()
        q = Graph.constant(group.inputs[0] if group is not None and group.op_type == "Reshape" else source)
        channels = q.shape[0] if q.ndim else 1
        floor = math.ceil(q.size * VALUE_BITS[precision.split(":")[0]] / 8) + 4 * channels
        fp32 = 4 * (q.size + channels)
        layers += 1
        impossible += floor > bar * fp32
        total_floor += floor
        total_fp32 += fp32
    return {"layers": layers, "impossible_layers": impossible, "floor_bytes": total_floor,
            "weighted_fp32_bytes": total_fp32}


def measure(name: str, configs=CONFIGS) -> dict:
    path, shapes = model_path(name), input_shapes(name)
    fp32 = float_bytes(compile_model(path, scoring_target(), check_ops=False, input_shapes=shapes, progress=False).graph)
    calib = [sample_input(name, seed=1000 + k) for k in range(2)]
    row: dict = {"model": name, "fp32_bytes": fp32, "configs": {}}
    for label, precision, guard in configs:
        options = QuantOptions(quant=precision, calib=calib, keep_first_last_int8=guard, bias_correction=False)
        result = compile_model(path, scoring_target(), check_ops=False, input_shapes=shapes, quantization=options, progress=False)
        counts = quantized_bytes(result.graph)
        bar = BARS[precision.split(":")[0]]
        stored = artifact_bytes(result.program)
        floor = floor_bytes(result.graph, bar)
        row["configs"][label] = {**counts, "ratio": counts["total"] / fp32, "bar": bar,
                                 "meets_bar": counts["total"] / fp32 <= bar,
                                 "artifact": stored, "artifact_ratio": stored["total"] / fp32,
                                 "artifact_meets_bar": stored["total"] / fp32 <= bar,
                                 "floor": floor, "floor_ratio": floor["floor_bytes"] / fp32,
                                 "bar_possible": floor["floor_bytes"] / fp32 <= bar}
    return row


def render(rows: list[dict]) -> Table:
    table = Table(title="weight bytes vs FP32 (quantized weights + int32 biases + float left over); "
                        "bars: int8 <= 0.26x, int4 <= 0.14x, ternary <= 0.08x; * = misses its bar")
    table.add_column("model")
    table.add_column("FP32 KiB", justify="right")
    for label, _, _ in CONFIGS:
        table.add_column(label, justify="right")
    for r in rows:
        cells = [r["model"], f"{r['fp32_bytes'] / 1024:.1f}"]
        for label, _, _ in CONFIGS:
            c = r["configs"][label]
            cells.append(f"{c['total'] / 1024:.1f} ({c['ratio']:.3f}x){'' if c['meets_bar'] else ' *'}")
        table.add_row(*cells)
    return table


def render_artifact(rows: list[dict]) -> Table:
    table = Table(title="what the artifact stores (program constants, low-bit packed) x FP32, and the floor "
                        "(packed values + int32 bias only); ! = the bar is below the floor: impossible for "
                        "any per-channel scheme; n/m = layers whose own floor is above the bar")
    table.add_column("model")
    for label, _, _ in CONFIGS:
        table.add_column(f"{label}: artifact / floor", justify="right")
    for r in rows:
        cells = [r["model"]]
        for label, _, _ in CONFIGS:
            c = r["configs"][label]
            f = c["floor"]
            mark = "" if c["bar_possible"] else " !"
            cells.append(f"{c['artifact_ratio']:.3f}x / {c['floor_ratio']:.3f}x{mark} "
                         f"({f['impossible_layers']}/{f['layers']})")
        table.add_row(*cells)
    return table


def render_breakdown(rows: list[dict]) -> Table:
    table = Table(title="where the bytes go, x FP32: packed values + weight scales + int32 biases (with a "
                        "4-byte scale each) + float left over")
    table.add_column("model")
    for label in BREAKDOWN:
        table.add_column(f"{label}: values + scales + biases + float", justify="right")
    for r in rows:
        cells = [r["model"]]
        for label in BREAKDOWN:
            c = r["configs"][label]
            parts = [c[k] / r["fp32_bytes"] for k in ("value_bytes", "scale_bytes", "bias_bytes", "float_bytes")]
            cells.append(" + ".join(f"{p:.3f}" for p in parts))
        table.add_row(*cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(all_models()))
    args = parser.parse_args()
    rows = [measure(name) for name in track(args.models.split(","), description="counting")]
    console = Console(width=200)
    console.print(render(rows))
    console.print(render_breakdown(rows))
    console.print(render_artifact(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"bars": BARS, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
