"""Structured channel pruning: held-out accuracy vs ratio, parameters and MACs, and int8 latency on the host.

    python -m benchmarks.pruning_accuracy [--ratios 0.1,0.2,...] [--calib 64] [--repeat 300] [--rounds 3]

1. Accuracy vs ratio for the trained `lenet_mnist` (MNIST, 1000 held out) and `digits_cnn`
   (sklearn digits, 360 held out): every ratio of `--ratios`, pruned by L1 without re-fit,
   L1 with the least-squares re-fit, and reconstruction-error importance ("data") with re-fit.
   `--calib` random TRAINING images rank and re-fit (never the held-out ones); the float pruned
   model runs in onnxruntime on the whole held-out split.
2. Parameters and MACs before/after, for every zoo and PP-OCR model at ratio 0.3 (MACs: Conv
   = output elements x C_in/group x kh x kw, Gemm/MatMul = output elements x K).
3. For `digits_cnn`: int8 artifacts (--quant int8, host target, our arm_cpu runner run
   locally) of the model pruned at each ratio with re-fit: held-out accuracy of the integer
   reference and the runner's median latency, interleaved over `--rounds` rounds (every
   ratio once per round, in turn) so machine load hits all alike; latency is reported as a
   ratio to the unpruned int8 artifact measured in the same rounds.  The accuracy-latency
   Pareto plot goes to benchmarks/results/pruning_pareto_digits_cnn.png.

Writes benchmarks/results/pruning_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.quantization_data import (
    calibration_feeds,
    evaluation_feeds,
    heldout_labels,
    ort_runner,
)
from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.input_shapes import parse_input_shapes
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.pruning.prune_stage import parameter_count, prune_channels

RESULTS = Path(__file__).parent / "results" / "pruning_accuracy.json"
PARETO_PNG = Path(__file__).parent / "results" / "pruning_pareto_digits_cnn.png"
TRAINED = ("lenet_mnist", "digits_cnn")
VARIANTS = {"l1": ("l1", False), "l1+refit": ("l1", True), "data+refit": ("data", True)}


def macs(graph: Graph) -> int:
    """Multiply-accumulates of the Conv, Gemm and MatMul nodes (static shapes)."""
    total = 0
    for node in graph.nodes:
        out = Graph.static_shape(node.outputs[0]) if node.outputs else None
        weight = Graph.constant(node.inputs[1]) if len(node.inputs) > 1 else None
        if out is None:
            continue
        if node.op_type == "Conv" and weight is not None:
            total += int(np.prod(out)) * int(np.prod(weight.shape[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = Graph.static_shape(node.inputs[0])
            trans_a = node.op_type == "Gemm" and node.attributes.get("transA") is not None \
                and node.attributes["transA"].value
            total += int(np.prod(out)) * (a[-2] if trans_a else a[-1]) if a else 0
    return total


def pruned_graph(name: str, ratio: float, method: str, refit: bool, calib: list) -> Graph:
    from tests.zoo import input_shapes, model_path

    graph = load_model(model_path(name), parse_input_shapes(input_shapes(name)))
    if ratio == 0:
        return graph
    return prune_channels(graph, PruneOptions.parse(f"channels:{ratio}:{method}", refit=refit, calib=calib),
                          ExplainTrace())


def accuracy(graph: Graph, feeds: list, labels: np.ndarray) -> float:
    run = ort_runner(graph.to_bytes())
    predicted = np.array([int(np.argmax(run(f)[0])) for f in feeds])
    return float(np.mean(predicted == labels))


def accuracy_table(ratios, calib_count: int, console: Console) -> dict:
    results = {}
    for name in TRAINED:
        calib = calibration_feeds(name, calib_count)
        feeds, labels = evaluation_feeds(name, None), heldout_labels(name, None)
        base = pruned_graph(name, 0, "l1", False, calib)
        rows = [{"ratio": 0.0, "params": parameter_count(base), "macs": macs(base),
                 **{v: accuracy(base, feeds, labels) for v in VARIANTS}}]
        for ratio in ratios:
            row = {"ratio": ratio}
            for variant, (method, refit) in VARIANTS.items():
                graph = pruned_graph(name, ratio, method, refit, calib)
                row[variant] = accuracy(graph, feeds, labels)
                row["params"], row["macs"] = parameter_count(graph), macs(graph)
            rows.append(row)
        results[name] = rows
        table = Table(title=f"{name}: held-out top-1 vs channel ratio ({len(labels)} images, {calib_count} calib)")
        for column in ("ratio", "params", "MACs", *VARIANTS):
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(f"{row['ratio']:.1f}", f"{row['params']:,}", f"{row['macs']:,}",
                          *(f"{100 * row[v]:.1f}%" for v in VARIANTS))
        console.print(table)
    return results


def size_table(console: Console, ratio: float = 0.3) -> list[dict]:
    from tests.zoo import all_models, input_shapes, model_path, sample_input

    rows = []
    for name in all_models():
        graph = load_model(model_path(name), parse_input_shapes(input_shapes(name)))
        before = (parameter_count(graph), macs(graph))
        started = time.perf_counter()
        calib = [sample_input(name, seed=1000 + k) for k in range(8)]
        graph = prune_channels(graph, PruneOptions.parse(f"channels:{ratio}", calib=calib), ExplainTrace())
        rows.append({"model": name, "params_before": before[0], "params_after": parameter_count(graph),
                     "macs_before": before[1], "macs_after": macs(graph),
                     "prune_seconds": time.perf_counter() - started})
    table = Table(title=f"parameters and MACs, pruned at channels:{ratio} (L1, re-fit on 8 samples)")
    for column in ("model", "params", "after", "MACs", "after", "prune s"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['params_before']:,}", f"{r['params_after']:,} ({r['params_after'] / r['params_before']:.2f}x)",
                      f"{r['macs_before']:,}", f"{r['macs_after']:,} ({r['macs_after'] / r['macs_before']:.2f}x)",
                      f"{r['prune_seconds']:.1f}")
    console.print(table)
    return rows


def latency_table(ratios, calib_count: int, repeat: int, rounds: int, console: Console) -> list[dict]:
    import edgekiln
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.backends.reference.runner import ReferenceRunner
    from tests.zoo import input_shapes, model_path

    name = "digits_cnn"
    calib = calibration_feeds(name, calib_count)
    feeds, labels = evaluation_feeds(name, None), heldout_labels(name, None)
    artifacts = {}
    for ratio in (0.0, *ratios):
        prune = {} if ratio == 0 else {"prune": f"channels:{ratio}", "prune_calib": calib}
        artifacts[ratio] = edgekiln.compile(model_path(name), "host", input_shapes=input_shapes(name), quant="int8",
                                            calib=calib, progress=False, **prune)
    rows = {r: {"ratio": r, "latency_ms": []} for r in artifacts}
    for _ in range(rounds):
        for ratio, artifact in artifacts.items():
            stats = ArmCpuRunner(artifact.files, artifact.manifest, transport="local").bench(
                feeds[0], repeat=repeat, warmup=10, profile=False)
            rows[ratio]["latency_ms"].append(float(stats["latency_ms"]["median"]))
    for ratio, artifact in artifacts.items():
        reference = ReferenceRunner(artifact.files, artifact.manifest)
        output = artifact.manifest["outputs"][0]["name"]
        predicted = np.array([int(np.argmax(reference.run(f)[output])) for f in feeds])
        row = rows[ratio]
        row["int8_accuracy"] = float(np.mean(predicted == labels))
        row["median_ms"] = float(np.median(row["latency_ms"]))
        row["constant_bytes"] = artifact.manifest["memory"]["constant_bytes"]
    base = rows[0.0]["median_ms"]
    table = Table(title=f"{name} int8 on the host (arm_cpu runner, local; median of {rounds} interleaved rounds x "
                        f"{repeat} runs; loaded machine: compare the ratios)")
    for column in ("ratio", "int8 top-1", "median latency", "vs unpruned", "constants"):
        table.add_column(column, justify="right")
    for row in rows.values():
        row["latency_vs_unpruned"] = row["median_ms"] / base
        table.add_row(f"{row['ratio']:.1f}", f"{100 * row['int8_accuracy']:.1f}%", f"{1000 * row['median_ms']:.1f} us",
                      f"{row['latency_vs_unpruned']:.2f}x", f"{row['constant_bytes']:,} B")
    console.print(table)
    return list(rows.values())


def pareto_plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted((r["median_ms"] * 1000, 100 * r["int8_accuracy"], r["ratio"]) for r in rows)
    front, best = [], -1.0
    for latency, acc, ratio in points:
        if acc > best:
            front.append((latency, acc))
            best = acc
    figure, axes = plt.subplots(figsize=(5, 3.4), dpi=100)
    axes.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
    for latency, acc, ratio in points:
        axes.annotate(f"{ratio:.1f}", (latency, acc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:orange", label="Pareto front")
    axes.set_xlabel("median latency, int8, host runner (us)")
    axes.set_ylabel("held-out top-1 (%)")
    axes.set_title("digits_cnn: channel pruning ratio (label) + re-fit, int8")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(PARETO_PNG)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7")
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    console = Console()
    results = {"ratios": ratios, "calib": args.calib,
               "accuracy": accuracy_table(ratios, args.calib, console),
               "sizes": size_table(console),
               "latency_digits_cnn": latency_table(ratios, args.calib, args.repeat, args.rounds, console)}
    pareto_plot(results["latency_digits_cnn"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULTS} and {PARETO_PNG}")


if __name__ == "__main__":
    main()
