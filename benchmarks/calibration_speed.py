"""Calibration of a 5 M-parameter CNN on 256 images: wall time and peak memory per observer.

    python -m benchmarks.calibration_speed [--images 256] [--methods minmax,percentile,entropy,mse]

The issue asks for "calibration of a 5 M-parameter CNN on 256 images in well under a minute on
2 cores".  The model is a ResNet-18-shaped network at 0.66x width (stem 7x7/2 + max pool,
four stages of two basic blocks, 42/84/168/336 channels, BatchNorm after every convolution,
global average pool, 1000-way classifier: 5.2 M parameters), exported
from torch with random weights and data-driven BatchNorm statistics; the 256 calibration
images are random 3x224x224 tensors in a .npy file (153 MiB), as a user would pass them.

Each method runs `edgekiln compile --target host --quant int8 --calib images.npy
--calib-method METHOD` through the Python API in a fresh subprocess (scoring target: lowered
to the integer Program, no C build), which is what a user waits for: loading the model, the
float passes, calibration (onnxruntime on every sample, every activation observed by a
streaming histogram), bias correction (the default: one more float and one quantized pass over
the data), quantization and lowering.  Reported: wall seconds of the compile; `calibrate` alone,
timed again in the same subprocess on the optimized float graph; and the process's peak RSS
(VmHWM).  The machine is a shared 2-core VM: numbers are a few seconds noisy.

Writes benchmarks/results/calibration_speed.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results" / "calibration_speed.json"
METHODS = ("minmax", "percentile", "entropy", "mse")
WIDTHS = (42, 84, 168, 336)
IMAGE = (3, 224, 224)


def build_model(path: Path) -> int:
    """Export the ResNet-18-shaped CNN to `path`; returns its parameter count."""
    import torch
    from torch import nn

    from tests.zoo.architectures import BasicBlock, init_norm_layers

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, WIDTHS[0], 7, 2, 3, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    c_in = WIDTHS[0]
    for stage, width in enumerate(WIDTHS):
        for block in range(2):
            layers.append(BasicBlock(c_in, width, stride=2 if stage and not block else 1))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 1000)]
    model = nn.Sequential(*layers)
    example = torch.randn(8, *IMAGE, generator=generator)
    init_norm_layers(model, example, generator)
    torch.onnx.export(model, (example[:1],), str(path), input_names=["image"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    return sum(p.numel() for p in model.parameters())


_CHILD = r"""
import json, sys, time
from edgekiln.calibration import calibrate
from edgekiln.calibration.calibration_data import open_calibration_data
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.quant_options import QuantOptions
from benchmarks.quantization_data import scoring_target
from benchmarks.quantization_sqnr import status_kib

model, data, method = sys.argv[1:4]
start = time.perf_counter()
options = QuantOptions(quant="int8", calib=data, calib_method=method)
result = compile_model(model, scoring_target(), check_ops=False, quantization=options, progress=False)
compile_s = time.perf_counter() - start
float_graph = compile_model(model, scoring_target(), check_ops=False, progress=False).graph
start = time.perf_counter()
ranges = calibrate(float_graph, open_calibration_data(data, float_graph.inputs), method=method, progress=False)
calibrate_s = time.perf_counter() - start
peak = status_kib("VmHWM")
print(json.dumps({"compile_s": compile_s, "calibrate_s": calibrate_s, "observed": len(ranges),
                  "peak_rss_mib": peak / 1024, "calls": len(result.program.calls)}))
"""


def measure(model: Path, data: Path, method: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(data), method], capture_output=True,
                          text=True, check=False, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    if done.returncode:
        raise RuntimeError(f"{method}: {done.stderr[-2000:]}")
    return {"method": method, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="ek-calib-speed-") as folder:
        model, data = Path(folder) / "resnet18_w066.onnx", Path(folder) / "images.npy"
        parameters = build_model(model)
        np.save(data, np.random.default_rng(0).standard_normal((args.images, *IMAGE), dtype=np.float32))
        rows = []
        for method in args.methods.split(","):
            start = time.perf_counter()
            rows.append(measure(model, data, method))
            console.log(f"{method}: {time.perf_counter() - start:.1f} s")
    table = Table(title=f"int8 compile of a {parameters / 1e6:.1f} M-parameter CNN, {args.images} calibration images "
                        "3x224x224, 2-core machine")
    for column in ("method", "compile s", "calibrate s", "peak RSS MiB", "activations observed"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        table.add_row(r["method"], f"{r['compile_s']:.1f}", f"{r['calibrate_s']:.1f}", f"{r['peak_rss_mib']:.0f}",
                      str(r["observed"]))
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"parameters": parameters, "images": args.images, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
