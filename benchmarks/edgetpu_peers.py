"""edgekiln's Edge TPU .tflite vs the peer converters that run offline, for the zoo CNNs.

    python -m benchmarks.edgetpu_peers     # prints a table, writes benchmarks/results/edgetpu_peers.json
        [--peer-python PY]     a Python with litert-torch installed (default: $EDGEKILN_PEER_PYTHON,
                               else this one if it imports litert_torch)
        [--onnx2tf-python PY]  a Python with onnx2tf + TensorFlow (default: $EDGEKILN_ONNX2TF_PYTHON)
        [--models a,b] [--rounds N] [--cache DIR]   (--cache: the peers' files only; edgekiln's is always
                                                     compiled by the tree being measured)
        [--converters edgekiln,litert-torch,onnx2tf[,edgekiln-no-tpu-rewrites]] [--results PATH]

    The PP-OCR models (no torch model for litert-torch) with and without edgekiln's numeric TPU rewrites:
    python -m benchmarks.edgetpu_peers --models ppocr_cls,ppocr_det --converters edgekiln,edgekiln-no-tpu-rewrites \
        --rounds 60 --results benchmarks/results/edgetpu_rewrites.json

Converters, each fully int8 with per-channel weights and the same 4 calibration samples:

* edgekiln: `compile_model(model.onnx, "edgetpu", quant int8)` -> model.tflite;
* litert-torch: the zoo's torch model, PT2E-quantized (symmetric, per channel) and converted
  by `litert_torch.convert` — run in its own interpreter (`--peer-python`): litert-torch pulls
  jax, transformers and torchao, which do not belong in edgekiln's environment;
* onnx2tf: the same ONNX file through onnx2tf's full-integer quantization (needs TensorFlow;
  its own interpreter too, because it pins numpy / onnx / onnxruntime below edgekiln's);
* edgekiln-no-tpu-rewrites (only when asked): edgekiln without hard-swish-to-hard-sigmoid-mul and
  the Relu folding (`tflite_agreement.without_numeric_rewrites`), to show what they buy.

Per file: ops, TRANSPOSE and DEQUANTIZE left, the share of ops and of MACs the Edge TPU maps
(edgekiln's report, Coral's documented rules: the same judge for every file), file size, and
the LiteRT CPU latency (default op resolver, 1 thread, median of single invokes over interleaved rounds, all
files in the same process, so the ratios to edgekiln are the numbers to read: the machine is
shared and loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "edgetpu_peers.json"
ROOT = Path(__file__).resolve().parent.parent
CNN_MODELS = ("lenet_mnist", "digits_cnn", "inverted_residual", "resnet_basic", "repvgg", "mobileone",
              "se_hardswish")
CALIBRATION_SEEDS = range(1, 5)
PEERS = ("litert-torch", "onnx2tf")   # run in their own interpreters; their files may be cached


# -- converters -------------------------------------------------------------------------------------

def convert_edgekiln(name: str) -> bytes:
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.quant_options import QuantOptions
    from tests.zoo import input_shapes, model_path, sample_input

    calib = [sample_input(name, seed=s) for s in CALIBRATION_SEEDS]
    result = compile_model(model_path(name), "edgetpu", input_shapes=input_shapes(name),
                           quantization=QuantOptions(quant="int8", calib=calib), progress=False)
    return result.artifact.files["model.tflite"]


def convert_edgekiln_without_rewrites(name: str) -> bytes:
    from benchmarks.tflite_agreement import without_numeric_rewrites

    with without_numeric_rewrites():
        return convert_edgekiln(name)


def _litert_torch_child(name: str, out: str) -> None:
    """Runs inside --peer-python: PT2E int8 quantization + litert_torch.convert of zoo model `name`."""
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    from tests.zoo.build import zoo_sample_input, zoo_torch_model

    samples = [torch.from_numpy(zoo_sample_input(name, seed=s)["input"]) for s in CALIBRATION_SEEDS]
    exported = torch.export.export(zoo_torch_model(name), (samples[0],)).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    for sample in samples:
        prepared(sample)
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(quantized, (samples[0],), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(out)


def convert_litert_torch(name: str, python: str, folder: Path) -> bytes:
    out = folder / f"{name}_litert_torch.tflite"
    _run_child(python, ["--litert-torch-child", name, str(out)])
    return out.read_bytes()


def convert_onnx2tf(name: str, python: str, folder: Path) -> bytes:
    import numpy as np

    from tests.zoo import model_path, sample_input

    calib = np.concatenate([sample_input(name, seed=s)["input"] for s in CALIBRATION_SEEDS])
    # onnx2tf calibrates on NHWC data and normalizes it with mean/std: identity here.
    calib_file = folder / f"{name}_calib.npy"
    np.save(calib_file, calib.transpose(0, 2, 3, 1))
    out = folder / f"{name}_onnx2tf"
    # For 3-channel inputs onnx2tf checks its outputs on sample images it downloads from GitHub unless
    # this file is in its working folder: give it local data, so the conversion runs offline.
    sample_images = folder / "calibration_image_sample_data_20x128x128x3_float32.npy"
    if not sample_images.exists():
        np.save(sample_images, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    # onnx2tf runs onnxsim on its input IN PLACE (BatchNorm folded, file overwritten): hand it a copy,
    # never the zoo's cached model.
    source = folder / f"{name}.onnx"
    shutil.copyfile(model_path(name), source)
    _run_child(python, ["-m", "onnx2tf", "-i", str(source), "-o", str(out), "-oiqt", "-qt", "per-channel",
                        "-cind", "input", str(calib_file), "[[[[0.0]]]]", "[[[[1.0]]]]", "-n"], script=False,
               cwd=folder)
    (found,) = sorted(out.glob("*_full_integer_quant.tflite"))
    return found.read_bytes()


def _run_child(python: str, args: list[str], script: bool = True, cwd: Path | None = None) -> None:
    command = [python, str(Path(__file__).resolve()), *args] if script else [python, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False, cwd=cwd)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(" | ".join(tail) or f"exit status {done.returncode}")


# -- measurements -----------------------------------------------------------------------------------

def describe(tflite: bytes) -> dict:
    from edgekiln.backends.edgetpu.compatibility_model import read_tflite_graph
    from edgekiln.backends.edgetpu.report import report_from_tflite

    ops = [op.name for op in read_tflite_graph(tflite).ops]
    report = report_from_tflite(tflite)
    return {"ops": len(ops), "transpose": ops.count("TRANSPOSE"), "dequantize": ops.count("DEQUANTIZE"),
            "quantize": ops.count("QUANTIZE"), "tpu_op_share": round(report.op_share_tpu, 4),
            "tpu_mac_share": round(report.mac_share_tpu, 4),
            "segment_end": report.segment_end["op"] if report.segment_end else None,
            "file_bytes": len(tflite), "estimated_tpu_ms": round(report.estimate.total_ms, 4)}


def measure_latency(files: dict[tuple[str, str], bytes], rounds: int) -> dict[tuple[str, str], float]:
    """Median ms of single invokes, every file invoked once per round, rounds interleaved (a burst of load
    from other processes then hits every file alike, and the median drops it)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for key, data in files.items():
        interpreter = Interpreter(model_content=data, num_threads=1)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            rng = np.random.default_rng(0)
            info = np.iinfo(detail["dtype"]) if np.issubdtype(detail["dtype"], np.integer) else None
            value = (rng.integers(info.min, info.max + 1, detail["shape"]) if info is not None
                     else rng.standard_normal(detail["shape"]))
            interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
        for _ in range(3):
            interpreter.invoke()
        interpreters[key] = interpreter
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in files}
    for _ in range(rounds):
        for key, interpreter in interpreters.items():
            start = time.perf_counter()
            interpreter.invoke()
            samples[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(values) for key, values in samples.items()}


