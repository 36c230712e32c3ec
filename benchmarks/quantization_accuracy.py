"""Held-out accuracy of the trained zoo models after post-training quantization, per precision.

    python -m benchmarks.quantization_accuracy [--models lenet_mnist,digits_cnn] [--calib 128] [--eval N]

For `lenet_mnist` (MNIST, 1000 held out) and `digits_cnn` (sklearn digits, 360 held out):
FP32, W8A8, W4A8 (int4 groups of 32 and 64), ternary (per channel and groups of 32), all
post-training: `--calib` images of the TRAINING split calibrate (`QuantOptions` defaults: mse
ranges, bias correction, float graph outputs), the whole held-out split evaluates (`--eval` takes its first N instead).  Each quantized model is
scored twice on the same images: the integer reference interpreter (`artifact.run`, what an
artifact computes) and the QDQ float reference (`result.graph` in onnxruntime, optimizations
off).

Mixed precision, for every low-bit precision P:

    all P              --quant P with keep_first_last_int8=False (every weighted layer P)
    P, first/last int8 the default guard
    + k layer(s) float the guard plus the k layers an automatic search keeps in float:
                       greedily, the layer whose float version raises the integer model's
                       output SQNR vs FP32 on the CALIBRATION images the most (no labels,
                       no held-out data: what an `--auto-keep-float` could do)

Writes benchmarks/results/quantization_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benchmarks.quantization_data import (
    artifact_runner,
    calibration_feeds,
    evaluation_feeds,
    heldout_labels,
    ort_runner,
    outputs,
    scoring_target,
    sqnr_db,
    top1,
)
from edgekiln.compiler.compile import CompileResult, compile_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.quant_options import QuantOptions
from tests.zoo import TRAINED_MODELS, input_shapes, model_path, zoo_accuracy

RESULTS = Path(__file__).parent / "results" / "quantization_accuracy.json"
LOW_BIT = ("int4:g32", "int4:g64", "ternary", "ternary:g32")
MAX_KEEP_FLOAT = 2


def quantize(name: str, precision: str, calib: list, keep_float: tuple[str, ...] = (),
             guard: bool | None = None) -> CompileResult:
    options = QuantOptions(quant=precision, calib=calib, keep_float=keep_float, keep_first_last_int8=guard)
    return compile_model(model_path(name), scoring_target(), check_ops=False, input_shapes=input_shapes(name), quantization=options,
                         progress=False)


def weighted_layers(result: CompileResult) -> dict[str, str]:
    """{layer name: precision} of every weighted layer of the QDQ graph (fp32 for layers kept float).

    Read from the graph, not the artifact's calls: a layer writing a float model output is four
    calls there (its int8 weights are unpacked for an exact float accumulation), one layer here."""
    from edgekiln.compiler.qdq_format import match_weight
    from edgekiln.quantization.quant_config import base_op

    layers = {}
    for node in result.graph.main:
        if base_op(node) is None or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        weight = match_weight(node.inputs[1])
        if weight is not None:
            layers[node.name] = weight.precision
        elif Graph.constant(node.inputs[1]) is not None:
            layers[node.name] = "fp32"
    return layers


def summary(layers: dict[str, str]) -> str:
    counts = Counter(p.split(":")[0] if p.startswith(("int4", "ternary")) else p
                     for p in layers.values())
    return " ".join(f"{p}x{n}" for p, n in sorted(counts.items()))


class Evaluation:
    """Held-out inputs, labels and the float outputs; calibration inputs and their float outputs."""

    def __init__(self, name: str, calib_count: int, eval_count: int | None) -> None:
        self.name = name
        self.calib = calibration_feeds(name, calib_count)
        self.feeds = evaluation_feeds(name, eval_count)
        self.labels = heldout_labels(name, eval_count)
        float_run = ort_runner(model_path(name).read_bytes())
        self.output_names = ["logits"]
        self.calib_float = outputs(float_run, self.calib)
        self.float_accuracy = self.accuracy(outputs(float_run, self.feeds))

    def accuracy(self, logits: list) -> float:
        return float(np.mean(top1(logits) == self.labels))

    def score(self, result: CompileResult) -> tuple[float, float]:
        """(accuracy of the integer reference, accuracy of the QDQ float reference)."""
        integer = outputs(artifact_runner(result.artifact, self.output_names), self.feeds)
        qdq = outputs(ort_runner(result.graph.to_bytes()), self.feeds)
        return self.accuracy(integer), self.accuracy(qdq)

    def calibration_sqnr(self, result: CompileResult) -> float:
        return sqnr_db(self.calib_float, outputs(artifact_runner(result.artifact, self.output_names), self.calib))


def auto_keep_float(ev: Evaluation, precision: str, count: int) -> list[tuple[list[str], float]]:
    """Greedy float-layer choice: [(layers kept float, calibration SQNR)] for 1..count layers."""
    kept: list[str] = []
    chosen = []
    for _ in range(count):
        candidates = [layer for layer, p in weighted_layers(quantize(ev.name, precision, ev.calib, tuple(kept))).items()
                      if p not in ("int8", "fp32")]
        if not candidates:
            break
        scored = [(ev.calibration_sqnr(quantize(ev.name, precision, ev.calib, (*kept, c))), c) for c in candidates]
        best_sqnr, best = max(scored)
        kept.append(best)
        chosen.append((list(kept), best_sqnr))
    return chosen


def configurations(precisions: tuple[str, ...]) -> list[tuple[str, str, bool | None]]:
    """(config label, precision, guard) for the plain PTQ rows."""
    rows = [("W8A8 int8", "int8", None)]
    for p in precisions:
        rows.append((f"all {p}", p, False))
        rows.append((f"{p}, first/last int8", p, None))
    return rows


def measure(name: str, calib_count: int, eval_count: int | None, precisions: tuple[str, ...] = LOW_BIT,
            keep_float: int = MAX_KEEP_FLOAT, progress: Progress | None = None) -> list[dict]:
    ev = Evaluation(name, calib_count, eval_count)
    base = {"model": name, "calib_images": len(ev.calib), "eval_images": len(ev.feeds)}
    rows = [{**base, "config": "FP32", "precision": "fp32", "layers": "fp32", "keep_float": [],
             "accuracy_integer": ev.float_accuracy, "accuracy_qdq": ev.float_accuracy,
             "recorded_accuracy": zoo_accuracy(name)}]
    plan = configurations(precisions)
    task = progress.add_task(name, total=len(plan) + len(precisions)) if progress else None
    for label, precision, guard in plan:
        result = quantize(name, precision, ev.calib, guard=guard)
        acc_int, acc_qdq = ev.score(result)
        rows.append({**base, "config": label, "precision": precision, "guard": guard is not False,
                     "layers": summary(weighted_layers(result)), "layer_precisions": weighted_layers(result),
                     "keep_float": [], "accuracy_integer": acc_int, "accuracy_qdq": acc_qdq})
        if progress:
            progress.advance(task)
    for precision in precisions:
        for kept, calib_sqnr in auto_keep_float(ev, precision, keep_float):
            result = quantize(name, precision, ev.calib, tuple(kept))
            acc_int, acc_qdq = ev.score(result)
            rows.append({**base, "config": f"{precision}, first/last int8 + {len(kept)} float", "precision": precision,
                         "guard": True, "layers": summary(weighted_layers(result)),
                         "layer_precisions": weighted_layers(result), "keep_float": kept,
                         "calibration_sqnr_db": calib_sqnr, "accuracy_integer": acc_int, "accuracy_qdq": acc_qdq})
        if progress:
            progress.advance(task)
    return rows


def render(rows: list[dict]) -> Table:
    table = Table(title="PTQ held-out top-1 accuracy: integer reference (artifact.run) and QDQ float reference (ORT)")
    for column in ("model", "config", "weighted layers", "kept float", "integer", "QDQ", "vs FP32 (int)"):
        table.add_column(column, justify="right" if column in ("integer", "QDQ", "vs FP32 (int)") else "left")
    fp32 = {r["model"]: r["accuracy_integer"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        delta = 100 * (r["accuracy_integer"] - fp32[r["model"]])
        table.add_row(r["model"], r["config"], r["layers"], ", ".join(r["keep_float"]) or "-",
                      f"{100 * r['accuracy_integer']:.1f}%", f"{100 * r['accuracy_qdq']:.1f}%",
                      "-" if r["precision"] == "fp32" else f"{delta:+.1f} pp")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(TRAINED_MODELS))
    parser.add_argument("--calib", type=int, default=128, help="training images that calibrate")
    parser.add_argument("--eval", type=int, default=None, help="first N held-out images (default: all)")
    parser.add_argument("--keep-float", type=int, default=MAX_KEEP_FLOAT, help="most layers the search keeps float")
    args = parser.parse_args()
    rows: list[dict] = []
    with Progress() as progress:
        for name in args.models.split(","):
            rows += measure(name, args.calib, args.eval, keep_float=args.keep_float, progress=progress)
    Console(width=180).print(render(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    setup = {"calibration": f"{args.calib} training-split images, QuantOptions defaults (mse ranges, bias correction, "
                          "float graph outputs)",
             "evaluation": "held-out split" + (f", first {args.eval}" if args.eval else ", all images"),
             "integer": "artifact.run (integer reference interpreter)",
             "qdq": "result.graph in onnxruntime, graph optimizations off"}
    RESULTS.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
