"""`compile()`: the whole pipeline from an ONNX model to an `Artifact`.

    load (frontend) -> target pipeline (PassManager) -> op support check
        -> [quantize: calibrate, QDQ rewrite] -> lower to Program (memory plan)
        -> backend files -> Artifact

A float compile runs its artifact in onnxruntime; a quantized one in the integer reference
interpreter (the definition of correct), with `model.onnx` the QDQ float reference.

The Python API and the CLI both come through here, so they cannot drift apart.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgekiln.compiler.artifact import Artifact, build_manifest, program_files, sha256
from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.input_shapes import parse_input_shapes
from edgekiln.compiler.lowering import lower_graph
from edgekiln.compiler.op_support import unsupported_nodes
from edgekiln.compiler.pass_manager import PassManager
from edgekiln.compiler.pipelines import quantized_stages_for, stages_for
from edgekiln.compiler.program import Program
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.target import Target, get_target
from edgekiln.errors import UnsupportedOpError

# Until a target's backend ships its native runner, float artifacts run in onnxruntime and
# quantized ones in the integer reference interpreter.
FLOAT_RUNNER, INTEGER_RUNNER = "onnxruntime", "reference"


@dataclass
class CompileResult:
    artifact: Artifact
    graph: Graph
    program: Program
    trace: ExplainTrace = field(default_factory=ExplainTrace)


def compile_model(model: str | os.PathLike | onnx.ModelProto, target: str | Target = "host", *,
                  input_shapes: Any = None, check_ops: bool = True, quantization: QuantOptions | None = None,
                  progress: bool = True, toolchain: str | None = None) -> CompileResult:
    """Compile `model` for `target`; see `edgekiln.compile` for the user-facing wrapper."""
    from edgekiln import __version__

    target = target if isinstance(target, Target) else get_target(target)
    shapes = parse_input_shapes(input_shapes)
    trace = ExplainTrace()
    model_name, model_hash, graph = _load(model, shapes, trace)
    if quantization is None:
        stages = stages_for(target.backend)
    else:
        stages = quantized_stages_for(target.backend, equalize=quantization.equalize)
    # Data-free calibration matches the BatchNorm statistics, which folding removes.
    unfolded = graph.clone() if quantization is not None and str(quantization.calib).startswith("synthetic") else None
    for stage in stages:
        graph = PassManager(stage.passes, stage=stage.name).run(graph, trace)
    if check_ops:
        _refuse_unsupported(graph, target)
    if quantization is None:
        program, runner = lower_graph(graph), FLOAT_RUNNER
    else:
        from edgekiln.compiler.integer_lowering import lower_quantized_graph
        from edgekiln.compiler.quantize_model import quantize_graph

        graph = quantize_graph(graph, quantization, target, trace, unfolded=unfolded, progress=progress)
        program, runner = lower_quantized_graph(graph), INTEGER_RUNNER
    files = {"model.onnx": graph.to_bytes(), **program_files(program)}
    if target.backend == "arm_cpu":  # the C runtime: model blob + runner executable (toolchain: the C compiler)
        from edgekiln.backends.arm_cpu.backend import lower as lower_arm_cpu

        files.update(lower_arm_cpu(program, target, {"toolchain": toolchain}))
        runner = "arm_cpu"
    options: dict[str, Any] = {"input_shapes": {k: list(v) for k, v in sorted(shapes.items())}}
    if quantization is not None:
        options["quantization"] = quantization.to_manifest()
    manifest = build_manifest(model_name=model_name, model_sha256=model_hash, target=target, options=options,
                              program=program, runner=runner, files=files, version=__version__)
    return CompileResult(Artifact(manifest, files), graph, program, trace)


def _load(model: str | os.PathLike | onnx.ModelProto, shapes: dict, trace: ExplainTrace) -> tuple[str, str, Graph]:
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString(deterministic=True)
        # Through a file, so in-memory models take exactly the same checks as files.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(data)
            graph = load_model(path, shapes, trace)
        graph.source = None
        return "<in-memory model>", sha256(data), graph
    path = Path(model)
    graph = load_model(path, shapes, trace)
    return path.name, sha256(path.read_bytes()), graph


def _refuse_unsupported(graph: Graph, target: Target) -> None:
    problems = unsupported_nodes(graph, target.backend)
    if not problems:
        return
    shown = "; ".join(f"node {p.node_name!r} ({p.op_type}): {p.reason}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise UnsupportedOpError(
        f"target {target.name} cannot run {len(problems)} node(s): {shown}{more}. "
        f"Run 'edgekiln inspect MODEL --target {target.name}' for the full list; replace these ops in the "
        "exported model or choose another target"
    )
