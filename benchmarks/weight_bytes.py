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

    artifact bytes   every constant the arm_cpu model blob (blob format 3, runtime_arm/
                     BLOB_FORMAT.md) holds, read back from the blob's own tensor table, by the
                     operand slot that reads it, for both weight layouts (`--weight-layout`):
                     "fast" (the default: on ARM int4 / ternary GEMM weights K-blocked as the GEMM
                     reads them in registers, except split-group layers; the rows' fill to whole
                     16-byte blocks is its own kind, "padding") and "compact" (int4 flat, ternary
                     five values per byte); the Program and blob of a cortex-a53 compile (Relu
                     folded into its producer, inverted-residual blocks fused; no i8mm, so int8
                     rows are not pre-paired).  Kinds: packed weights, per
                     output channel the bias (the input zero point folded in: int32, int64 for
                     group-scaled layers), the int32 requantization multiplier (a float graph
                     output's float32 scale in its place) and the int8 shift, uint16 per-group
                     ratios (int4 / ternary groups), and everything else (activation lookup
                     tables, softmax and LayerNorm constants, float layers).
    program bytes    the same for the target-independent integer Program (program/constants.bin:
                     int32 shifts and ratios, no fold, ternary at 2 bits), for comparison.
    floor            per weighted layer, the least any per-channel scheme can store: the packed
                     values (int8 / int4 at 8 / 4 bits, ternary at 1.6 bits: five values per byte,
                     the densest whole-byte packing of 3^5 = 243 <= 256 codes) plus, per output
                     channel, one int32 bias and one 32-bit scale (every per-channel scheme stores
                     a scale), or for a group-scaled layer one int32 bias per channel and one 16-bit
                     scale per group (the packing rule's float16 group scales).  Where the floor of
                     a layer is above the bar the bar is arithmetically impossible for it (an int8
                     depthwise 3x3: (9 + 4 + 4) / (36 + 4) = 0.425 > 0.26); the table counts those
                     layers and the whole model's floor.  Verdict per model and precision, for the
                     smaller (compact) artifact: "met" (artifact <= bar), "impossible" (floor > bar),
                     else "missed".
    peers            what onnxruntime's `quantize_static` (QDQ, per channel, int8 and int4 weights)
                     and a TFLite flatbuffer (int8) store for the same weights
                     (benchmarks/weight_bytes_peers.py).

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
import struct
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from benchmarks.quantization_data import scoring_target
from benchmarks.weight_bytes_peers import edgekiln_tflite_weight_bytes, ort_weight_bytes
from edgekiln.backends.arm_cpu import op_codes, ternary_base3
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.qdq_format import PRECISION_KEY
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.target import get_target
from edgekiln.passes.graph_edits import FLOAT_TYPES
from edgekiln.quantization.weights import packed_value_bytes, packed_weight_bytes
from tests.zoo import all_models, input_shapes, model_path, sample_input

RESULTS = Path(__file__).parent / "results" / "weight_bytes.json"
BARS = {"int8": 0.26, "int4": 0.14, "ternary": 0.08}
# (label, --quant, keep_first_last_int8)
CONFIGS = (("int8", "int8", None), ("int4:g64", "int4:g64", None), ("int4:g64 no guard", "int4:g64", False),
           ("int4 no guard", "int4", False), ("ternary", "ternary", None), ("ternary no guard", "ternary", False))
LAYOUTS = ("fast", "compact")  # the blob's weight layouts (--weight-layout)
# the arm_cpu Program (Relu folded, inverted-residual blocks fused) of an ARM core whose fast layout
# keeps K-blocked weights (NEON, no i8mm: int8 rows not pre-paired)
BLOB_TARGET = "cortex-a53"
BREAKDOWN = ("int8", "int4:g64 no guard", "ternary no guard")
PEER_CONFIGS = ("int8", "int4 no guard", "int4:g64 no guard")  # every layer at the precision, as the peers do


def _is_float(value) -> bool:
    return value.const_value is not None and value.const_value.dtype in FLOAT_TYPES


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
            values += packed_value_bytes(q.size, precision)
            precisions[precision] += 1
    left = sum(v.const_value.nbytes for name, v in graph.main.initializers.items()
               if name not in counted and _is_float(v))
    return {"weight_bytes": weights, "value_bytes": values, "scale_bytes": weights - values, "bias_bytes": biases,
            "float_bytes": left,
            "activation_param_bytes": activation_params, "total": weights + biases + left,
            "precisions": dict(sorted(precisions.items()))}


ARTIFACT_KINDS = ("quantized", "bias", "multiplier", "shift", "ratio")  # constant name suffixes integer lowering uses
BLOB_KINDS = (*ARTIFACT_KINDS, "padding")  # padding: K-blocked / paired weight layouts' fill
_PACKED_BITS = {op_codes.PACK[k]: bits for k, bits in (("INT4", 4), ("INT4_K32", 4), ("INT2", 2), ("INT2_K64", 2))}


def dense_bytes(packing: int, count: int) -> int:
    """Bytes of `count` values in `packing` without any row padding."""
    if packing == op_codes.PACK["INT2_B3"]:
        return ternary_base3.packed_bytes(count)
    return math.ceil(count * _PACKED_BITS.get(packing, 8) / 8)

_WEIGHT_SLOTS = {1: "quantized", 2: "bias", 3: "multiplier", 4: "shift", 5: "ratio"}
# blob op -> {operand index: kind} (BLOB_FORMAT.md); every other constant operand is "other"
BLOB_SLOTS = {**dict.fromkeys(("QCONV2D", "QDEPTHWISE_CONV2D", "QFULLY_CONNECTED", "QCONV_TRANSPOSE2D"), _WEIGHT_SLOTS),
              # x, then per stage (expand, depthwise, project) weight, bias, multiplier, shift
              "QINVERTED_RESIDUAL": {1 + 4 * stage + slot: kind for stage in range(3)
                                     for slot, kind in enumerate(("quantized", "bias", "multiplier", "shift"))}}


def blob_bytes(blob: bytes) -> dict:
    """Bytes of the blob's constants by kind, read from its tensor, call and call_io tables."""
    n_tensors, n_calls = struct.unpack_from("<2I", blob, 32)
    sections = [struct.unpack_from("<2Q", blob, 64 + 16 * i) for i in range(op_codes.BLOB["SECTIONS"])]
    tensors, calls, call_io = (sections[op_codes.SECTION[s]][0] for s in ("TENSORS", "CALLS", "CALL_IO"))
    const, dense = {}, {}
    for i in range(n_tensors):
        entry = tensors + i * op_codes.BLOB["TENSOR_BYTES"]
        if blob[entry + 2] == op_codes.STORE["CONST"]:
            const[i] = struct.unpack_from("<Q", blob, entry + 64)[0]
            count = math.prod(struct.unpack_from(f"<{blob[entry + 1]}q", blob, entry + 8))
            dense[i] = dense_bytes(blob[entry + 3], count)  # the values, unpadded
    kinds: Counter = Counter()
    for c in range(n_calls):
        op, n_in, _, first = struct.unpack_from("<HBBI", blob, calls + c * op_codes.BLOB["CALL_BYTES"])
        slots = BLOB_SLOTS.get(op_codes.OP_NAMES[op], {})
        for k in range(n_in):
            tensor = struct.unpack_from("<i", blob, call_io + 4 * (first + k))[0]
            if tensor in const:  # a shared constant counts once
                kind, nbytes = slots.get(k, "other"), const.pop(tensor)
                if kind == "quantized":
                    kinds["padding"] += nbytes - dense[tensor]
                    nbytes = dense[tensor]
                kinds[kind] += nbytes
    return {**{k: kinds[k] for k in (*BLOB_KINDS, "other")}, "total": sum(kinds.values())}


def program_bytes(program) -> dict:
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
    """Per weighted layer of the QDQ graph: packed values + an int32 bias per channel + its scales
    (one 32-bit scale per channel, or one 16-bit scale per group) vs its FP32 bytes."""
    total_floor = total_fp32 = impossible = layers = 0
    for node in graph.main:
        if node.op_type != "DequantizeLinear" or node.metadata_props.get(PRECISION_KEY) in (None, "int32"):
            continue
        precision = node.metadata_props[PRECISION_KEY]
        source = node.inputs[0]
        group = source.producer()
        q = Graph.constant(group.inputs[0] if group is not None and group.op_type == "Reshape" else source)
        channels = q.shape[0] if q.ndim else 1
        scales = 2 * Graph.constant(node.inputs[1]).size if group is not None and group.op_type == "Reshape" \
            else 4 * channels
        floor = packed_value_bytes(q.size, precision) + 4 * channels + scales
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
    row: dict = {"model": name, "fp32_bytes": fp32, "configs": {},
                 "peers": {"onnxruntime": ort_weight_bytes(name, calib, ("QInt8", "QInt4")),
                           "tflite_int8": edgekiln_tflite_weight_bytes(path, shapes, calib)}}
    for label, precision, guard in configs:
        options = QuantOptions(quant=precision, calib=calib, keep_first_last_int8=guard, bias_correction=False)
        result = compile_model(path, BLOB_TARGET, check_ops=False, input_shapes=shapes, quantization=options,
                               progress=False)
        counts = quantized_bytes(result.graph)
        bar = BARS[precision.split(":")[0]]
        # the artifact's own blob is the fast layout; the compact one is written from the same Program
        compact = write_blob(result.program, features=tuple(get_target(BLOB_TARGET).features), weight_layout="compact")
        stored = {"fast": blob_bytes(result.artifact.files["model.blob"]), "compact": blob_bytes(compact)}
        in_program = program_bytes(result.program)
        floor = floor_bytes(result.graph, bar)
        smallest = min(t["total"] for t in stored.values())
        met, possible = smallest / fp32 <= bar, floor["floor_bytes"] / fp32 <= bar
        row["configs"][label] = {**counts, "ratio": counts["total"] / fp32, "bar": bar,
                                 "meets_bar": counts["total"] / fp32 <= bar,
                                 "artifact": stored,
                                 "artifact_ratio": {k: t["total"] / fp32 for k, t in stored.items()},
                                 "artifact_meets_bar": met,
                                 "program": in_program, "program_ratio": in_program["total"] / fp32,
                                 "floor": floor, "floor_ratio": floor["floor_bytes"] / fp32,
                                 "bar_possible": possible,
                                 "verdict": "met" if met else "impossible" if not possible else "missed"}
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
    table = Table(title="what the arm_cpu blob stores x FP32: fast layout / compact layout (program constants in "
                        "brackets), and the floor (packed values + int32 bias + 32-bit scale per channel); ! = the "
                        "bar is below the floor: impossible for any per-channel scheme; n/m = layers whose own floor "
                        "is above the bar")
    table.add_column("model")
    for label, _, _ in CONFIGS:
        table.add_column(f"{label}: fast / compact / floor", justify="right")
    for r in rows:
        cells = [r["model"]]
        for label, _, _ in CONFIGS:
            c = r["configs"][label]
            f = c["floor"]
            mark = "" if c["bar_possible"] else " !"
            ratios = " / ".join(f"{c['artifact_ratio'][layout]:.3f}x" for layout in LAYOUTS)
            cells.append(f"{ratios} ({c['program_ratio']:.3f}x) / {c['floor_ratio']:.3f}x{mark} "
                         f"({f['impossible_layers']}/{f['layers']}) {c['verdict']}")
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


def render_peers(rows: list[dict]) -> Table:
    table = Table(title="weight bytes x FP32 next to the peers (each against its own float input): edgekiln's "
                        "smallest blob, onnxruntime quantize_static QDQ (per channel), a TFLite int8 flatbuffer")
    for column in ("model", "edgekiln int8", "ORT int8", "TFLite int8", "edgekiln int4 (per channel)", "ORT int4",
                   "edgekiln int4:g64"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        ort, tflite = r["peers"]["onnxruntime"], r["peers"]["tflite_int8"]
        ours = [min(r["configs"][label]["artifact_ratio"].values()) for label in PEER_CONFIGS]
        table.add_row(r["model"], f"{ours[0]:.3f}x", f"{ort['QInt8'] / ort['fp32']:.3f}x",
                      "-" if tflite is None else f"{tflite / r['fp32_bytes']:.3f}x",
                      f"{ours[1]:.3f}x", f"{ort['QInt4'] / ort['fp32']:.3f}x", f"{ours[2]:.3f}x")
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
    console.print(render_peers(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"bars": BARS, "peer_configs": PEER_CONFIGS, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
