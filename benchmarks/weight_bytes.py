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

Activation quantization parameters (one float32 scale + one int8 zero point per quantized
tensor) are not weights: reported in the JSON, left out of the ratio.  Calibration data does
not change a byte count, so two sample inputs calibrate.

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


def measure(name: str, configs=CONFIGS) -> dict:
    path, shapes = model_path(name), input_shapes(name)
    fp32 = float_bytes(compile_model(path, "host", input_shapes=shapes, progress=False).graph)
    calib = [sample_input(name, seed=1000 + k) for k in range(2)]
    row: dict = {"model": name, "fp32_bytes": fp32, "configs": {}}
    for label, precision, guard in configs:
        options = QuantOptions(quant=precision, calib=calib, keep_first_last_int8=guard)
        result = compile_model(path, "host", input_shapes=shapes, quantization=options, progress=False)
        counts = quantized_bytes(result.graph)
        bar = BARS[precision.split(":")[0]]
        row["configs"][label] = {**counts, "ratio": counts["total"] / fp32, "bar": bar,
                                 "meets_bar": counts["total"] / fp32 <= bar}
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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"bars": BARS, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
