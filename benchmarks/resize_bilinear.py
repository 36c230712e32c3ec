"""The int8 bilinear resize kernel of runtime_arm (QResizeBilinear) against the fp32 one (Resize, linear).

    python -m benchmarks.resize_bilinear      # prints a table, writes benchmarks/results/resize_bilinear.json

For a few feature-map upsamplings / downsamplings (NCHW, half_pixel) it measures, for the int8
kernel and the fp32 kernel on the same shape:

* exact guest instructions per call under qemu-aarch64 -cpu cortex-a53 (TCG plugin
  runtime_arm/tools/qemu_insn_plugin.c): count(3 runs) − count(1 run), halved, one thread;
* host latency (x86_64): the median of 30 runs of ek_run --threads 1, best of five interleaved
  rounds (int8 and fp32 alternate, so machine load hits both alike).

and the agreement of the integer reference (which the C kernel matches bit for bit) with
onnxruntime on the QDQ model (x -> Conv -> Resize linear), per coordinate_transformation_mode
and size: the share of outputs exactly equal and within 1 LSB.

Every qemu run's output is checked: int8 bit-exact against the integer reference, fp32 within 1e-4
relative of the float reference.
Ratios are fp32 / int8 (> 1: the int8 kernel is faster).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.sparse_kernels import build_plugin, count_instructions, host_latency_ms
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.compiler.bilinear_taps import onnx_taps
from tests.runtime_arm.harness import aarch64_runner, host_runner, one_call

RESULTS = Path(__file__).parent / "results" / "resize_bilinear.json"
# (N, C, H, W) -> (H_out, W_out)
SHAPES = [((1, 32, 20, 20), (40, 40)), ((1, 16, 30, 40), (60, 80)), ((1, 64, 10, 10), (40, 40)),
          ((1, 24, 33, 17), (16, 9))]
ROUNDS = 5


def cases(shape, out_hw) -> dict[str, tuple]:
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    x8 = rng.integers(-128, 128, shape).astype(np.int8)
    int8 = one_call("QResizeBilinear", [("x", x8, False), ("taps_h", onnx_taps(h, out_hw[0], "half_pixel"), True),
                                        ("taps_w", onnx_taps(w, out_hw[1], "half_pixel"), True)])
    x32 = rng.standard_normal(shape).astype(np.float32)
    fp32 = one_call("Resize", [("x", x32, False), ("roi", np.zeros(0, np.float32), True),
                               ("scales", np.zeros(0, np.float32), True),
                               ("sizes", np.array([n, c, *out_hw], np.int64), True)], {"mode": "linear"})
    return {"int8": int8, "fp32": fp32}


def ort_agreement() -> list[dict]:
    """Equal / within-1-LSB shares against onnxruntime, the QDQ graphs of tests/compiler/test_resize_bilinear.py."""
    from edgekiln.compiler.bilinear_taps import MODES
    from edgekiln.compiler.integer_lowering import IntegerLowering
    from tests.backends.reference.qdq_models import quantize_with_pass
    from tests.compiler.test_resize_bilinear import (
        SIZES,
        _agreement,
        _feeds,
        _resize_model,
    )

    rows = []
    for mode in MODES:
        for in_hw, out_hw in SIZES:
            graph = _resize_model(in_hw, out_hw, mode)
            qdq = quantize_with_pass(graph, [_feeds(graph, s) for s in range(3)])
            equal, within = _agreement(qdq, IntegerLowering(qdq).lower(64))
            rows.append({"mode": mode, "in_hw": list(in_hw), "out_hw": list(out_hw), "equal": equal, "within_1": within})
    return rows


def main() -> None:
    agreement = ort_agreement()
    table = Table(title="QResizeBilinear vs onnxruntime (QDQ model): share of outputs")
    for column in ("mode", "input", "output", "equal", "within 1 LSB"):
        table.add_column(column, justify="right")
    for r in agreement:
        table.add_row(r["mode"], "x".join(map(str, r["in_hw"])), "x".join(map(str, r["out_hw"])),
                      f"{r['equal']:.2%}", f"{r['within_1']:.2%}")
    Console().print(table)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plugin, arm, host = build_plugin(Path(tmp)), aarch64_runner(), host_runner()
        for shape, out_hw in SHAPES:
            built = cases(shape, out_hw)
            row = {"shape": list(shape), "out_hw": list(out_hw)}
            for dtype, (program, feeds, expected) in built.items():
                blob = write_blob(program)
                row[f"{dtype}_insns_a53"] = count_instructions(blob, program, feeds, expected, dtype, arm, plugin,
                                                               "cortex-a53")
            best = {"int8": float("inf"), "fp32": float("inf")}
            for _ in range(ROUNDS):
                for dtype, (program, feeds, _) in built.items():
                    best[dtype] = min(best[dtype], host_latency_ms(write_blob(program), program, feeds, host))
            row.update({f"{dtype}_host_ms": value for dtype, value in best.items()})
            results.append(row)
    table = Table(title="bilinear resize, int8 (QResizeBilinear) vs fp32 (Resize linear), one thread; "
                        "host timings on a loaded machine")
    for column in ("input", "output", "a53 insns int8", "a53 insns fp32", "fp32/int8", "host ms int8",
                   "host ms fp32", "fp32/int8"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row("x".join(map(str, r["shape"])), "x".join(map(str, r["out_hw"])), f"{r['int8_insns_a53']:,}",
                      f"{r['fp32_insns_a53']:,}", f"{r['fp32_insns_a53'] / r['int8_insns_a53']:.2f}",
                      f"{r['int8_host_ms']:.3f}", f"{r['fp32_host_ms']:.3f}",
                      f"{r['fp32_host_ms'] / r['int8_host_ms']:.2f}")
    Console().print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": results, "ort_agreement": agreement}, indent=1) + "\n")


if __name__ == "__main__":
    main()
