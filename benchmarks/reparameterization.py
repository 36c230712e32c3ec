"""Re-parameterization at realistic sizes: training-form RepVGG / MobileOne stages vs merged.

    python -m benchmarks.reparameterization [--runs 50]

The zoo's RepVGG and MobileOne models are sized for fast tests (32x32, 16 channels), where
onnxruntime's per-node overhead hides any kernel win.  Here the same block classes are
stacked at ImageNet-stage sizes — RepVGG: 4 blocks, 64 channels, 56x56; MobileOne: 4 blocks
(k = 4), 128 channels, 28x28 — exported in training form (BatchNorm kept), and compared in
one run: the export, edgekiln's optimized graph, and onnxsim's.  onnxruntime, 1 thread,
median of `--runs` interleaved runs, with its graph optimizations on and off.
Writes benchmarks/results/reparameterization.json.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from rich.console import Console
from torch import nn

from benchmarks.graph_optimization import LEVELS, interleaved_medians, node_count, session, simplify_with_onnxsim
from edgekiln.compiler.compile import compile_model
from tests.zoo import architectures as arch

RESULTS = Path(__file__).parent / "results" / "reparameterization.json"


def repvgg_stage() -> tuple[nn.Module, tuple[int, ...]]:
    return nn.Sequential(*(arch.RepVGGBlock(64, 64, stride=1) for _ in range(4))), (1, 64, 56, 56)


def mobileone_stage() -> tuple[nn.Module, tuple[int, ...]]:
    return nn.Sequential(*(arch.MobileOneBlock(128, k=4) for _ in range(4))), (1, 128, 28, 28)


def export(model: nn.Module, shape: tuple[int, ...], folder: Path, name: str) -> Path:
    generator = torch.Generator().manual_seed(0)
    arch.init_norm_layers(model, torch.randn((4, *shape[1:]), generator=generator), generator)
    buffer = io.BytesIO()
    # The legacy exporter warns about itself; PRESERVE is required to keep BatchNorm nodes.
    warnings.filterwarnings("ignore", module="torch.onnx")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.onnx.export(model, (torch.zeros(shape),), buffer, dynamo=False, opset_version=17,
                      training=torch.onnx.TrainingMode.PRESERVE, input_names=["x"], output_names=["y"])
    path = folder / f"{name}.onnx"
    path.write_bytes(buffer.getvalue())
    return path


def measure(name: str, path: Path, shape: tuple[int, ...], runs: int) -> dict:
    feeds = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    graphs = {
        "exported": onnx.load(path),
        "edgekiln": compile_model(path, "host").graph.to_proto(),
        "onnxsim": simplify_with_onnxsim(path, {"x": shape}),
    }
    row = {"model": name, "input": list(shape)}
    reference = session(graphs["exported"].SerializeToString(), LEVELS["ort_noopt"]).run(None, feeds)[0]
    for key, model in graphs.items():
        row[f"{key}_nodes"] = node_count(model)
        row[f"{key}_convs"] = sum(1 for n in model.graph.node if "Conv" in n.op_type)
        out = session(model.SerializeToString(), LEVELS["ort_noopt"]).run(None, feeds)[0]
        row[f"{key}_max_rel_err"] = float(np.max(np.abs(out - reference)) / np.max(np.abs(reference)))
    for level_name, level in LEVELS.items():
        sessions = {k: session(m.SerializeToString(), level) for k, m in graphs.items()}
        for key, ms in interleaved_medians(sessions, feeds, runs).items():
            row[f"{key}_{level_name}_ms"] = ms
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("repvgg_stage", repvgg_stage), ("mobileone_stage", mobileone_stage)):
            model, shape = build()
            rows.append(measure(name, export(model, shape, Path(tmp), name), shape, args.runs))
    console = Console(width=160)
    for r in rows:
        console.print(f"[bold]{r['model']}[/] input {r['input']}")
        for key in ("exported", "edgekiln", "onnxsim"):
            cells = [f"{key:9s} nodes {r[f'{key}_nodes']:3d}  convs {r[f'{key}_convs']:3d}"]
            for level in LEVELS:
                ms = r[f"{key}_{level}_ms"]
                cells.append(f"{level} {ms:7.3f} ms ({ms / r[f'exported_{level}_ms']:.2f}x)")
            cells.append(f"max rel err {r[f'{key}_max_rel_err']:.1e}")
            console.print("  " + "   ".join(cells))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": args.runs, "threads": 1, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
