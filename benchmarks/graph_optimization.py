"""Graph optimization: edgekiln's passes vs onnx-simplifier, node counts and onnxruntime latency.

    python -m benchmarks.graph_optimization [--runs 50] [--models repvgg,mobileone]

For every zoo and PP-OCR model (static input shapes) three graphs are compared in the same
run: the model as exported, edgekiln's optimized graph (`edgekiln compile --emit onnx`) and
onnxsim's output.  Latency is onnxruntime on 1 thread, median of `--runs` runs after 5
warm-ups, with the three sessions interleaved run by run so machine noise hits all alike;
once with onnxruntime's own graph optimizations on (what users get) and once with them off
(the graph as written, which shows what the structure alone is worth).  Ratios are against
the exported model.  Writes benchmarks/results/graph_optimization.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console
from rich.progress import track
from rich.table import Table

from edgekiln.compiler.compile import compile_model
from tests.zoo import all_models, input_shapes, model_path, sample_input

RESULTS = Path(__file__).parent / "results" / "graph_optimization.json"
LEVELS = {"ort_opt": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "ort_noopt": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def simplify_with_onnxsim(path: Path, shapes: dict) -> onnx.ModelProto:
    import onnxsim

    model, ok = onnxsim.simplify(onnx.load(path), overwrite_input_shapes={k: list(v) for k, v in shapes.items()})
    if not ok:
        raise RuntimeError(f"onnxsim could not validate its output for {path.name}")
    return model


def session(model: bytes, level) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def interleaved_medians(sessions: dict[str, ort.InferenceSession], feeds: dict, runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(5):
        for s in sessions.values():
            s.run(None, feeds)
    for _ in range(runs):
        for key, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds)
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def node_count(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type != "Constant")


def measure(name: str, runs: int) -> dict:
    path, shapes, feeds = model_path(name), input_shapes(name), sample_input(name)
    exported = onnx.load(path)
    ours = compile_model(path, "host", input_shapes=shapes).graph.to_proto()
    theirs = simplify_with_onnxsim(path, shapes)
    graphs = {"exported": exported, "edgekiln": ours, "onnxsim": theirs}
    reference = session(exported.SerializeToString(), LEVELS["ort_noopt"]).run(None, feeds)
    row: dict = {"model": name}
    for key, model in graphs.items():
        out = session(model.SerializeToString(), LEVELS["ort_noopt"]).run(None, feeds)
        scale = max(float(np.max(np.abs(r))) for r in reference) or 1.0
        row[f"{key}_max_rel_err"] = max(float(np.max(np.abs(a - b))) for a, b in zip(reference, out)) / scale
        row[f"{key}_nodes"] = node_count(model)
    for level_name, level in LEVELS.items():
        sessions = {k: session(m.SerializeToString(), level) for k, m in graphs.items()}
        for key, ms in interleaved_medians(sessions, feeds, runs).items():
            row[f"{key}_{level_name}_ms"] = ms
    return row


def render(rows: list[dict]) -> Table:
    table = Table(title="graph optimization: nodes and onnxruntime latency (1 thread, median), ratio vs exported")
    for column in ("model", "nodes exp / ek / sim", "ORT opt ms exp", "ek", "sim", "ORT no-opt ms exp", "ek", "sim"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        cells = [r["model"], f"{r['exported_nodes']} / {r['edgekiln_nodes']} / {r['onnxsim_nodes']}"]
        for level in LEVELS:
            base = r[f"exported_{level}_ms"]
            cells.append(f"{base:.3f}")
            cells += [f"{r[f'{k}_{level}_ms']:.3f} ({r[f'{k}_{level}_ms'] / base:.2f}x)" for k in ("edgekiln", "onnxsim")]
        table.add_row(*cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--models", default=",".join(all_models()))
    args = parser.parse_args()
    rows = [measure(name, args.runs) for name in track(args.models.split(","), description="benchmarking")]
    Console(width=160).print(render(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": args.runs, "threads": 1, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
