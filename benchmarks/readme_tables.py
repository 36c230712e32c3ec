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


def quantization_accuracy(data: dict) -> str:
    lines = [("| model | configuration | weighted layers | kept float | integer reference | QDQ reference (ORT) "
              "| vs FP32 |"),
             "| --- | --- | --- | --- | --- | --- | --- |"]
    fp32 = {r["model"]: r["accuracy_integer"] for r in data["rows"] if r["precision"] == "fp32"}
    for r in data["rows"]:
        delta = "-" if r["precision"] == "fp32" else f"{100 * (r['accuracy_integer'] - fp32[r['model']]):+.1f} pp"
        kept = ", ".join(f"`{k}`" for k in r["keep_float"]) or "-"
        lines.append(f"| {r['model']} | {r['config']} | {r['layers']} | {kept} | {100 * r['accuracy_integer']:.1f}% | "
                     f"{100 * r['accuracy_qdq']:.1f}% | {delta} |")
    return "\n".join(lines)


def quantization_sqnr(data: dict) -> str:
    def db(row: dict, key: str) -> str:
        return f"{row[key]:.2f}" if key in row else "error"

    def delta(ek: dict, ort: dict) -> str:
        if "error" in ek or "error" in ort:
            return "-"
        return f"{ek['sqnr_integer'] - ort['sqnr_run']:+.2f} / {ek['sqnr_qdq'] - ort['sqnr_qdq']:+.2f}"

    lines = [("| model | edgekiln default: int / QDQ | ORT default: run / QDQ | delta | edgekiln legacy: int (delta) "
              "| edgekiln best | int / QDQ | ORT best | run / QDQ | delta |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        ek, ort, ek_best, ort_best = r["edgekiln_default"], r["ort_default"], r["edgekiln_best"], r["ort_best"]
        legacy = r.get("edgekiln_legacy", {})
        legacy_delta = (f" ({legacy['sqnr_integer'] - ort['sqnr_run']:+.2f})"
                        if "sqnr_integer" in legacy and "sqnr_run" in ort else "")
        cells = [r["model"], f"{db(ek, 'sqnr_integer')} / {db(ek, 'sqnr_qdq')}",
                 f"{db(ort, 'sqnr_run')} / {db(ort, 'sqnr_qdq')}", delta(ek, ort),
                 f"{db(legacy, 'sqnr_integer')}{legacy_delta}", ek_best["config"],
                 f"{db(ek_best, 'sqnr_integer')} / {db(ek_best, 'sqnr_qdq')}", ort_best["config"],
                 f"{db(ort_best, 'sqnr_run')} / {db(ort_best, 'sqnr_qdq')}", delta(ek_best, ort_best)]
        lines.append("| " + " | ".join(cells) + " |")
    costs = [r for r in data["rows"] if r.get("cost")]
    if costs:
        lines += ["", ("| model | calibration | time s: edgekiln / ORT | RSS peak MiB: edgekiln / ORT "
                       "| tracemalloc peak MiB: edgekiln / ORT |"), "| --- | --- | --- | --- | --- |"]
        for r in costs:
            for method, ort_method in (("minmax", "MinMax"), ("entropy", "Entropy"), ("percentile", "Percentile")):
                ek, ort = r["cost"].get(f"edgekiln/{method}"), r["cost"].get(f"ort/{ort_method}")
                if ek is None or ort is None or "error" in ek or "error" in ort:
                    continue
                lines.append(f"| {r['model']} | {method} | {ek['seconds']:.2f} / {ort['seconds']:.2f} | "
                             f"{ek['rss_peak_mib']:.1f} / {ort['rss_peak_mib']:.1f} | "
                             f"{ek['py_peak_mib']:.1f} / {ort['py_peak_mib']:.1f} |")
    return "\n".join(lines)


def weight_bytes(data: dict) -> str:
    labels = list(data["rows"][0]["configs"]) if data["rows"] else []
    lines = ["| model | FP32 KiB | " + " | ".join(labels) + " |",
             "| --- | --- | " + " | ".join("---" for _ in labels) + " |"]
    for r in data["rows"]:
        cells = [r["model"], f"{r['fp32_bytes'] / 1024:.1f}"]
        for label in labels:
            c = r["configs"][label]
            mark = "" if c["meets_bar"] else f" (over {c['bar']}x)"
            cells.append(f"{c['total'] / 1024:.1f} KiB, {c['ratio']:.3f}x{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    if data["rows"] and "artifact" in data["rows"][0]["configs"][labels[0]]:
        lines += ["", "| model | " + " | ".join(f"{label}: fast / compact / floor" for label in labels) + " |",
                  "| --- | " + " | ".join("---" for _ in labels) + " |"]
        for r in data["rows"]:
            cells = [r["model"]]
            for label in labels:
                c = r["configs"][label]
                blobs = " / ".join(f"{ratio:.3f}x" for ratio in c["artifact_ratio"].values())
                # (n/m): the layers whose own floor is over the bar
                cells.append(f"{blobs} / {c['floor_ratio']:.3f}x **{c['verdict']}** "
                             f"({c['floor']['impossible_layers']}/{c['floor']['layers']})")
            lines.append("| " + " | ".join(cells) + " |")
    peer_configs = data.get("peer_configs", ())  # edgekiln's configs beside the peers': int8, int4, int4:g64
    if data["rows"] and "peers" in data["rows"][0] and peer_configs:
        lines += ["", "| model | edgekiln int8 | onnxruntime int8 | TFLite int8 | edgekiln int4 (per channel) "
                      "| onnxruntime int4 (per channel) | edgekiln int4:g64 |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in data["rows"]:
            ort, tflite = r["peers"]["onnxruntime"], r["peers"]["tflite_int8"]
            if not all(label in r["configs"] for label in peer_configs):
                continue
            ours = [min(r["configs"][label]["artifact_ratio"].values()) for label in peer_configs]
            lines.append(f"| {r['model']} | {ours[0]:.3f}x | {ort['QInt8'] / ort['fp32']:.3f}x | "
                         + ("-" if tflite is None else f"{tflite / r['fp32_bytes']:.3f}x")
                         + f" | {ours[1]:.3f}x | {ort['QInt4'] / ort['fp32']:.3f}x | {ours[2]:.3f}x |")
    return "\n".join(lines)


def gemm_instructions(rows: list[dict]) -> str:
    isas = ["c", "neon", "dotprod", "i8mm"]
    lines = ["| m x n x k | " + " | ".join(isas) + " |", "| --- |" + " --- |" * len(isas)]
    for r in rows:
        macs = r["m"] * r["n"] * r["k"]
        cells = [f"{r['instructions'][i]:,} ({macs / r['instructions'][i]:.2f} MAC/insn)" for i in isas]
        lines.append(f"| {r['m']}x{r['n']}x{r['k']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pruning_accuracy(data: dict) -> str:
    parts = []
    for model, rows in data["accuracy"].items():
        lines = [f"**{model}**", "", "| ratio | parameters | MACs | L1 | L1 + re-fit | data + re-fit |",
                 "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['ratio']:.1f} | {r['params']:,} | {r['macs']:,} | {r['l1']:.1%} | {r['l1+refit']:.1%} | "
                  f"{r['data+refit']:.1%} |" for r in rows]
        parts.append("\n".join(lines))
    lines = ["| model | parameters | after | MACs | after | prune time (s) |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['params_before']:,} | {r['params_after']:,} "
              f"({r['params_after'] / r['params_before']:.2f}x) | {r['macs_before']:,} | {r['macs_after']:,} "
              f"({r['macs_after'] / r['macs_before']:.2f}x) | {r['prune_seconds']:.1f} |" for r in data["sizes"]]
    parts.append("\n".join(lines))
    lines = ["| ratio | int8 top-1 | median latency | vs unpruned | constants |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['ratio']:.1f} | {r['int8_accuracy']:.1%} | {r['median_ms'] * 1000:.1f} µs | "
              f"{r['latency_vs_unpruned']:.2f}x | {r['constant_bytes']:,} B |" for r in data["latency_digits_cnn"]]
    parts.append("\n".join(lines))
    return "\n\n".join(parts)


def arm_runtime_vs_peers(data: dict) -> str:
    engines = ["edgekiln int8", "edgekiln int4", "edgekiln ternary", "ORT fp32", "ORT int8", "TVM untuned"]
    if any("TVM tuned" in by_threads for v in data["models"].values() for by_threads in v["latency_ms"].values()):
        engines.append("TVM tuned")
    threads = sorted({t for v in data["models"].values() for t in v["latency_ms"]}, key=int)
    parts = []
    for t in threads:
        lines = [f"{t} thread(s): median ms (speed-up vs {data['baseline']}; > 1 = faster)", "",
                 "| model | " + " | ".join(engines) + " |", "| --- |" + " ---: |" * len(engines)]
        for model, v in data["models"].items():
            latency = v["latency_ms"].get(t, {})
            base = latency.get(data["baseline"])
            cells = ["-" if e not in latency else f"{latency[e]:.3f}" if e == data["baseline"] or not base
                     else f"{latency[e]:.3f} ({base / latency[e]:.2f}x)" for e in engines]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def edgetpu_peers(data: dict) -> str:
    lines = ["| model | converter | ops | TRANSPOSE / DEQUANTIZE | ops on TPU | MACs on TPU | file KiB "
             "| LiteRT CPU ms (vs edgekiln) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['model']} | {r['converter']} | {r.get('status')} | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['converter']} | {r['ops']} | {r['transpose']} / {r['dequantize']} | "
                     f"{r['tpu_op_share']:.0%} | {r['tpu_mac_share']:.0%} | {r['file_bytes'] / 1024:.1f} | "
                     f"{r['litert_cpu_ms']:.3f} ({r['latency_vs_edgekiln']:.2f}x) |")
    return "\n".join(lines)


def _sqnr_with_without(row: dict) -> str:
    if "sqnr_db" not in row:
        return "–"
    return f"{row['sqnr_db']:.2f} ({row.get('sqnr_db_without_rewrites', float('nan')):.2f})"


def tflite_agreement(rows: list[dict]) -> str:
    lines = ["| model | TFLite ops | T/DQ | file KiB | per op, REF | per op, XNNPACK | outputs (chained), REF | top-1 "
             "| SQNR vs float, dB (without the TPU rewrites) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['ops']} | {r['transpose']}/{r['dequantize']} | {r['bytes'] / 1024:.1f} | "
              f"{r['per_op_equal_ref']:.2%} ±{r['per_op_max_diff_ref']} | "
              f"{r['per_op_equal_xnnpack']:.2%} ±{r['per_op_max_diff_xnnpack']} | "
              f"{r['output_equal_ref']:.2%} ±{r['output_max_diff_ref']} | {r.get('top1_agree', '–')} | "
              f"{_sqnr_with_without(r)} |" for r in rows]
    return "\n".join(lines)


RENDERERS = {"gemm_instructions": gemm_instructions, "arena_planning": arena_planning, "graph_optimization": graph_optimization,
             "reparameterization": reparameterization, "quantization_accuracy": quantization_accuracy,
             "quantization_sqnr": quantization_sqnr, "weight_bytes": weight_bytes,
             "pruning_accuracy": pruning_accuracy, "arm_runtime_vs_peers": arm_runtime_vs_peers,
             "arm_runtime_vs_tvm_tuned": arm_runtime_vs_peers, "edgetpu_peers": edgetpu_peers, "edgetpu_rewrites": edgetpu_peers, "tflite_agreement": tflite_agreement}


def main() -> None:
    for name, render in RENDERERS.items():
        path = RESULTS / f"{name}.json"
        if path.exists():
            print(f"<!-- {name} -->\n{render(json.loads(path.read_text()))}\n")


if __name__ == "__main__":
    main()
