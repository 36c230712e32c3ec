"""int8 vs int4 vs ternary GEMV / GEMM: guest instructions per call on each aarch64 path, weight
bytes moved per call, and host AVX2 timings as ratios.

    python -m benchmarks.lowbit_gemm        # prints the tables, writes benchmarks/results/lowbit_gemm.json

Instructions: the exact number of aarch64 instructions one kernel call executes, count(2
calls) - count(1 call), from the qemu TCG plugin (runtime_arm/tools/qemu_insn_plugin.c) under
`qemu-aarch64 -cpu max`, with each path forced (neon, dotprod, i8mm).  The int8 kernels read
int8 weight rows; the int4 and ternary kernels read the K-blocked packed rows the compiler
writes (backends/arm_cpu/weight_packing.py) and unpack them in registers.  "multiply-free" is
the and/eor/sadalp ternary kernel (gemm_lowbit_neon_mask.c) the runtime does not select;
"pre-paired" the i8mm int8 kernel on weights stored pre-paired for smmla (EK_PACK_I8_PAIRS8, written
for i8mm targets when a call multiplies more than one row).  Weight bytes: what
one call reads of the weight matrix (n rows of k int8 bytes, or of the packed row bytes).
Host: best-of-N wall time of the AVX2 kernels on the same shapes, int8 / int4 / ternary
interleaved round by round (the machine may be shared: only the ratios within one run mean
anything).  Last, the float GEMM (ek_sgemm): NEON vs the portable kernel in instructions, AVX2+FMA
vs the portable kernel in host time.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgekiln.backends.arm_cpu.insn_plugin import build_plugin
from edgekiln.backends.arm_cpu.weight_packing import row_bytes
from tests.runtime_arm.test_gemm_kernels import (
    AARCH64_CC,
    AARCH64_FLAGS,
    X86_64_FLAGS,
    build_driver,
)

RESULTS = Path(__file__).parent / "results" / "lowbit_gemm.json"
# (name, m, n, k): FC-layer GEMVs (one token / one image) and an im2col block of a 3x3 conv
SHAPES = [("GEMV", 1, 1024, 1024), ("GEMV", 1, 1000, 1280), ("GEMM", 64, 64, 576), ("GEMM", 256, 64, 288)]
PATHS = ["neon", "dotprod", "i8mm"]
# float GEMM (ek_sgemm): (m, n, k) = (output channels, pixels, K) of a conv block, and a GEMV
FLOAT_SHAPES = [(64, 64, 576), (1, 1024, 1024)]
PRECISIONS = {"int8": 8, "int4": 4, "ternary": 2}
HOST_ROUNDS, HOST_REPS = 5, 20
# the portable float kernel as the runtime builds it (toolchain.BASE_FLAGS): gcc vectorizes its axpy
RUNTIME_VECTORIZE = ["-fvect-cost-model=cheap"]


def weight_bytes(bits: int, n: int, k: int) -> int:
    return n * (k if bits == 8 else row_bytes(bits, k))


def count(driver: Path, plugin: Path, isa: str, bits: int, m: int, n: int, k: int) -> int:
    def total(reps: int) -> int:
        cmd = ["qemu-aarch64", "-cpu", "max", "-plugin", str(plugin), "-d", "plugin", str(driver), "repeat", isa,
               str(bits), str(m), str(n), str(k), str(reps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        return int(re.search(r"insns: (\d+)", proc.stderr)[1])

    one, two = total(1), total(2)
    return two - one


def host_best_ns(driver: Path, bits: int, m: int, n: int, k: int, isa: str = "avx2") -> float:
    proc = subprocess.run([str(driver), "bench", isa, str(bits), str(m), str(n), str(k), str(HOST_REPS)],
                          capture_output=True, text=True, check=True, timeout=600)
    return float(re.search(r"best_ns=(\d+)", proc.stdout)[1])


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        arm_flags = {**AARCH64_FLAGS, "gemm_f32_ref.c": AARCH64_FLAGS["gemm_f32_ref.c"] + RUNTIME_VECTORIZE}
        host_flags = {**X86_64_FLAGS, "gemm_f32_ref.c": X86_64_FLAGS["gemm_f32_ref.c"] + RUNTIME_VECTORIZE}
        arm = build_driver(AARCH64_CC, arm_flags, Path(tmp) / "arm", ["-static"], driver="lowbit_driver")
        host = build_driver("gcc", host_flags, Path(tmp) / "host", [], driver="lowbit_driver")
        plugin = build_plugin()
        for name, m, n, k in SHAPES:
            insns = {isa: {p: count(arm, plugin, isa, bits, m, n, k) for p, bits in PRECISIONS.items()} for isa in PATHS}
            insns["neon-mask"] = {"ternary": count(arm, plugin, "neon-mask", 2, m, n, k)}
            insns["i8mm-paired"] = {"int8": count(arm, plugin, "i8mm-paired", 8, m, n, k)}
            best = {p: float("inf") for p in PRECISIONS}
            for _ in range(HOST_ROUNDS):  # interleaved: a load spike hits every precision alike
                for p, bits in PRECISIONS.items():
                    best[p] = min(best[p], host_best_ns(host, bits, m, n, k))
            rows.append({"kind": name, "m": m, "n": n, "k": k, "instructions": insns,
                         "weight_bytes": {p: weight_bytes(bits, n, k) for p, bits in PRECISIONS.items()},
                         "host_avx2_best_ns": best})
        floats = []
        for m, n, k in FLOAT_SHAPES:
            insns = {isa: count(arm, plugin, isa, 32, m, n, k) for isa in ("c", "neon")}
            best = {"c": float("inf"), "avx2": float("inf")}
            for _ in range(HOST_ROUNDS):
                for isa in best:
                    best[isa] = min(best[isa], host_best_ns(host, 32, m, n, k, isa))
            floats.append({"m": m, "n": n, "k": k, "instructions": insns, "host_best_ns": best})
    console = Console(width=200)
    table = Table(title="Guest instructions per call (qemu-aarch64 -cpu max) and weight bytes moved; "
                        "x = ratio to int8 on the same path")
    table.add_column("shape")
    for isa in PATHS:
        for p in PRECISIONS:
            table.add_column(f"{isa} {p}", justify="right")
    table.add_column("neon ternary multiply-free", justify="right")
    table.add_column("i8mm int8 pre-paired", justify="right")
    table.add_column("weight bytes int8 / int4 / ternary", justify="right")
    for r in rows:
        cells = []
        for isa in PATHS:
            base = r["instructions"][isa]["int8"]
            for p in PRECISIONS:
                v = r["instructions"][isa][p]
                cells.append(f"{v:,}" if p == "int8" else f"{v:,} ({v / base:.2f}x)")
        wb = r["weight_bytes"]
        mask = r["instructions"]["neon-mask"]["ternary"]
        cells.append(f"{mask:,} ({mask / r['instructions']['neon']['int8']:.2f}x)")
        paired = r["instructions"]["i8mm-paired"]["int8"]
        cells.append(f"{paired:,} ({paired / r['instructions']['i8mm']['int8']:.2f}x)")
        table.add_row(f"{r['kind']} {r['m']}x{r['n']}x{r['k']}", *cells,
                      f"{wb['int8']:,} / {wb['int4']:,} / {wb['ternary']:,}")
    console.print(table)
    host_table = Table(title="Host x86_64 AVX2, best of rounds (loaded machine: ratios only)")
    host_table.add_column("shape")
    for p in PRECISIONS:
        host_table.add_column(f"{p} time / int8", justify="right")
    for r in rows:
        t = r["host_avx2_best_ns"]
        host_table.add_row(f"{r['kind']} {r['m']}x{r['n']}x{r['k']}", *(f"{t[p] / t['int8']:.2f}" for p in PRECISIONS))
    console.print(host_table)
    float_table = Table(title="Float GEMM: portable C (gcc-vectorized axpy) vs NEON / AVX2+FMA register tiles")
    for column in ("m x n x k", "aarch64 insns c", "aarch64 insns neon", "c / neon", "host c / avx2 time"):
        float_table.add_column(column, justify="right")
    for r in floats:
        i, t = r["instructions"], r["host_best_ns"]
        float_table.add_row(f"{r['m']}x{r['n']}x{r['k']}", f"{i['c']:,}", f"{i['neon']:,}", f"{i['c'] / i['neon']:.2f}",
                            f"{t['c'] / t['avx2']:.2f}")
    console.print(float_table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"lowbit": rows, "float": floats}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
