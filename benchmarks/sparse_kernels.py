"""Sparse vs dense 1x1 convolution kernels of runtime_arm, at MobileNet sizes.

    python -m benchmarks.sparse_kernels        # prints tables, writes benchmarks/results/sparse_kernels.json

For weight sparsities 0 (the dense kernel), 50 / 70 / 90 % (unstructured: 1x1 blocks; and the
same density in 4x1 blocks along output channels) and the 2:4 / 1:4 N:M patterns, int8 and
fp32, it measures

* exact guest instructions per call under qemu-aarch64 (TCG plugin
  runtime_arm/tools/qemu_insn_plugin.c): count(3 runs) − count(1 run), halved, single
  thread, -cpu cortex-a53 (dense NEON GEMM) and -cpu cortex-a76 (dense dotprod GEMM); the
  sparse kernels are the NEON ones on both;
* host latency (x86_64, AVX2 kernels): the median of 30 runs of ek_run --threads 1, best of
  five interleaved rounds (dense and sparse alternate, so machine load hits both alike).

Every qemu run's output is checked against the integer reference (bit-exact) / float reference
(the host kernels are checked by tests/runtime_arm/test_sparse_kernels.py).
Ratios are dense / sparse (> 1: the sparse kernel is faster).  The cost model the compiler
uses to pick a kernel (edgekiln/pruning/sparsity_cost.py) is calibrated from these numbers.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.arm_cpu.toolchain import RUNTIME_DIR
from edgekiln.pruning.sparsity_formats import stored_blocks
from tests.runtime_arm.harness import aarch64_runner, host_runner, one_call, run_blob
from tests.runtime_arm.int8_cases import multipliers

RESULTS = Path(__file__).parent / "results" / "sparse_kernels.json"
HOST_SHAPES = [(256, 256, 14, 14), (512, 512, 14, 14)]  # K (input channels), O, H, W
QEMU_SHAPES = [(256, 256, 14, 14)]
QEMU_CPUS = ["cortex-a53", "cortex-a76"]
ROUNDS = 5  # host rounds; the best of them per kernel
# (label, weight sparsity, sparse formats to measure)
ALL_BLOCKS = [("block", 1), ("block", 2), ("block", 4), ("block", 8)]
CONFIGS = [("0%", 0.0, []), ("50%", 0.5, [("block", 1), ("block", 4)]), ("70%", 0.7, ALL_BLOCKS), ("90%", 0.9, ALL_BLOCKS),
           ("2:4", (2, 4), [("n:m", (2, 4))]), ("1:4", (1, 4), [("n:m", (1, 4))])]


def weight_mask(rng, o: int, k: int, sparsity, block: int) -> np.ndarray:
    if isinstance(sparsity, tuple):
        n, m = sparsity
        ranks = rng.random((o, k // m, m)).argsort(axis=2).argsort(axis=2)
        return (ranks < n).reshape(o, k)
    rows = -(-o // block)
    keep = rng.random((rows, k)) >= sparsity
    return np.repeat(keep, block, axis=0)[:o]


def conv_case(dtype: str, shape, mask: np.ndarray, seed: int = 0):
    k, o, h, w = shape
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        weights = (rng.integers(-127, 128, (o, k)) * mask).astype(np.int8).reshape(o, k, 1, 1)
        mult, shift = multipliers(rng, o, k // 2)
        attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1, "input_zero_point": -3,
                 "output_zero_point": 2, "act_min": -128, "act_max": 127}
        return one_call("QConv2D", [("x", rng.integers(-128, 128, (1, k, h, w)).astype(np.int8), False),
                                    ("w", weights, True), ("bias", rng.integers(-999, 999, o).astype(np.int32), True),
                                    ("mult", mult, True), ("shift", shift, True)], attrs)
    weights = (rng.standard_normal((o, k)) * mask).astype(np.float32).reshape(o, k, 1, 1)
    attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
    return one_call("Conv", [("x", rng.standard_normal((1, k, h, w)).astype(np.float32), False), ("w", weights, True),
                             ("b", rng.standard_normal(o).astype(np.float32), True)], attrs)


def plan_for(program, fmt) -> dict | None:
    if fmt is None:
        return None
    kind, arg = fmt
    choice = {"format": "block", "block": arg} if kind == "block" else {"format": "n:m", "n": arg[0], "m": arg[1]}
    return {program.calls[0].name: choice}


def _check(got, expected, dtype):
    for name, value in expected.items():
        if dtype == "int8":
            np.testing.assert_array_equal(got[name], value)
        else:
            assert np.max(np.abs(got[name] - value)) <= 1e-4 * max(float(np.max(np.abs(value))), 1.0)


def cases(shape):
    """(label, format name, dtype, program, feeds, expected, plan) for every measured kernel."""
    for dtype in ("int8", "fp32"):
        for label, sparsity, formats in CONFIGS:
            for fmt in [None] if not formats else formats:
                block = fmt[1] if fmt and fmt[0] == "block" else 1
                mask = weight_mask(np.random.default_rng(1), shape[1], shape[0], sparsity, block)
                program, feeds, expected = conv_case(dtype, shape, mask)
                name = "dense" if fmt is None else (f"{fmt[1]}x1 blocks" if fmt[0] == "block" else "N:M")
                yield label, name, dtype, program, feeds, expected, plan_for(program, fmt)


def entries(program, name: str) -> int:
    """Stored entries of the call's weight in the kernel's format (O·K for the dense kernel)."""
    w = program.constants["w"].reshape(program.constants["w"].shape[0], -1)
    if name == "dense":
        return w.size
    if name == "N:M":
        return w.size // 2 if np.count_nonzero(w) > w.size // 4 else w.size // 4
    return stored_blocks(w, int(name.split("x")[0]))


def count_instructions(blob, program, feeds, expected, dtype, runner, plugin, cpu) -> int:
    counts = []
    for reps in (1, 3):
        prefix = ("qemu-aarch64", "-cpu", cpu, "-plugin", str(plugin), "-d", "plugin")
        got, proc = run_blob(blob, program, feeds, runner, prefix,
                             ("--threads", "1", "--repeat", str(reps), "--warmup", "0"))
        assert proc.returncode == 0, proc.stderr
        _check(got, expected, dtype)
        counts.append(int(re.search(r"insns: (\d+)", proc.stderr)[1]))
    return (counts[1] - counts[0]) // 2


def host_latency_ms(blob, program, feeds, runner) -> float:
    _, proc = run_blob(blob, program, feeds, runner, (), ("--threads", "1", "--repeat", "30", "--warmup", "3"))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["latency_ms"]["median"]


def build_plugin(tmp: Path) -> Path:
    source = RUNTIME_DIR / "tools" / "qemu_insn_plugin.c"
    if not source.exists():
        source = Path(__file__).parents[1] / "tests" / "runtime_arm" / "qemu_insn_plugin.c"
    out = tmp / "libinsn.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-shared", "-fPIC", str(source), "-o", str(out)], check=True)
    return out


def main() -> None:
    results = {"qemu_instructions": [], "host_latency_ms": []}
    with tempfile.TemporaryDirectory() as tmp:
        plugin, arm = build_plugin(Path(tmp)), aarch64_runner()
        for shape in QEMU_SHAPES:
            for label, name, dtype, program, feeds, expected, plan in cases(shape):
                blob = write_blob(program, plan)
                row = {"shape": list(shape), "dtype": dtype, "sparsity": label, "kernel": name,
                       "entries": entries(program, name)}
                for cpu in QEMU_CPUS:
                    row[cpu] = count_instructions(blob, program, feeds, expected, dtype, arm, plugin, cpu)
                results["qemu_instructions"].append(row)
                print(row)
    host = host_runner()
    for shape in HOST_SHAPES:
        built = [(label, name, dtype, program, feeds, write_blob(program, plan), entries(program, name))
                 for label, name, dtype, program, feeds, expected, plan in cases(shape)]
        best = [float("inf")] * len(built)
        for _ in range(ROUNDS):  # interleaved rounds
            for i, (_, _, _, program, feeds, blob, _) in enumerate(built):
                best[i] = min(best[i], host_latency_ms(blob, program, feeds, host))
        for (label, name, dtype, *_, count), ms in zip(built, best):
            results["host_latency_ms"].append({"shape": list(shape), "dtype": dtype, "sparsity": label, "kernel": name,
                                               "entries": count, "ms": ms})
    results["fit"] = fit(results)
    _print(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


def _fit_one(rows: list[dict], key: str, scale: float) -> dict:
    """dense_mac, entry[B], overhead of sparsity_cost.KernelCosts from rows of one shape and dtype."""
    k, o, h, w = rows[0]["shape"]
    pixels = h * w
    dense = next(r for r in rows if r["kernel"] == "dense")
    out = {"dense_mac": dense[key] * scale / pixels / (o * k), "entry": {}, "overhead": 0.0}
    intercepts = []
    for block in (1, 4):  # three densities each: slope and intercept
        pts = [(r["entries"], r[key] * scale / pixels) for r in rows if r["kernel"] == f"{block}x1 blocks"]
        slope, intercept = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
        out["entry"][block] = float(slope)
        intercepts.append(max(float(intercept), 0.0))
    out["overhead"] = float(np.mean(intercepts)) / (o + k)
    for block in (2, 8):  # two densities: the slope at the shared overhead
        pts = [(r["entries"], r[key] * scale / pixels - out["overhead"] * (o + k)) for r in rows
               if r["kernel"] == f"{block}x1 blocks"]
        out["entry"][block] = float(sum(c for _, c in pts) / sum(e for e, _ in pts))
    out["dense_mac"] -= out["overhead"] * (o + k) / (o * k)  # both kernels pay the overhead
    return out


def fit(results) -> dict:
    """The cost model's constants (edgekiln/pruning/sparsity_cost.py) from the first shape's rows."""
    fitted = {}
    for dtype in ("int8", "fp32"):
        q = [r for r in results["qemu_instructions"] if r["dtype"] == dtype and r["shape"] == list(QEMU_SHAPES[0])]
        fitted[f"neon/{dtype}"] = _fit_one(q, "cortex-a53", 1.0)
        fitted[f"dotprod/{dtype}"] = _fit_one(q, "cortex-a76", 1.0)
        h = [r for r in results["host_latency_ms"] if r["dtype"] == dtype and r["shape"] == list(HOST_SHAPES[0])]
        fitted[f"avx2/{dtype}"] = _fit_one(h, "ms", 1e6)  # nanoseconds
    return fitted


def _dense(rows, row, key):
    return next(r[key] for r in rows if r["shape"] == row["shape"] and r["dtype"] == row["dtype"] and r["kernel"] == "dense")


def _print(results) -> None:
    console = Console(width=150)
    q = results["qemu_instructions"]
    table = Table(title="1x1 conv, guest instructions per call (qemu-aarch64, 1 thread); ratio = dense / sparse")
    for col in ("K->O @ HxW", "dtype", "sparsity", "kernel", *QEMU_CPUS, *(f"ratio {c}" for c in QEMU_CPUS)):
        table.add_column(col, justify="right")
    for r in q:
        k, o, h, w = r["shape"]
        table.add_row(f"{k}->{o} @ {h}x{w}", r["dtype"], r["sparsity"], r["kernel"], *(f"{r[c]:,}" for c in QEMU_CPUS),
                      *(f"{_dense(q, r, c) / r[c]:.2f}x" for c in QEMU_CPUS))
    console.print(table)
    h_rows = results["host_latency_ms"]
    table = Table(title="1x1 conv, host latency (x86_64 AVX2, 1 thread, median of 30, best of 5 interleaved rounds; "
                        "loaded machine)")
    for col in ("K->O @ HxW", "dtype", "sparsity", "kernel", "ms", "ratio"):
        table.add_column(col, justify="right")
    for r in h_rows:
        k, o, h, w = r["shape"]
        table.add_row(f"{k}->{o} @ {h}x{w}", r["dtype"], r["sparsity"], r["kernel"], f"{r['ms']:.3f}",
                      f"{_dense(h_rows, r, 'ms') / r['ms']:.2f}x")
    console.print(table)
    table = Table(title="fit: cost model constants (per output pixel: instructions under qemu, ns on the host)")
    for col in ("isa/dtype", "dense_mac", "entry B=1", "entry B=2", "entry B=4", "entry B=8", "overhead"):
        table.add_column(col, justify="right")
    for key, f in results["fit"].items():
        table.add_row(key, f"{f['dense_mac']:.4f}", *(f"{f['entry'][b]:.4f}" for b in (1, 2, 4, 8)), f"{f['overhead']:.4f}")
    console.print(table)


if __name__ == "__main__":
    main()
