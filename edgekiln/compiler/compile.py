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
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.target import Target, get_target
from edgekiln.errors import OptionError, UnsupportedOpError

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
                  progress: bool = True, toolchain: str | None = None,
                  pruning: PruneOptions | None = None, float_io: bool = False,
                  cpu_tail: bool = False, weight_layout: str = "fast") -> CompileResult:
    """Compile `model` for `target`; see `edgekiln.compile` for the user-facing wrapper."""
    from edgekiln import __version__

    target = target if isinstance(target, Target) else get_target(target)
    _check_weight_layout(weight_layout, target)
    if target.backend == "edgetpu":  # int8 TFLite only: refuse a float / low-bit compile before any work
        from edgekiln.backends.edgetpu.backend import check_options

        check_options(quantization, target.name)
    shapes = parse_input_shapes(input_shapes)
    trace = ExplainTrace()
    if target.backend == "edgetpu":  # static shapes only: a dynamic batch becomes 1
        from edgekiln.passes.pin_batch_to_one import batch_one_shapes

        shapes = batch_one_shapes(model, shapes, trace)
    model_name, model_hash, graph = _load(model, shapes, trace)
    if quantization is None:
        stages = stages_for(target.backend)
    else:
        stages = quantized_stages_for(target.backend, equalize=quantization.equalize)
    if pruning is not None and pruning.prunes_channels:
        # Before any folding: groups are simplest on plain ONNX ops, BatchNorm gamma is still
        # there to rank channels, and the smaller model then takes the same passes as any other.
        from edgekiln.pruning.prune_stage import prune_channels

        graph = prune_channels(graph, pruning, trace, quantization=quantization, progress=progress)
    # Data-free calibration matches the BatchNorm statistics, which folding removes.
    unfolded = graph.clone() if quantization is not None and str(quantization.calib).startswith("synthetic") else None
    for stage in stages:
        graph = PassManager(stage.passes, stage=stage.name).run(graph, trace)
    if pruning is not None and pruning.sparsifies:
        # After the float stages: BatchNorm is folded, so the zeros written are the final weights' zeros.
        from edgekiln.pruning.sparsity_stage import sparsify_graph

        graph = sparsify_graph(graph, pruning, trace)
    tail_files: dict[str, bytes] = {}
    if cpu_tail and target.backend != "edgetpu":
        raise OptionError(f"--cpu-tail splits a model for the Edge TPU; target {target.name} runs every op itself "
                          "(drop --cpu-tail, or use --target edgetpu)")
    if cpu_tail:  # unsupported ops at the end -> cpu_tail.onnx
        from edgekiln.backends.edgetpu.rewrites_cpu_tail import split_cpu_tail

        split = split_cpu_tail(graph, target.backend)
        trace.note(split.describe())
        graph = split.head
        if split.tail is not None:
            tail_files["cpu_tail.onnx"] = split.tail.SerializeToString(deterministic=True)
    if check_ops:
        _refuse_unsupported(graph, target)
    if quantization is None:
        program, runner = lower_graph(graph), FLOAT_RUNNER
    else:
        from edgekiln.compiler.integer_lowering import lower_quantized_graph
        from edgekiln.compiler.quantize_model import quantize_graph

        graph = quantize_graph(graph, quantization, target, trace, unfolded=unfolded, progress=progress)
        program, runner = lower_quantized_graph(graph), INTEGER_RUNNER
        # Add -> Relu as one clamped Add, on every target (the integer reference runs the mobile_gpu and
        # FPGA Programs, so they score what arm_cpu computes): no standalone int8 RELU in the .tflite, no
        # Relu table and one pass fewer in the C runtime; before the block fusion, whose pattern then sees
        # the clamped producers
        from edgekiln.compiler.fuse_relu_into_producer import fuse_relu_into_producers

        relu_notes: list[str] = []
        program = fuse_relu_into_producers(program, relu_notes)
        for note in relu_notes:
            trace.note(note)
        if target.backend == "arm_cpu":  # its runtime runs each inverted-residual block as one tiled kernel
            from edgekiln.compiler.fused_block_lowering import (
                fuse_inverted_residual_blocks,
            )

            notes: list[str] = []
            program = fuse_inverted_residual_blocks(program, notes)
            for note in notes:
                trace.note(note)
        if target.backend == "edgetpu":
            from edgekiln.backends.edgetpu.bilinear_tflite_coordinates import (
                follow_tflite_bilinear_coordinates,
            )

            tpu_notes: list[str] = []
            # a bilinear ratio TFLite's rounded step cannot reproduce: follow TFLite rather than refuse
            program = follow_tflite_bilinear_coordinates(program, tpu_notes)
            for note in tpu_notes:
                trace.note(note)
    files = {"model.onnx": graph.to_bytes(), **program_files(program)}
    sparse_decisions: list = []  # arm_cpu: the layers the sparse-kernel cost model looked at
    if target.backend == "arm_cpu":  # the C runtime: model blob + runner executable (toolchain: the C compiler)
        from edgekiln.backends.arm_cpu.backend import lower as lower_arm_cpu
        from edgekiln.pruning.sparsity_kernels import choose_sparse_kernels

        # Per layer, a sparse kernel where the cost model says it beats the dense one.
        sparse_plan, sparse_decisions = choose_sparse_kernels(program, target)
        for decision in sparse_decisions:
            if decision.reported:
                trace.note(decision.describe())
        files.update(lower_arm_cpu(program, target, {"toolchain": toolchain, "sparse_plan": sparse_plan,
                                                     "weight_layout": weight_layout}))
        runner = "arm_cpu"
    if target.backend == "edgetpu":  # the fully int8 model.tflite, run in LiteRT
        from edgekiln.backends.edgetpu.backend import lower as lower_edgetpu

        files.update(lower_edgetpu(program, target, {"float_io": float_io}))
        runner = "litert"
        from edgekiln.backends.edgetpu.report_files import edgetpu_report_files

        report_files, _, report_notes = edgetpu_report_files(files["model.tflite"], target)
        files.update(report_files)
        files.update(tail_files)
        for note in report_notes:
            trace.note(note)
    options: dict[str, Any] = {"input_shapes": {k: list(v) for k, v in sorted(shapes.items())}}
    if quantization is not None:
        options["quantization"] = quantization.to_manifest()
    if pruning is not None:
        options["pruning"] = pruning.to_manifest()
    if any(d.reported for d in sparse_decisions):
        options["sparse_kernels"] = [d.to_manifest() for d in sparse_decisions if d.reported]
    if float_io:
        options["float_io"] = True
    if target.backend == "arm_cpu":
        options["weight_layout"] = weight_layout
    if tail_files:
        options["cpu_tail"] = "cpu_tail.onnx"
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


def _check_weight_layout(weight_layout: str, target: Target) -> None:
    """`weight_layout` picks how the arm_cpu model blob stores low-bit weights: refuse an unknown
    value, and a non-default one for a target that writes no blob, before any work."""
    from edgekiln.backends.arm_cpu.blob_writer import WEIGHT_LAYOUTS

    if weight_layout not in WEIGHT_LAYOUTS:
        raise OptionError(f"--weight-layout {weight_layout!r} is not known; choose one of {', '.join(WEIGHT_LAYOUTS)}")
    if weight_layout != "fast" and target.backend != "arm_cpu":
        raise OptionError(f"--weight-layout {weight_layout} chooses how the arm_cpu model blob stores weights; target "
                          f"{target.name} ({target.backend} backend) writes no blob (drop --weight-layout, or compile "
                          "for an ARM target or 'host')")


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