def _default_peer_python() -> str | None:
    if os.environ.get("EDGEKILN_PEER_PYTHON"):
        return os.environ["EDGEKILN_PEER_PYTHON"]
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default=_default_peer_python())
    parser.add_argument("--onnx2tf-python", default=os.environ.get("EDGEKILN_ONNX2TF_PYTHON"))
    parser.add_argument("--models", default=",".join(CNN_MODELS))
    parser.add_argument("--converters", default="edgekiln,litert-torch,onnx2tf")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--cache", type=Path, help="keep the peers' converted files here and reuse them on the next "
                                                   "run (edgekiln's is always compiled)")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    pythons = {"litert-torch": args.peer_python, "onnx2tf": args.onnx2tf_python}
    converters = {c: pythons.get(c) for c in args.converters.split(",")}
    if unknown := set(converters) - {"edgekiln", "edgekiln-no-tpu-rewrites", *PEERS}:
        parser.error(f"unknown converter(s) {', '.join(sorted(unknown))}")
    files: dict[tuple[str, str], bytes] = {}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgetpu-peers-") as tmp:
        for name in args.models.split(","):
            for converter, python in converters.items():
                row = {"model": name, "converter": converter}
                if converter in PEERS and python is None:
                    row["status"] = "not installed (pass --peer-python / --onnx2tf-python)"
                    rows.append(row)
                    continue
                # edgekiln's file is what is measured: always compiled by this tree, never read from the cache
                cached = args.cache / f"{name}.{converter}.tflite" if args.cache and converter in PEERS else None
                console.print(f"converting {name} with {converter} ...")
                start = time.perf_counter()
                try:
                    if cached is not None and cached.exists():
                        data = cached.read_bytes()
                    elif converter == "edgekiln":
                        data = convert_edgekiln(name)
                    elif converter == "edgekiln-no-tpu-rewrites":
                        data = convert_edgekiln_without_rewrites(name)
                    elif converter == "litert-torch":
                        data = convert_litert_torch(name, python, Path(tmp))
                    else:
                        data = convert_onnx2tf(name, python, Path(tmp))
                except Exception as exc:  # noqa: BLE001 - a peer failing is a result, not a crash
                    row["status"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
                    rows.append(row)
                    continue
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_bytes(data)
                row.update(describe(data), status="ok", convert_seconds=round(time.perf_counter() - start, 1))
                files[(name, converter)] = data
                rows.append(row)
    latency = measure_latency(files, args.rounds)
    for row in rows:
        key = (row["model"], row["converter"])
        if key in latency:
            row["litert_cpu_ms"] = round(latency[key], 4)
            base = latency.get((row["model"], "edgekiln"))
            row["latency_vs_edgekiln"] = round(latency[key] / base, 3) if base else None
    table = Table(title="Edge TPU .tflite: edgekiln vs peer converters (LiteRT CPU latency on a loaded machine)")
    columns = ("model", "converter", "ops", "TRANSPOSE", "DEQUANTIZE", "TPU ops", "TPU MACs", "segment ends at",
               "KiB", "LiteRT CPU ms", "vs edgekiln")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "converter", "segment ends at") else "right")
    for r in rows:
        if r.get("status") != "ok":
            table.add_row(r["model"], r["converter"], *["-"] * 5, r["status"][:60], "-", "-", "-")
            continue
        table.add_row(r["model"], r["converter"], str(r["ops"]), str(r["transpose"]), str(r["dequantize"]),
                      f"{r['tpu_op_share']:.0%}", f"{r['tpu_mac_share']:.0%}", r["segment_end"] or "-",
                      f"{r['file_bytes'] / 1024:.1f}", f"{r['litert_cpu_ms']:.3f}",
                      f"{r['latency_vs_edgekiln']:.2f}x" if r.get("latency_vs_edgekiln") else "-")
    console.print(table)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    temp = args.results.with_suffix(".json.tmp")
    temp.write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=2) + "\n")
    temp.replace(args.results)  # atomic: a reader never sees half a file
    console.print(f"wrote {args.results}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--litert-torch-child":
        sys.path.insert(0, str(ROOT))
        _litert_torch_child(sys.argv[2], sys.argv[3])
    else:
        main()
