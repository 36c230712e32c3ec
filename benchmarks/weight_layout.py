"""`--weight-layout fast` vs `compact`: blob bytes, guest instructions and host latency.

    python -m benchmarks.weight_layout            # prints a table, writes benchmarks/results/weight_layout.json
    python -m benchmarks.weight_layout --quick    # without ppocr_rec

For each (model, precision) the model is compiled twice with the same calibration, once per
layout (`compact`: int4 flat, ternary base-3, five values per byte, unpacked per task into
scratch for the int8 GEMM; `fast`: int4 / ternary GEMM weights K-blocked as the low-bit GEMM
kernels read them in place, except where unpacking is faster: layers whose K groups split the
K blocks, and every GEMM weight on x86 targets, backends/arm_cpu/low_bit_layout.py), and
measured:

* blob bytes (the whole model.blob) and the ternary / int4 weight tensors' own bytes;
* exact guest instructions of one inference under `qemu-aarch64 -cpu cortex-a53` (the NEON
  paths; TCG plugin runtime_arm/tools/qemu_insn_plugin.c, one thread, after one warm-up run);
* host latency (x86_64): the median of 20 runs of ek_run --threads 1, the best of five
  interleaved rounds (fast and compact alternate, so machine load hits both), with the ISA the
  runtime picks (`auto`: on an AVX-512 VNNI CPU the int8 GEMM is VNNI, the low-bit GEMMs AVX2)
  and forced to `--isa avx2` (both layouts' GEMMs AVX2).

Both layouts' outputs under qemu are checked bit-exactly against the integer reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import edgekiln
from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
from edgekiln.backends.reference.runner import ReferenceRunner
from tests.runtime_arm.blob_tools import BlobView
from tests.zoo import input_shapes, model_path, sample_input

RESULTS = Path(__file__).parent / "results" / "weight_layout.json"
CASES = [("lenet_mnist", "ternary"), ("lenet_mnist", "int4"), ("lenet_mnist", "int4:g64"), ("resnet_basic", "int4"),
         ("resnet_basic", "int4:g64"), ("resnet_basic", "ternary"), ("ppocr_rec", "ternary")]
QUICK = [case for case in CASES if case[0] != "ppocr_rec"]
LAYOUTS = ("fast", "compact")
LOW_BIT = {op_codes.PACK[k] for k in ("INT4", "INT2", "INT4_K32", "INT2_K64", "INT2_B3")}
ROUNDS, REPEAT = 5, 20
HOST_ISAS = ("auto", "avx2")
QEMU_CPU = "cortex-a53"


def low_bit_bytes(blob: bytes) -> int:
    """Bytes of the blob's int4 / ternary weight tensors."""
    view = BlobView(blob)
    return sum(int.from_bytes(blob[e + 64:e + 72], "little")
               for e in map(view.tensor, range(view.n_tensors)) if blob[e + 3] in LOW_BIT)


def compile_both(name: str, quant: str, target: str) -> dict[str, edgekiln.Artifact]:
    calib = [sample_input(name, seed=s) for s in range(1, 5)]
    return {layout: edgekiln.compile(model_path(name), target, input_shapes=input_shapes(name), quant=quant,
                                     calib=calib, progress=False, weight_layout=layout) for layout in LAYOUTS}


def measure(name: str, quant: str) -> dict:
    feeds = sample_input(name, seed=21)
    arm = compile_both(name, quant, QEMU_CPU)
    row: dict = {"model": name, "quant": quant}
    for layout, artifact in arm.items():
        blob = artifact.files["model.blob"]
        runner = ArmCpuRunner(artifact.files, artifact.manifest)
        got = runner.run(feeds)
        expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {quant} {layout}: {key}")
        counts, _ = runner.count_instructions(feeds)
        row[layout] = {"blob_bytes": len(blob), "low_bit_bytes": low_bit_bytes(blob), "guest_instructions": counts.total}
    host = compile_both(name, quant, "host")
    runners = {layout: ArmCpuRunner(a.files, a.manifest) for layout, a in host.items()}
    best = {(layout, isa): float("inf") for layout in LAYOUTS for isa in HOST_ISAS}
    for _ in range(ROUNDS):
        for isa in HOST_ISAS:
            for layout in LAYOUTS:
                stats = runners[layout].bench(feeds, repeat=REPEAT, warmup=2, profile=False, isa=isa)
                best[layout, isa] = min(best[layout, isa], stats["latency_ms"]["median"])
    for layout in LAYOUTS:
        row[layout]["host_ms"] = {isa: best[layout, isa] for isa in HOST_ISAS}
    fast, compact = row["fast"], row["compact"]
    row["ratios"] = {"blob": compact["blob_bytes"] / fast["blob_bytes"],
                     "low_bit": compact["low_bit_bytes"] / fast["low_bit_bytes"],
                     "instructions": compact["guest_instructions"] / fast["guest_instructions"],
                     **{f"host_latency_{isa}": compact["host_ms"][isa] / fast["host_ms"][isa] for isa in HOST_ISAS}}
    return row


def render(rows: list[dict]) -> Table:
    table = Table(title="--weight-layout compact vs fast (ratios compact / fast)")
    for column in ("model", "quant", "blob KiB fast", "blob KiB compact", "blob", "low-bit weights",
                   f"guest insns fast ({QEMU_CPU})", "guest insns", "host ms fast", "host latency",
                   "host ms fast avx2", "host latency avx2"):
        table.add_column(column, justify="left" if column in ("model", "quant") else "right")
    for r in rows:
        f, c, q = r["fast"], r["compact"], r["ratios"]
        table.add_row(r["model"], r["quant"], f"{f['blob_bytes'] / 1024:.1f}", f"{c['blob_bytes'] / 1024:.1f}",
                      f"{q['blob']:.3f}x", f"{q['low_bit']:.3f}x", f"{f['guest_instructions'] / 1e6:.2f} M",
                      f"{q['instructions']:.3f}x", f"{f['host_ms']['auto']:.3f}", f"{q['host_latency_auto']:.2f}x",
                      f"{f['host_ms']['avx2']:.3f}", f"{q['host_latency_avx2']:.2f}x")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip ppocr_rec")
    args = parser.parse_args()
    console = Console(width=200)
    rows = []
    for name, quant in QUICK if args.quick else CASES:
        with console.status(f"{name} {quant}"):
            rows.append(measure(name, quant))
    console.print(render(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"qemu_cpu": QEMU_CPU, "host_rounds": ROUNDS, "host_repeat": REPEAT, "rows": rows},
                                  indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
