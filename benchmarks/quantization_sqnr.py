"""INT8 output SQNR vs the float model: edgekiln against onnxruntime's `quantize_static`, plus calibration cost.

    python -m benchmarks.quantization_sqnr [--models lenet_mnist,ppocr_det] [--calib 16] [--eval 8] [--no-cost]

Both tools quantize W8A8 from the same calibration inputs and are scored on the same
evaluation inputs (`benchmarks.quantization_data`: training images / held-out images for the
trained models, distinct seeds elsewhere), SQNR in dB over all outputs:

* edgekiln: `compile_model(scoring_target(), quantization=QuantOptions("int8", ...))` (the host
  pipeline, lowered to the integer Program: `quantization_data.scoring_target`), scored with its
  integer reference interpreter (`artifact.run`, what the artifact computes) and its QDQ float
  reference (`result.graph` in onnxruntime, optimizations off).  Default = `QuantOptions`'
  defaults: mse ranges, bias correction, graph outputs of weighted layers kept float (exact
  int32 accumulator x one float32 scale); best = the best integer SQNR over calib method
  {minmax, percentile, entropy, mse} x cross-layer equalization {off, on} x bias correction
  {off, on}, all with float outputs.  "legacy" = the defaults before (minmax, no extras, every
  output quantized to int8 as ORT does), reported alongside.
* onnxruntime: `quantize_static(QDQ, per_channel=True, activation QInt8 (asymmetric),
  weight QInt8 (symmetric), MinMax)` on the model as edgekiln's frontend loads it with the
  input shapes pinned, after `quant_pre_process` (symbolic shape inference, ORT's graph
  optimizer - which folds BatchNorm into Conv - and ONNX shape inference), as ORT recommends.
  Scored as ORT runs it (a session with its default optimizations: the QDQ pairs become
  ORT's integer kernels where it has them) and as written (optimizations off: the float
  reference).  Default = MinMax; best = the best "as run" SQNR over MinMax, Entropy, Percentile.
  Note: quantize_static passes no histogram size to its Entropy calibrator, whose defaults
  (128 bins, 128 quantized bins) leave the KL search a single candidate, the whole range: its
  Entropy ranges come out identical to MinMax.  Percentile (99.999) uses symmetric ranges.

The best configurations are picked on the evaluation inputs themselves, for both tools alike
(an oracle choice, so "best" is an upper bound for both).

Cost (unless --no-cost; for the --cost-methods, default minmax and entropy): each tool's
whole quantizing call (edgekiln: compile_model with that method and no bias correction, which
also optimizes and lowers to the integer program; ORT: quantize_static, its calibration
included, pre-processing excluded)
in a fresh subprocess pinned to core 0 with `taskset`,
calibration data already in memory, so both run single-threaded on the same data.  To keep
the run short the subprocesses run while the SQNR grid works on the other cores (so they
share caches and memory bandwidth with it, both tools alike); `--serial-cost` runs them on
an otherwise idle machine instead.

    time      wall seconds of the call, the fastest of 3 calls in a row
    RSS peak  VmHWM - VmRSS before the first call (the high-water mark reset by writing 5 to
              /proc/self/clear_refs): all memory, native onnxruntime buffers included
    py peak   tracemalloc's peak in a fourth, traced call: Python and numpy allocations
              only (onnxruntime's own C++ buffers are invisible to it)

Writes benchmarks/results/quantization_sqnr.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benchmarks.quantization_data import (
    artifact_runner,
    calibration_feeds,
    evaluation_feeds,
    ort_session,
    outputs,
    scoring_target,
    sqnr_db,
)

RESULTS = Path(__file__).parent / "results" / "quantization_sqnr.json"
EDGEKILN_METHODS = ("minmax", "percentile", "entropy", "mse")
ORT_METHODS = ("MinMax", "Entropy", "Percentile")
COST_CORE = 0
WORKER_IMPORTS = ("onnxruntime.quantization", "edgekiln.calibration", "edgekiln.compiler.compile",
                  "edgekiln.compiler.integer_lowering", "edgekiln.passes.quantize_graph")
TIMED_CALLS = 3  # the time reported is the fastest of these (the first one also sets the RSS peak)
COST_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # edgekiln -> ORT


# -- quantizing ------------------------------------------------------------------------------------

def edgekiln_quantize(path: str | Path, shapes: dict, calib: list, method: str = "mse", equalize: bool = False,
                      bias_correction: bool = True, float_outputs: bool = True):
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.quant_options import QuantOptions

    options = QuantOptions(quant="int8", calib=calib, calib_method=method, equalize=equalize,
                           bias_correction=bias_correction, float_outputs=float_outputs)
    return compile_model(path, scoring_target(), check_ops=False, input_shapes=shapes, quantization=options, progress=False)


def ort_quantize(source: Path, target: Path, calib: list, method: str, weight_type: str = "QInt8") -> None:
    """quantize_static, QDQ, per channel, QInt8 activations, `weight_type` weights (QInt8 or QInt4)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self):
            return next(self.items, None)

    # quantize_static prints its histogram settings, and warns for every 1-D weight (a LayerNorm or
    # BatchNorm scale) that has no axis 1 to quantize per channel along: noise here, not results.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=getattr(QuantType, weight_type),
                            calibrate_method=getattr(CalibrationMethod, method))
    finally:
        root.setLevel(level)


