"""The pass pipeline of each backend: explicit stages of explicit passes, in one place.

Read top to bottom: this is everything that runs on a graph for a target, in order.  Each
stage runs to its own fixed point (`PassManager`) before the next starts, so a later stage
never sees a graph an earlier one could still simplify:

    simplify   cleanup, folding, re-parameterization and pattern recognition, together,
               because each can expose work for the others (a folded BN exposes a
               mergeable branch; a removed no-op exposes a duplicate)
    fuse       epilogue fusion, then the block partition over the fused nodes

    tpu        (edgetpu only) rewrites that keep ops on the Edge TPU's single segment:
               LeakyRelu -> PRelu, Div by a constant -> Mul, a Transpose before a flatten
               folded into the dense weights, HardSwish -> x·HardSigmoid(x)

A quantized compile (`quantized_stages_for`) runs the same simplify stage (plus cross-layer
equalization when asked) and a fuse stage that fuses only what an integer kernel does as a
clamp — Relu and Clip, no residual Add; every other activation stays a separate int8 lookup
table op.  Calibration and the QDQ rewrite follow in `compiler/quantize_model.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekiln.compiler.pass_contract import Pass
from edgekiln.passes.divide_by_constant_to_mul import DivideByConstantToMulPass
from edgekiln.passes.eliminate_common_subexpressions import (
    EliminateCommonSubexpressionsPass,
)
from edgekiln.passes.eliminate_identity import EliminateIdentityPass
from edgekiln.passes.eliminate_no_ops import EliminateNoOpsPass
from edgekiln.passes.equalize_cross_layer import EqualizeCrossLayerPass
from edgekiln.passes.fold_affine_into_conv import FoldAffineIntoConvPass
from edgekiln.passes.fold_batch_norm import FoldBatchNormPass
from edgekiln.passes.fold_constants import FoldConstantsPass
from edgekiln.passes.fold_pad import FoldPadPass
from edgekiln.passes.fold_transpose_into_fully_connected import (
    FoldTransposeIntoFullyConnectedPass,
)
from edgekiln.passes.fuse_epilogue import FuseEpiloguePass
from edgekiln.passes.fuse_matmul_add import FuseMatMulAddPass
from edgekiln.passes.hard_swish_to_hard_sigmoid_mul import HardSwishToHardSigmoidMulPass
from edgekiln.passes.leaky_relu_to_prelu import LeakyReluToPReluPass
from edgekiln.passes.make_pads_explicit import MakePadsExplicitPass
from edgekiln.passes.mark_attention import MarkAttentionPass
from edgekiln.passes.merge_conv_branches import MergeConvBranchesPass
from edgekiln.passes.partition_blocks import PartitionBlocksPass
from edgekiln.passes.recognize_gelu import RecognizeGeluPass
from edgekiln.passes.recognize_hard_swish import RecognizeHardSwishPass
from edgekiln.passes.recognize_layer_norm import RecognizeLayerNormPass
from edgekiln.passes.remove_dead_nodes import RemoveDeadNodesPass


@dataclass
class Stage:
    name: str
    passes: list[Pass]


def cleanup() -> list[Pass]:
    # No-op removal first: skipping a no-op can reveal duplicates; dead nodes last: every
    # other pass can leave unused initializers behind.
    return [
        EliminateIdentityPass(),
        EliminateNoOpsPass(),
        EliminateCommonSubexpressionsPass(),
        FoldConstantsPass(),
        RemoveDeadNodesPass(),
    ]


def recognize_patterns() -> list[Pass]:
    # Before folding: HardSwish spelled x·relu6(x+3)/6 reads the conv output twice, which
    # would make every fold around it refuse with "other readers".
    return [
        RecognizeHardSwishPass(),
        RecognizeLayerNormPass(),
        RecognizeGeluPass(),
    ]


def fold() -> list[Pass]:
    return [
        MakePadsExplicitPass(),
        FoldPadPass(),
        FoldBatchNormPass(),
        FoldAffineIntoConvPass(),
        FuseMatMulAddPass(),
        MergeConvBranchesPass(),  # after BN folding: conv+BN branches are plain convs by then
    ]


def simplify() -> Stage:
    return Stage("simplify", [*cleanup(), *recognize_patterns(), *fold(), MarkAttentionPass()])


def arm_cpu() -> list[Stage]:
    return [simplify(), Stage("fuse", [FuseEpiloguePass(), PartitionBlocksPass()])]


def mobile_gpu() -> list[Stage]:
    return [simplify(), Stage("fuse", [FuseEpiloguePass(), PartitionBlocksPass()])]


def edgetpu_friendly(quantized: bool = False) -> Stage:
    """Rewrites that keep ops on the Edge TPU, after simplify so they see folded constants."""
    # HardSwish -> x·HardSigmoid(x) before quantization: calibration then sees the gate.
    passes: list[Pass] = [DivideByConstantToMulPass(), FoldTransposeIntoFullyConnectedPass(),
                          HardSwishToHardSigmoidMulPass()]
    if not quantized:  # int8: LeakyRelu stays a lookup table, which the TFLite writer emits as PRELU
        passes.insert(0, LeakyReluToPReluPass())
    return Stage("tpu", [*passes, RemoveDeadNodesPass()])


def edgetpu() -> list[Stage]:
    # TFLite ops carry a fused activation; there are no cache blocks to plan on a TPU.
    return [simplify(), edgetpu_friendly(), Stage("fuse", [FuseEpiloguePass()])]


def fpga_hls() -> list[Stage]:
    return [simplify(), Stage("fuse", [FuseEpiloguePass()])]


PIPELINES = {
    "arm_cpu": arm_cpu,
    "mobile_gpu": mobile_gpu,
    "edgetpu": edgetpu,
    "fpga_hls": fpga_hls,
}


def stages_for(backend: str) -> list[Stage]:
    """Fresh pass instances for `backend` (passes may keep per-run state)."""
    return PIPELINES[backend]()


def quantized_stages_for(backend: str, equalize: bool = False) -> list[Stage]:
    """The float stages of a quantized compile for `backend`."""
    simplify_stage = simplify()
    if equalize:
        simplify_stage.passes.append(EqualizeCrossLayerPass())
    clamps_only = FuseEpiloguePass(activations=frozenset({"Relu", "Clip"}), residual=False)
    # Fused Clips leave their bound constants behind: dead-node removal drops them.
    fuse = Stage("fuse", [clamps_only, RemoveDeadNodesPass()])
    if backend in ("arm_cpu", "mobile_gpu"):
        fuse.passes.append(PartitionBlocksPass())
    if backend == "edgetpu":
        return [simplify_stage, edgetpu_friendly(quantized=True), fuse]
    return [simplify_stage, fuse]
