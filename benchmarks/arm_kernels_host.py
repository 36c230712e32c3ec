"""Host timings of the runtime's non-GEMM integer kernels: portable C versus the SIMD path.

    python -m benchmarks.arm_kernels_host                        # per-kernel table
    python -m benchmarks.arm_kernels_host --baseline OLD/ek_run  # + whole models, old runner vs this one
    python -m benchmarks.arm_kernels_host --threads              # + whole models at 1 and 2 threads
    python -m benchmarks.arm_kernels_host --gemm-only            # only the x86 GEMM paths on zoo convolutions

Per kernel: one-call Programs with shapes taken from the zoo / PP-OCR models, run by the host
`ek_run` with `--isa c` (portable loops everywhere, GEMM included) and `--isa auto` (AVX2 on
x86_64); both outputs are checked bit-exact against the integer reference first.  Whole
models (`--baseline`): every zoo model, ppocr_cls and ppocr_det compiled int8 for `host`; the
"before" side runs the unfused Program's blob with an older runner binary given on the command
line (e.g. built from an earlier commit; it does not know the fused op), "after, unfused" the
same blob with this tree's runner, "after" the artifact as compiled now (inverted-residual
blocks fused).  The machine is shared and noisy: the two sides are
interleaved round by round and each reports its best median; read the ratios, not the
milliseconds.  `--threads`: every model's artifact as compiled now, run with 1 and 2 runtime
threads, interleaved (the 2-thread gain is bounded by the other load on the machine).
x86 GEMM paths: zoo convolutions (one-call Programs) run with `--isa avx2`, `avxvnni` and
`avx512vnni` (the ones this CPU has), each checked bit-exact first; avx512vnni takes the k-quad
path (im2col straight into quads, channel-major GEMM, AVX-512 requantization).
Writes benchmarks/results/arm_kernels_host.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgekiln.backends.arm_cpu.blob_writer import write_blob
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import assert_bit_exact, host_runner, one_call, run_blob

RESULTS = Path(__file__).parent / "results" / "arm_kernels_host.json"
ROUNDS = 5


def kernel_cases() -> dict[str, tuple]:
    rng = np.random.default_rng(0)
    pad1 = (1, 1, 1, 1)
    return {
        "depthwise 3x3 s1 [96, 28, 28]": cases.conv(rng, depthwise=True, c=96, hw=(28, 28), k=(3, 3), stride=(1, 1), pads=pad1),
        "depthwise 3x3 s2 [96, 56, 56]": cases.conv(rng, depthwise=True, c=96, hw=(56, 56), k=(3, 3), stride=(2, 2), pads=pad1),
        "depthwise 5x5 s1 [72, 40, 40]": cases.conv(rng, depthwise=True, c=72, hw=(40, 40), k=(5, 5), stride=(1, 1),
                                                    pads=(2, 2, 2, 2)),
        "depthwise 5x5 s2 [72, 80, 80]": cases.conv(rng, depthwise=True, c=72, hw=(80, 80), k=(5, 5), stride=(2, 2),
                                                    pads=(2, 2, 2, 2)),
        "depthwise 5x5 s1 [88, 3, 96] (ppocr_cls)": cases.conv(rng, depthwise=True, c=88, hw=(3, 96), k=(5, 5),
                                                               stride=(1, 1), pads=(2, 2, 2, 2)),
        "conv 1x1 [32 -> 64, 40x40]": cases.conv(rng, c=32, o=64, hw=(40, 40), k=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0)),
        "conv 3x3 [16 -> 32, 80x80]": cases.conv(rng, c=16, o=32, hw=(80, 80), k=(3, 3), stride=(1, 1), pads=pad1),
        "conv_transpose 2x2 s2 [24 -> 24, 40x40]": _conv_transpose(rng),
        "QAdd [1, 32, 80, 80]": cases.add_mul(rng, "QAdd", (1, 32, 80, 80), (1, 32, 80, 80)),
        "QMul broadcast [1, 64, 40, 40] x [1, 64, 1, 1]": cases.add_mul(rng, "QMul", (1, 64, 40, 40), (1, 64, 1, 1)),
        "QLookupTable [1, 64, 40, 40]": one_call("QLookupTable", [("x", cases.int8(rng, (1, 64, 40, 40)), False),
                                                                  ("t", cases.int8(rng, (256,)), True)], {"function": "t"}),
        "Quantize [1, 3, 160, 160]": one_call("Quantize", [("x", rng.standard_normal((1, 3, 160, 160), np.float32), False)],
                                              {"scale": 0.02, "zero_point": -3}),
    }


def _conv_transpose(rng) -> tuple:
    """ppocr_det's upsampling: ConvTranspose 2x2 stride 2, per-tensor weights (no channel ratio)."""
    from edgekiln.compiler.requantize import quantize_multiplier
    from tests.runtime_arm.harness import one_call

    m, s = quantize_multiplier(60.0 / (96 ** 0.5 * 74 * 60))
    attrs = {"strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1, "input_zero_point": -7,
             "output_zero_point": 2, "act_min": -128, "act_max": 127}
    operands = [("x", cases.int8(rng, (1, 24, 40, 40)), False), ("w", cases.int8(rng, (24, 24, 2, 2), -127, 127), True),
                ("bias", rng.integers(-2000, 2000, 24).astype(np.int32), True),
                ("mult", np.full(24, m, np.int32), True), ("shift", np.full(24, s, np.int32), True)]
    return one_call("QConvTranspose2D", operands, attrs)