def prepare_for_ort(name: str, folder: Path) -> tuple[Path, str]:
    """The frontend-loaded model with pinned input shapes, through `quant_pre_process` when it succeeds."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekiln.compiler.frontend import load_model
    from tests.zoo import input_shapes, model_path

    pinned = folder / f"{name}.pinned.onnx"
    onnx.save(load_model(model_path(name), input_shapes(name)).to_proto(), pinned)
    prepared = folder / f"{name}.pre.onnx"
    try:
        quant_pre_process(str(pinned), str(prepared))
    except Exception as exc:  # noqa: BLE001 - report and quantize the pinned model instead
        return pinned, f"quant_pre_process failed ({type(exc).__name__}: {exc}); pinned model used as is"
    return prepared, "pinned shapes + quant_pre_process"


# -- scoring ---------------------------------------------------------------------------------------

class Scorer:
    """Float outputs of the evaluation inputs, and the SQNR of a quantized model against them."""

    def __init__(self, name: str, feeds: list) -> None:
        from tests.zoo import model_path

        session = ort_session(model_path(name).read_bytes())
        self.names = [o.name for o in session.get_outputs()]
        self.feeds = feeds
        self.reference = outputs(lambda f: session.run(None, f), feeds)

    def ort(self, model: bytes, optimize: bool) -> float:
        session = ort_session(model, optimize)
        names = [o.name for o in session.get_outputs()]
        order = [names.index(n) for n in self.names] if set(self.names) <= set(names) else range(len(names))
        return sqnr_db(self.reference, outputs(lambda f: [session.run(None, f)[i] for i in order], self.feeds))

    def artifact(self, artifact) -> float:
        return sqnr_db(self.reference, outputs(artifact_runner(artifact, self.names), self.feeds))


def edgekiln_label(method: str, equalize: bool, bias_correction: bool, float_outputs: bool = True) -> str:
    return "+".join([method, *(["equalize"] if equalize else []), *(["bias-corr"] if bias_correction else []),
                     *([] if float_outputs else ["int8-outputs"])])


DEFAULT_CONFIG = edgekiln_label("mse", False, True)
LEGACY_CONFIG = edgekiln_label("minmax", False, False, float_outputs=False)


def edgekiln_grid(name: str, calib: list, scorer: Scorer, methods=EDGEKILN_METHODS, progress=None, task=None) -> list:
    from tests.zoo import input_shapes, model_path

    rows = []
    configs = [(*c, True) for c in product(methods, (False, True), (False, True))] + [("minmax", False, False, False)]
    for method, equalize, bias_correction, float_outputs in configs:
        row = {"config": edgekiln_label(method, equalize, bias_correction, float_outputs), "method": method,
               "equalize": equalize, "bias_correction": bias_correction, "float_outputs": float_outputs}
        try:
            result = edgekiln_quantize(model_path(name), input_shapes(name), calib, method, equalize, bias_correction,
                                       float_outputs)
            row.update(sqnr_integer=scorer.artifact(result.artifact),
                       sqnr_qdq=scorer.ort(result.graph.to_bytes(), False))
        except Exception as exc:  # noqa: BLE001 - a failing configuration is a result to report
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        if progress is not None:
            progress.advance(task)
    return rows


def ort_grid(name: str, calib: list, scorer: Scorer, source: Path, folder: Path, methods=ORT_METHODS,
             progress=None, task=None) -> list:
    rows = []
    for method in methods:
        row = {"config": method, "method": method}
        target = folder / f"{name}.ort.{method}.onnx"
        try:
            ort_quantize(source, target, calib, method)
            model = target.read_bytes()
            row.update(sqnr_run=scorer.ort(model, True), sqnr_qdq=scorer.ort(model, False))
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        if progress is not None:
            progress.advance(task)
    return rows


def _best(rows: list, key: str) -> dict:
    scored = [r for r in rows if key in r]
    return max(scored, key=lambda r: r[key]) if scored else {"config": "-", key: float("nan")}


# -- cost: one subprocess per measurement ------------------------------------------------------------

def status_kib(field: str) -> int:
    """A /proc/self/status field in KiB (VmRSS, VmHWM, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(spec: dict) -> dict:
    """Time one quantizing call and measure its memory (module docstring); runs in a fresh subprocess."""
    for module in WORKER_IMPORTS:  # loaded before measuring: importing is not what is measured
        importlib.import_module(module)

    with np.load(spec["calib_file"]) as data:
        stacked = {k: data[k] for k in data.files}
    count = len(next(iter(stacked.values())))
    calib = [{k: v[i:i + 1] for k, v in stacked.items()} for i in range(count)]
    shapes = {k: tuple(v) for k, v in spec["shapes"].items()}
    out = Path(spec["out_dir"])

    def call() -> None:
        if spec["tool"] == "edgekiln":
            # The calibration method's cost, as before: no bias correction (one more float pass).
            edgekiln_quantize(spec["model_file"], shapes, calib, spec["method"], bias_correction=False)
        else:
            ort_quantize(Path(spec["model_file"]), out / "cost.onnx", calib, spec["method"])

    reset = _reset_high_water()
    before = status_kib("VmRSS")
    times = []
    for _ in range(TIMED_CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if len(times) == 1:  # the first call's high-water mark: later calls reuse what it left allocated
            rss_peak = status_kib("VmHWM") - before
    tracemalloc.start()
    call()
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": min(times), "all_seconds": times, "rss_peak_mib": rss_peak / 1024,
            "py_peak_mib": py_peak / 2**20, "rss_reset": reset}


def measure_cost(tool: str, name: str, method: str, model_file: Path, calib_file: Path, folder: Path) -> dict:
    from tests.zoo import input_shapes

    spec = {"tool": tool, "method": method, "model_file": str(model_file), "calib_file": str(calib_file),
            "shapes": {k: list(v) for k, v in input_shapes(name).items()}, "out_dir": str(folder),
            "result": str(folder / "cost.json")}
    pin = ["taskset", "-c", str(COST_CORE)] if shutil.which("taskset") else []
    done = subprocess.run([*pin, sys.executable, "-m", "benchmarks.quantization_sqnr", "--worker", json.dumps(spec)],
                          cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr.strip() else "worker failed"}
    return {**json.loads(Path(spec["result"]).read_text()), "pinned_to_one_core": bool(pin)}


# -- per model -------------------------------------------------------------------------------------

def measure(name: str, calib_count: int, eval_count: int, cost: bool = True, edgekiln_methods=EDGEKILN_METHODS,
            ort_methods=ORT_METHODS, cost_methods=tuple(COST_METHODS), cost_alongside: bool = True,
            progress: Progress | None = None) -> dict:
    """One model's row; with `cost_alongside` the cost subprocesses run while the SQNR grid does."""
    from tests.zoo import model_path

    calib = calibration_feeds(name, calib_count)
    feeds = evaluation_feeds(name, eval_count)
    scorer = Scorer(name, feeds)
    steps = 4 * len(edgekiln_methods) + 1 + len(ort_methods) + (2 * len(cost_methods) if cost else 0)
    task = progress.add_task(name, total=steps) if progress is not None else None

    def advance() -> None:
        if progress is not None:
            progress.advance(task)

    with tempfile.TemporaryDirectory(prefix="ek-sqnr-") as tmp, ThreadPoolExecutor(1) as pool:
        folder = Path(tmp)
        source, prep_note = prepare_for_ort(name, folder)
        jobs = []
        # The cost subprocesses get a folder and a model copy of their own: quantize_static writes
        # "<model>-inferred.onnx" next to its input, which must not race with the grid's calls.
        cost_folder = folder / "cost"
        if cost:
            cost_folder.mkdir()
            calib_file = cost_folder / "calib.npz"
            np.savez(calib_file, **{k: np.concatenate([c[k] for c in calib]) for k in calib[0]})
            ort_source = cost_folder / source.name
            shutil.copyfile(source, ort_source)
            for method in cost_methods:
                jobs.append((f"edgekiln/{method}", "edgekiln", method, model_path(name)))
                jobs.append((f"ort/{COST_METHODS[method]}", "ort", COST_METHODS[method], ort_source))

        def run_jobs() -> dict:
            results = {}
            for key, tool, method, model_file in jobs:
                results[key] = measure_cost(tool, name, method, model_file, calib_file, cost_folder)
                advance()
            return results

        clock = time.perf_counter()
        pending = pool.submit(run_jobs) if jobs and cost_alongside else None
        ek = edgekiln_grid(name, calib, scorer, edgekiln_methods, progress, task)
        seconds = {"edgekiln_grid": time.perf_counter() - clock}
        ort_rows = ort_grid(name, calib, scorer, source, folder, ort_methods, progress, task)
        seconds["ort_grid"] = time.perf_counter() - clock - seconds["edgekiln_grid"]
        costs = pending.result() if pending is not None else run_jobs()
        seconds["total"] = time.perf_counter() - clock
    default_ek = next(r for r in ek if r["config"] == DEFAULT_CONFIG)
    legacy_ek = next(r for r in ek if r["config"] == LEGACY_CONFIG)
    default_ort = next(r for r in ort_rows if r["config"] == "MinMax")
    return {"model": name, "calib_samples": len(calib), "eval_samples": len(feeds), "ort_input": prep_note,
            "edgekiln_default": default_ek, "edgekiln_legacy": legacy_ek,
            "edgekiln_best": _best([r for r in ek if r["float_outputs"]], "sqnr_integer"),
            "ort_default": default_ort, "ort_best": _best(ort_rows, "sqnr_run"),
            "edgekiln_grid": ek, "ort_grid": ort_rows, "cost": costs, "benchmark_seconds": seconds}


# -- report ----------------------------------------------------------------------------------------

def _db(row: dict, key: str) -> str:
    return "error" if key not in row else f"{row[key]:.2f}"


def render(rows: list[dict]) -> Table:
    table = Table(title="INT8 output SQNR vs FP32, dB (ek int = edgekiln integer reference, ORT run = ORT session "
                        "with its optimizations; qdq = QDQ float reference, ORT optimizations off)")
    for column in ("model", "ek default int / qdq", "ORT default run / qdq", "Δ int-run / qdq", "ek legacy int (Δ)",
                   "ek best (config)", "int / qdq", "ORT best (method)", "run / qdq", "Δ int-run / qdq"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        cells = [r["model"]]
        legacy = r.get("edgekiln_legacy", {})
        for best in (False, True):
            ek, theirs = (r["edgekiln_best"], r["ort_best"]) if best else (r["edgekiln_default"], r["ort_default"])
            cells += [ek["config"]] if best else []
            cells.append(f"{_db(ek, 'sqnr_integer')} / {_db(ek, 'sqnr_qdq')}")
            cells += [theirs["config"]] if best else []
            cells.append(f"{_db(theirs, 'sqnr_run')} / {_db(theirs, 'sqnr_qdq')}")
            cells.append(_delta(ek, theirs))
            if not best:
                delta = (f" ({legacy['sqnr_integer'] - theirs['sqnr_run']:+.2f})"
                         if "sqnr_integer" in legacy and "sqnr_run" in theirs else "")
                cells.append(f"{_db(legacy, 'sqnr_integer')}{delta}")
        table.add_row(*cells)
    return table


def _delta(ek: dict, ort_row: dict) -> str:
    if "error" in ek or "error" in ort_row:
        return "-"
    return f"{ek['sqnr_integer'] - ort_row['sqnr_run']:+.2f} / {ek['sqnr_qdq'] - ort_row['sqnr_qdq']:+.2f}"


def render_cost(rows: list[dict]) -> Table:
    table = Table(title="calibration + quantization cost, one core: edgekiln compile_model vs ORT quantize_static")
    for column in ("model", "method", "time s ek / ORT", "RSS peak MiB ek / ORT", "py peak MiB ek / ORT"):
        table.add_column(column, justify="left" if column in ("model", "method") else "right")
    for r in rows:
        for method, ort_method in COST_METHODS.items():
            ek, theirs = r["cost"].get(f"edgekiln/{method}"), r["cost"].get(f"ort/{ort_method}")
            if ek is None or theirs is None:
                continue
            cells = [r["model"], method]
            for key, fmt in (("seconds", ".2f"), ("rss_peak_mib", ".1f"), ("py_peak_mib", ".1f")):
                a, b = ek.get(key), theirs.get(key)
                cells.append(f"{a:{fmt}} / {b:{fmt}}" if a is not None and b is not None else "error")
            table.add_row(*cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated (default: every zoo and PP-OCR model)")
    parser.add_argument("--calib", type=int, default=None,
                        help="calibration samples (default: 128 training images for the trained models, 16 otherwise)")
    parser.add_argument("--eval", type=int, default=None,
                        help="evaluation samples (default: 200 held-out images for the trained models, 8 otherwise)")
    parser.add_argument("--no-cost", action="store_true", help="skip the time / memory subprocesses")
    parser.add_argument("--cost-methods", default="minmax,entropy",
                        help=f"calibration methods whose cost is measured, of {','.join(COST_METHODS)}")
    parser.add_argument("--serial-cost", action="store_true",
                        help="measure cost after each model's SQNR grid instead of alongside it on another core")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        Path(spec["result"]).write_text(json.dumps(worker(spec)))
        return
    from tests.zoo import TRAINED_MODELS, all_models

    names = args.models.split(",") if args.models else all_models()
    others = os.sched_getaffinity(0) - {COST_CORE}
    alongside = not args.serial_cost and bool(others)
    if alongside:  # the cost subprocesses get core 0 to themselves; the SQNR grid runs on the others
        os.sched_setaffinity(0, others)
    rows = []
    with Progress() as progress:
        for name in names:
            trained = name in TRAINED_MODELS
            calib = args.calib or (128 if trained else 16)
            count = args.eval or (200 if trained else 8)
            rows.append(measure(name, calib, count, cost=not args.no_cost, progress=progress,
                                cost_methods=tuple(args.cost_methods.split(",")), cost_alongside=alongside))
    console = Console(width=200)
    console.print(render(rows))
    if not args.no_cost:
        console.print(render_cost(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    setup = {"edgekiln_default": "int8, QuantOptions defaults: mse ranges, bias correction, float graph outputs",
             "edgekiln_legacy": "int8, minmax, no equalization / bias correction, int8 graph outputs",
             "ort_default": "quantize_static QDQ, per_channel, QInt8 activations and weights, MinMax",
             "cost": ("alongside the SQNR grid" if alongside else "serial")
             + f", subprocesses pinned to core {COST_CORE}",
             "load_average_at_end": os.getloadavg(), "cpus": os.cpu_count()}
    RESULTS.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
