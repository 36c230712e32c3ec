"""Memory plan and compile time of every zoo and PP-OCR model.

    python -m benchmarks.arena_planning            # prints a table, writes benchmarks/results/arena_planning.json

For each model: nodes in the file and after edgekiln's passes, the arena the planner
assigns, the naive sum of all intermediates, the lower bound (peak bytes live at once),
and the wall time of `compile_model` (median of 3; it is a compile time, not a latency).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import onnx
from rich.console import Console
from rich.table import Table

from edgekiln.compiler.compile import compile_model
from tests.zoo import all_models, input_shapes, model_path

RESULTS = Path(__file__).parent / "results" / "arena_planning.json"


def measure(name: str) -> dict:
    path = model_path(name)
    nodes_in_file = len(onnx.load(path, load_external_data=False).graph.node)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        result = compile_model(path, "host", input_shapes=input_shapes(name))
        times.append(time.perf_counter() - start)
    program = result.program
    arena = result.artifact.manifest["memory"]
    return {
        "model": name,
        "nodes_in_file": nodes_in_file,
        "nodes_after_passes": len(result.graph.main),
        "arena_bytes": arena["arena_bytes"],
        "naive_bytes": arena["naive_intermediate_bytes"],
        "peak_live_bytes": program.arena.peak_live_bytes,
        "constant_bytes": arena["constant_bytes"],
        "compile_seconds": statistics.median(times),
    }


def main() -> None:
    rows = [measure(name) for name in all_models()]
    table = Table(title="arena planning (host target, fp32)")
    for column in ("model", "nodes file -> passes", "arena KiB", "naive KiB", "arena/naive", "arena/lower bound",
                   "compile s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['nodes_in_file']} -> {r['nodes_after_passes']}",
                      f"{r['arena_bytes'] / 1024:.1f}", f"{r['naive_bytes'] / 1024:.1f}",
                      f"{r['arena_bytes'] / r['naive_bytes']:.3f}x",
                      f"{r['arena_bytes'] / r['peak_live_bytes']:.3f}x", f"{r['compile_seconds']:.2f}")
    Console(width=140).print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