def _median_ms(blob: bytes, program, feeds, runner: Path, isa: str, repeat: int) -> float:
    _, proc = run_blob(blob, program, feeds, runner, args=("--isa", isa, "--repeat", str(repeat), "--warmup", "3"))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])["latency_ms"]["median"]


def bench_kernels(console: Console) -> list[dict]:
    runner = host_runner()
    rows = []
    for name, (program, feeds, expected) in kernel_cases().items():
        blob = write_blob(program)
        for isa in ("c", "auto"):
            out, proc = run_blob(blob, program, feeds, runner, args=("--isa", isa))
            assert proc.returncode == 0, proc.stderr
            assert_bit_exact(out, expected)
        best = {"c": float("inf"), "auto": float("inf")}
        for _ in range(ROUNDS):
            for isa, so_far in list(best.items()):
                best[isa] = min(so_far, _median_ms(blob, program, feeds, runner, isa, 20))
        rows.append({"kernel": name, "portable_ms": best["c"], "simd_ms": best["auto"],
                     "speedup": best["c"] / best["auto"]})
    table = Table(title="non-GEMM int8 kernels on the host: portable C (--isa c) vs SIMD (--isa auto), one thread")
    for col in ("kernel", "portable ms", "SIMD ms", "speedup"):
        table.add_column(col, justify="left" if col == "kernel" else "right")
    for r in rows:
        table.add_row(r["kernel"], f"{r['portable_ms']:.3f}", f"{r['simd_ms']:.3f}", f"{r['speedup']:.2f}x")
    console.print(table)
    return rows


X86_GEMM_ISAS = ("avx2", "avxvnni", "avx512vnni")


