"""Host latency: the edgekiln runtime (INT8 / INT4 / ternary) against onnxruntime FP32 / INT8 and TVM.

    python -m benchmarks.arm_runtime_vs_peers                       # zoo models + ppocr_det, 1 and 2 threads
    python -m benchmarks.arm_runtime_vs_peers --quick               # 3 small models, fewer runs, no TVM tuning
    python -m benchmarks.arm_runtime_vs_peers --models digits_cnn,ppocr_det --threads 1 --tvm-trials 64

Engines, all on this machine's CPU (the `host` target: x86_64; the runtime picks its GEMM path at run
time, avx512vnni > avxvnni > avx2, shown per engine in the notes):

* edgekiln int8 / int4 / ternary: `edgekiln.compile(..., "host", quant=...)` (calibrated on 4 sample
  inputs), run by the artifact's own `ek_run` (`--repeat N --warmup 1 --threads T`): the runner's
  latency median, model load and process start excluded.
* ORT fp32: onnxruntime on the model as edgekiln's frontend loads it with its input shapes pinned
  (+ `quant_pre_process`), all graph optimizations on.
* ORT int8: that model through onnxruntime's own `quantize_static` (QDQ, per-channel, MinMax, the
  same 4 calibration inputs; `benchmarks.quantization_sqnr.ort_quantize`), optimizations on, so
  the QDQ pairs run as ORT's integer kernels.
* TVM: the float model through `tvm.relax.frontend.onnx` (TVM runs QDQ graphs in float, so its
  input is the FP32 model), built for llvm with this CPU's `-mcpu`: untuned (default schedules),
  and with a short MetaSchedule tuning budget (`--tvm-trials`, random cost model) when given.
  Skipped with a note when the `tvm` extra is not installed.

Timing: for each thread count, `--rounds` rounds; each round runs every engine once for a block of
`--runs` inferences in turn (interleaved, so load changes on a shared machine hit all engines
alike); an engine's latency is the median of its block medians.  ORT and TVM blocks time each
`run()` call with `perf_counter`.  Ratios are `ORT int8 latency / engine latency` (> 1: faster
than ORT int8).  Writes benchmarks/results/arm_runtime_vs_peers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results" / "arm_runtime_vs_peers.json"
EDGEKILN_PRECISIONS = {"edgekiln int8": "int8", "edgekiln int4": "int4:g32", "edgekiln ternary": "ternary"}
QUICK_MODELS = ("digits_cnn", "inverted_residual", "ppocr_det")
BASELINE = "ORT int8"
console = Console(width=160)


class Engine:
    """A prepared model for one engine: `block(threads, runs)` returns the block's median ms."""

    def __init__(self, name: str, block: Callable[[int, int], float], note: str = "") -> None:
        self.name, self.block, self.note = name, block, note


def edgekiln_engine(name: str, model: str, precision: str) -> Engine:
    import edgekiln
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from tests.zoo import input_shapes, model_path, sample_input

    artifact = edgekiln.compile(model_path(model), "host", input_shapes=input_shapes(model), quant=precision,
                                calib=[sample_input(model, seed=s) for s in range(1, 5)], progress=False)
    runner = ArmCpuRunner(artifact.files, artifact.manifest, transport="local")
    feeds = artifact._check_inputs(sample_input(model, seed=0))

    def block(threads: int, runs: int) -> float:
        stats = runner.bench(feeds, repeat=runs, warmup=1, threads=threads, profile=False)
        return stats["latency_ms"]["median"]

    return Engine(name, block, f"isa {runner.bench(feeds, repeat=1, warmup=0, profile=False)['isa']}")


def _timed_block(run: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def ort_engines(model: str, folder: Path) -> list[Engine]:
    import onnx
    import onnxruntime as ort

    from benchmarks.quantization_sqnr import ort_quantize, prepare_for_ort
    from tests.zoo import sample_input

    prepared, how = prepare_for_ort(model, folder)
    quantized = folder / f"{model}.ort_int8.onnx"
    ort_quantize(prepared, quantized, [sample_input(model, seed=s) for s in range(1, 5)], "MinMax")
    feeds = sample_input(model, seed=0)

    def session_block(path: Path) -> Callable[[int, int], float]:
        sessions: dict[int, ort.InferenceSession] = {}  # one per thread count, this model file only

        def block(threads: int, runs: int) -> float:
            if threads not in sessions:
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3
                sessions[threads] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                sessions[threads].run(None, feeds)  # warm-up
            session = sessions[threads]
            return _timed_block(lambda: session.run(None, feeds), runs)

        return block

    quantized_ops = sum(n.op_type == "QuantizeLinear" for n in onnx.load(quantized).graph.node)
    return [Engine("ORT fp32", session_block(prepared), how),
            Engine("ORT int8", session_block(quantized), f"{how}; {quantized_ops} QuantizeLinear nodes")]


def tvm_engines(model: str, trials: int, folder: Path) -> list[Engine]:
    from edgekiln.optional import require

    tvm = require("tvm", "tvm", "the TVM baseline")
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from tests.zoo import input_shapes, model_path, sample_input

    mod = from_onnx(onnx.load(model_path(model)), shape_dict={k: list(v) for k, v in input_shapes(model).items()},
                    keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.transform.LegalizeOps()(mod)
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-pc-linux-gnu", "mcpu": cpu,
                                "num-cores": os.cpu_count() or 1})
    device = tvm.cpu()
    feeds = sample_input(model, seed=0)
    config_threads = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)

    def engine(name: str, executable, note: str) -> Engine:
        vm = relax.VirtualMachine(executable, device)
        args = [tvm.runtime.tensor(v, device) for v in feeds.values()]
        vm["main"](*args)

        def block(threads: int, runs: int) -> float:
            if config_threads is not None:
                config_threads(0, threads)  # affinity mode 0 (big cores), `threads` workers
            return _timed_block(lambda: vm["main"](*args), runs)

        return Engine(name, block, note)

    engines = [engine("TVM untuned", tvm.compile(mod, target=target), f"llvm -mcpu={cpu}, default schedules")]
    if trials > 0:
        import tvm.s_tir.meta_schedule as ms

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=folder) as work_dir:
            # One build worker and generous timeouts: with the default (a worker per core, 30 s) every
            # candidate's build timed out on this shared 2-core machine and no trial ever ran.
            database = ms.relax_integration.tune_relax(
                mod, {}, target, work_dir, max_trials_global=trials, num_trials_per_iter=16, cost_model="random",
                builder=ms.builder.LocalBuilder(max_workers=1, timeout_sec=300),
                runner=ms.runner.LocalRunner(timeout_sec=120))
            tuned = ms.relax_integration.compile_relax(database, mod, target, None)
        engines.append(engine("TVM tuned", tuned, f"MetaSchedule {trials} trials, {time.perf_counter() - start:.0f} s"))
    return engines


