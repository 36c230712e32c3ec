"""Markdown tables for the README, rendered from the JSON the benchmarks wrote.

    python -m benchmarks.readme_tables            # prints every table whose results exist

Keeping the rendering here means every number in the README comes from a results file
that a benchmark command wrote, never from a hand edit.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def arena_planning(rows: list[dict]) -> str:
    lines = ["| model | nodes in file -> after passes | arena KiB | naive KiB | arena / naive | arena / lower bound |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['nodes_in_file']} -> {r['nodes_after_passes']} | "
                     f"{r['arena_bytes'] / 1024:.1f} | {r['naive_bytes'] / 1024:.1f} | "
                     f"{r['arena_bytes'] / r['naive_bytes']:.3f}x | {r['arena_bytes'] / r['peak_live_bytes']:.3f}x |")
    return "\n".join(lines)


def graph_optimization(data: dict) -> str:
    lines = ["| model | nodes: exported / edgekiln / onnxsim | ORT (optimizations on) ms: exported | edgekiln | onnxsim "
             "| ORT (optimizations off) ms: exported | edgekiln | onnxsim |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        cells = [r["model"], f"{r['exported_nodes']} / {r['edgekiln_nodes']} / {r['onnxsim_nodes']}"]
        for level in ("ort_opt", "ort_noopt"):
            base = r[f"exported_{level}_ms"]
            cells.append(f"{base:.3f}")
            cells += [f"{r[f'{k}_{level}_ms']:.3f} ({r[f'{k}_{level}_ms'] / base:.2f}x)" for k in ("edgekiln", "onnxsim")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reparameterization(data: dict) -> str:
    lines = ["| stage (input) | graph | nodes | convs | ORT on, ms | ORT off, ms | max rel err |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        for key in ("exported", "edgekiln", "onnxsim"):
            on, off = r[f"{key}_ort_opt_ms"], r[f"{key}_ort_noopt_ms"]
            lines.append(f"| {r['model']} ({'x'.join(map(str, r['input']))}) | {key} | {r[f'{key}_nodes']} | "
                         f"{r[f'{key}_convs']} | {on:.3f} ({on / r['exported_ort_opt_ms']:.2f}x) | "
                         f"{off:.3f} ({off / r['exported_ort_noopt_ms']:.2f}x) | {r[f'{key}_max_rel_err']:.1e} |")
    return "\n".join(lines)


RENDERERS = {"arena_planning": arena_planning, "graph_optimization": graph_optimization,
             "reparameterization": reparameterization}


def main() -> None:
    for name, render in RENDERERS.items():
        path = RESULTS / f"{name}.json"
        if path.exists():
            print(f"<!-- {name} -->\n{render(json.loads(path.read_text()))}\n")


if __name__ == "__main__":
    main()