def gemm_cases() -> dict[str, tuple]:
    """Convolutions with the zoo's GEMM shapes (M = output pixels, N = output channels, K = taps)."""
    rng = np.random.default_rng(1)
    pad1 = (1, 1, 1, 1)
    return {
        "resnet stem 3x3 [3 -> 16, 32x32] K=27": cases.conv(rng, c=3, o=16, hw=(32, 32), k=(3, 3), stride=(1, 1), pads=pad1),
        "resnet 3x3 [16 -> 16, 32x32] K=144": cases.conv(rng, c=16, o=16, hw=(32, 32), k=(3, 3), stride=(1, 1), pads=pad1),
        "resnet 3x3 s2 [16 -> 32, 32x32] K=144": cases.conv(rng, c=16, o=32, hw=(32, 32), k=(3, 3), stride=(2, 2), pads=pad1),
        "resnet 3x3 [32 -> 32, 16x16] K=288": cases.conv(rng, c=32, o=32, hw=(16, 16), k=(3, 3), stride=(1, 1), pads=pad1),
        "ppocr 1x1 [96 -> 96, 20x20] K=96": cases.conv(rng, c=96, o=96, hw=(20, 20), k=(1, 1), stride=(1, 1),
                                                       pads=(0, 0, 0, 0)),
        "ppocr 3x3 [96 -> 24, 40x40] K=864": cases.conv(rng, c=96, o=24, hw=(40, 40), k=(3, 3), stride=(1, 1), pads=pad1),
        "ppocr 1x1 [384 -> 384, 5x5] K=384": cases.conv(rng, c=384, o=384, hw=(5, 5), k=(1, 1), stride=(1, 1),
                                                        pads=(0, 0, 0, 0)),
        "lenet 5x5 [6 -> 16, 14x14] K=150": cases.conv(rng, c=6, o=16, hw=(14, 14), k=(5, 5), stride=(1, 1),
                                                       pads=(0, 0, 0, 0)),
    }