def prepare(model: str, folder: Path, tvm_trials: int, use_tvm: bool) -> tuple[list[Engine], dict[str, str]]:
    """Every engine that builds for `model`; the others with the reason they are missing."""
    engines, skipped = [], {}
    builders: list[tuple[str, Callable[[], list[Engine]]]] = [
        (name, lambda n=name, p=p: [edgekiln_engine(n, model, p)]) for name, p in EDGEKILN_PRECISIONS.items()]
    builders.append(("ORT", lambda: ort_engines(model, folder)))
    if use_tvm:
        builders.append(("TVM", lambda: tvm_engines(model, tvm_trials, folder)))
    for name, build in builders:
        console.print(f"  preparing {model}: {name}")
        try:
            engines += build()
        except Exception as exc:  # noqa: BLE001 - one engine failing must not stop the others
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
    return engines, skipped


def measure(engines: list[Engine], threads: int, rounds: int, runs: int) -> dict[str, float]:
    blocks: dict[str, list[float]] = {e.name: [] for e in engines}
    for _ in range(rounds):
        for engine in engines:  # interleaved: every engine once per round
            blocks[engine.name].append(engine.block(threads, runs))
    return {name: statistics.median(values) for name, values in blocks.items()}


def main() -> None:
    from tests.zoo import PPOCR_MODELS, ZOO_MODELS  # noqa: F401 - PPOCR for the model list help

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: every zoo model + ppocr_det)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--runs", type=int, default=20, help="inferences per block (default 20)")
    parser.add_argument("--tvm-trials", type=int, default=0,
                        help="MetaSchedule trials per model for 'TVM tuned' (default 0: untuned only)")
    parser.add_argument("--no-tvm", action="store_true", help="skip TVM")
    parser.add_argument("--quick", action="store_true", help=f"{', '.join(QUICK_MODELS)}; 3 rounds of 10 runs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    models = args.models.split(",") if args.models else (list(QUICK_MODELS) if args.quick else
                                                         [*ZOO_MODELS, "ppocr_det"])
    rounds, runs = (3, 10) if args.quick else (args.rounds, args.runs)
    threads_list = [int(t) for t in args.threads.split(",")]
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "loaded": "timings taken on a shared machine; compare ratios within a run"},
               "rounds": rounds, "runs": runs, "baseline": BASELINE, "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgekiln-peers-") as tmp:
        for model in models:
            engines, skipped = prepare(model, Path(tmp), args.tvm_trials, not args.no_tvm)
            entry = {"notes": {e.name: e.note for e in engines}, "skipped": skipped, "latency_ms": {}}
            for threads in threads_list:
                console.print(f"  timing {model}, {threads} thread(s)")
                entry["latency_ms"][str(threads)] = measure(engines, threads, rounds, runs)
            results["models"][model] = entry
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(results, indent=2) + "\n")  # partial results survive a crash
    render(results, threads_list)
    console.print(f"wrote {args.output}")


def render(results: dict, threads_list: list[int]) -> None:
    names = list(EDGEKILN_PRECISIONS) + ["ORT fp32", "ORT int8", "TVM untuned", "TVM tuned"]
    present = [n for n in names if any(n in m["latency_ms"][str(t)] for m in results["models"].values()
                                       for t in threads_list)]
    for threads in threads_list:
        table = Table(title=f"host latency, {threads} thread(s): ms (speed-up vs {BASELINE}; > 1 = faster)",
                      title_justify="left")
        table.add_column("model")
        for name in present:
            table.add_column(name, justify="right")
        for model, entry in results["models"].items():
            lat = entry["latency_ms"][str(threads)]
            base = lat.get(BASELINE)
            cells = []
            for name in present:
                if name not in lat:
                    cells.append("n/a")
                    continue
                ratio = f" ({base / lat[name]:.2f}x)" if base and name != BASELINE else ""
                cells.append(f"{lat[name]:.3f}{ratio}")
            table.add_row(model, *cells)
        console.print(table)
    for model, entry in results["models"].items():
        for name, why in entry["skipped"].items():
            console.print(f"note: {model}: {name} skipped: {why}", soft_wrap=True)
    console.print("note: " + results["machine"]["loaded"])


if __name__ == "__main__":
    main()
