"""Guest instructions per int8 GEMM call for each ISA path, counted under qemu (deterministic).

    python -m benchmarks.gemm_instructions         # prints a table, writes benchmarks/results/gemm_instructions.json

Emulated wall time means nothing, so kernels are compared by the exact number of aarch64
instructions one call executes: count(2 calls) − count(1 call), from a TCG plugin, with
`qemu-aarch64 -cpu max` (which runs every path).  Shapes: an im2col block of a 3x3 conv with
64 channels, a fully connected GEMV, and a tail-heavy first conv.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgekiln.backends.arm_cpu.insn_plugin import build_plugin
from tests.runtime_arm.test_gemm_kernels import (
    AARCH64_CC,
    AARCH64_FLAGS,
    build_driver,
    count_instructions,
)

RESULTS = Path(__file__).parent / "results" / "gemm_instructions.json"
SHAPES = [(64, 64, 576), (1, 1000, 1280), (256, 16, 27)]
ISAS = ["c", "neon", "dotprod", "i8mm"]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        driver = build_driver(AARCH64_CC, AARCH64_FLAGS, Path(tmp) / "gemm", ["-static"])
        plugin = build_plugin()  # edgekiln/runtime_arm/tools/qemu_insn_plugin.c, cached
        for shape in SHAPES:
            counts = {isa: count_instructions(driver, plugin, isa, shape) for isa in ISAS}
            rows.append({"m": shape[0], "n": shape[1], "k": shape[2], "instructions": counts})
    table = Table(title="int8 GEMM: guest instructions per call (qemu-aarch64 -cpu max), MACs per instruction")
    table.add_column("m x n x k")
    for isa in ISAS:
        table.add_column(isa, justify="right")
    for r in rows:
        macs = r["m"] * r["n"] * r["k"]
        table.add_row(f"{r['m']}x{r['n']}x{r['k']}",
                      *(f"{r['instructions'][i]:,} ({macs / r['instructions'][i]:.2f})" for i in ISAS))
    Console(width=140).print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