def bench_gemm_isas(console: Console) -> list[dict]:
    """The x86 int8 GEMM paths on whole convolutions, interleaved per round, best median each."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    isas = [isa for isa, flag in zip(X86_GEMM_ISAS, ("avx2", "avx_vnni", "avx512_vnni")) if flag in flags]
    if not isas:
        console.print("x86 GEMM paths: skipped (not an x86 CPU with AVX2)")
        return []
    runner = host_runner()
    rows = []
    for name, (program, feeds, expected) in gemm_cases().items():
        blob = write_blob(program)
        for isa in isas:
            out, proc = run_blob(blob, program, feeds, runner, args=("--isa", isa))
            assert proc.returncode == 0, proc.stderr
            assert_bit_exact(out, expected)
        best = dict.fromkeys(isas, float("inf"))
        for _ in range(ROUNDS):
            for isa in isas:
                best[isa] = min(best[isa], _median_ms(blob, program, feeds, runner, isa, 50))
        rows.append({"conv": name, **{f"{isa}_ms": best[isa] for isa in isas},
                     **{f"{isa}_speedup": best["avx2"] / best[isa] for isa in isas[1:]}})
    table = Table(title="int8 convolutions on the host by GEMM path, one thread (median ms, best of rounds; "
                        "speed-up vs avx2)")
    table.add_column("convolution")
    for isa in isas:
        table.add_column(f"{isa} ms", justify="right")
    for r in rows:
        cells = [f"{r[f'{isa}_ms']:.4f}" + (f" ({r[f'{isa}_speedup']:.2f}x)" if isa != "avx2" else "") for isa in isas]
        table.add_row(r["conv"], *cells)
    console.print(table)
    return rows


def bench_models(console: Console, baseline: Path) -> list[dict]:
    from edgekiln.backends.arm_cpu.backend import RUNNER_FILE
    from edgekiln.backends.arm_cpu.backend import lower as lower_arm_cpu
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.integer_lowering import lower_quantized_graph
    from edgekiln.compiler.quant_options import QuantOptions
    from edgekiln.compiler.target import get_target
    from tests.zoo import ZOO_MODELS, input_shapes, model_path, sample_input

    rows = []
    for name in [*ZOO_MODELS, "ppocr_cls", "ppocr_det"]:
        result = compile_model(model_path(name), "host", input_shapes=input_shapes(name), progress=False,
                               quantization=QuantOptions(calib=[sample_input(name, seed=s) for s in range(1, 5)]))
        files, manifest = result.artifact.files, result.artifact.manifest
        unfused = {**files, **lower_arm_cpu(lower_quantized_graph(result.graph), get_target("host"), {})}
        sides = {"before": ArmCpuRunner({**unfused, RUNNER_FILE: baseline.read_bytes()}, manifest),
                 "unfused": ArmCpuRunner(unfused, manifest), "after": ArmCpuRunner(files, manifest)}
        feeds = sample_input(name, seed=3)
        repeat = 5 if name == "ppocr_det" else 50
        best = dict.fromkeys(sides, float("inf"))
        for _ in range(ROUNDS):
            for side, runner in sides.items():
                stats = runner.bench(feeds, repeat=repeat, warmup=2, profile=False)
                best[side] = min(best[side], stats["latency_ms"]["median"])
        rows.append({"model": name, "before_ms": best["before"], "after_unfused_ms": best["unfused"],
                     "after_ms": best["after"], "speedup": best["before"] / best["after"],
                     "fused_blocks": sum(c.op == "QInvertedResidual" for c in result.program.calls)})
    table = Table(title="whole models, int8, host, one thread (median ms, best of rounds): baseline runner and "
                        "unfused Program vs this tree, without and with the fused blocks")
    for col in ("model", "before ms", "after, unfused ms", "after ms", "fused blocks", "speedup"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['before_ms']:.3f}", f"{r['after_unfused_ms']:.3f}", f"{r['after_ms']:.3f}",
                      str(r["fused_blocks"]), f"{r['speedup']:.2f}x")
    console.print(table)
    return rows


def bench_threads(console: Console) -> list[dict]:
    """Whole models as compiled now, 1 vs 2 runtime threads of the same runner, interleaved."""
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.quant_options import QuantOptions
    from tests.zoo import ZOO_MODELS, input_shapes, model_path, sample_input

    rows = []
    for name in [*ZOO_MODELS, "ppocr_cls", "ppocr_det"]:
        result = compile_model(model_path(name), "host", input_shapes=input_shapes(name), progress=False,
                               quantization=QuantOptions(calib=[sample_input(name, seed=s) for s in range(1, 5)]))
        runner = ArmCpuRunner(result.artifact.files, result.artifact.manifest)
        feeds = sample_input(name, seed=3)
        repeat = 10 if name == "ppocr_det" else 50
        best = {1: float("inf"), 2: float("inf")}
        for _ in range(ROUNDS):
            for threads in best:
                stats = runner.bench(feeds, repeat=repeat, warmup=3, threads=threads, profile=False)
                best[threads] = min(best[threads], stats["latency_ms"]["median"])
        rows.append({"model": name, "one_thread_ms": best[1], "two_threads_ms": best[2], "speedup": best[1] / best[2]})
    table = Table(title="whole models, int8, host: 1 vs 2 runtime threads (median ms, best of rounds)")
    for col in ("model", "1 thread ms", "2 threads ms", "speed-up"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['one_thread_ms']:.3f}", f"{r['two_threads_ms']:.3f}", f"{r['speedup']:.2f}x")
    console.print(table)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="an older host ek_run binary to compare whole models against")
    parser.add_argument("--threads", action="store_true", help="also time every model at 1 and 2 runtime threads")
    parser.add_argument("--gemm-only", action="store_true", help="only the x86 GEMM paths on zoo convolutions")
    args = parser.parse_args()
    console = Console(width=140)
    result = {"cpu": os.uname().machine, "note": "shared, loaded machine: compare ratios"}
    if args.gemm_only and RESULTS.exists():  # keep the other sections of the last full run
        result = {**json.loads(RESULTS.read_text()), **result}
    if not args.gemm_only:
        result["kernels"] = bench_kernels(console)
    result["gemm_isas"] = bench_gemm_isas(console)
    if args.baseline:
        result["models"] = bench_models(console, args.baseline)
    if args.threads:
        result["threads"] = bench_threads(console)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if RESULTS.exists():  # the sections not run this time (--baseline, --threads) keep their last results
        previous = json.loads(RESULTS.read_text())
        result.update({k: v for k, v in previous.items() if k in ("models", "threads") and k not in result})
    with tempfile.NamedTemporaryFile("w", dir=RESULTS.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(json.dumps(result, indent=2) + "\n")
    os.replace(tmp.name, RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
