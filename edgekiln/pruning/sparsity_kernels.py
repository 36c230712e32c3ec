"""Which layers run a sparse kernel on an arm_cpu target: `choose_sparse_kernels(program, target)`.

Candidates are the calls the runtime has sparse kernels for: 1x1, stride-1, unpadded, ungrouped
QConv2D / Conv / FusedConv, QFullyConnected, and MatMul / Gemm (and fused forms) by a constant
2-D weight, with at most 32768 input channels (and no per-group int4 scales).  For each, every
format is costed with `sparsity_cost` (blocks of 1, 2, 4 and 8 output channels; 2:4 and 1:4
when the weight holds that pattern) against the dense kernel; the cheapest sparse format is
chosen when it models at most MARGIN of the dense cost.  The result is a plan for the backend,
{call name: format}, plus one `SparseDecision` per candidate saying what was chosen or why not
(reported by --explain and in the manifest).  The Program itself is not changed: the dense,
zero-filled weight stays the definition of the layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgekiln.compiler.program import KernelCall, Program
from edgekiln.pruning.sparsity_cost import (
    COSTS,
    MARGIN,
    dense_cost,
    isa_class,
    sparse_cost,
)
from edgekiln.pruning.sparsity_formats import (
    BLOCK_SIZES,
    MAX_K,
    N_M_PATTERNS,
    fits_n_m,
    stored_blocks,
)

QUICK_DENSITY = 0.8  # above this no sparse format can win (the cheapest entry costs more than a dense MAC)
REPORT_DENSITY = 0.95  # decisions on denser weights are not worth a line of --explain


@dataclass
class SparseDecision:
    call: str
    op: str
    outputs: int           # O
    inputs: int            # K
    pixels: int
    density: float         # non-zero fraction of the weight
    choice: dict | None    # the format run, or None: dense
    modeled_speedup: float  # dense cost / best sparse cost (0 when not costed)
    reason: str

    @property
    def reported(self) -> bool:
        """Worth a line in --explain and the manifest: chosen, or a weight with real sparsity."""
        return self.choice is not None or self.density < REPORT_DENSITY

    def to_manifest(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        shape = f"{self.op} {self.inputs}->{self.outputs} x {self.pixels} px, {self.density:.0%} non-zero"
        if self.choice:
            return f"sparse kernel for {self.call} ({shape}): {self.reason}"
        return f"dense kernel for {self.call} ({shape}): {self.reason}"


def _format_name(choice: dict) -> str:
    return f"{choice['block']}x1 blocks" if choice["format"] == "block" else f"{choice['n']}:{choice['m']}"


def _weight_matrix(program: Program, call: KernelCall) -> tuple[np.ndarray | None, str | None, str]:
    """(the [O, K] weight, its dtype family, why not a candidate)."""
    op, a = call.op, call.attrs
    weight = program.constants.get(call.inputs[1]) if len(call.inputs) > 1 else None
    if weight is None:
        return None, None, "the weight is not a constant"
    if a.get("float_output"):  # the sparse int8 kernels requantize; this layer writes float
        return None, None, "a float graph output (int8 GEMM with a float epilogue)"
    if op in ("QConv2D", "Conv", "FusedConv"):
        if weight.ndim != 4 or weight.shape[2:] != (1, 1):
            return None, None, "not a 1x1 convolution"
        if any(s != 1 for s in a.get("strides", [1, 1])) or any(a.get("pads", [0])) or a.get("group", 1) != 1:
            return None, None, "strided, padded or grouped"
        if op == "QConv2D" and len(call.inputs) > 5 and call.inputs[5]:
            return None, None, "per-group weight scales"
        return weight.reshape(weight.shape[0], -1), "int8" if op == "QConv2D" else "fp32", ""
    if op == "QFullyConnected":
        if len(call.inputs) > 5 and call.inputs[5]:
            return None, None, "per-group weight scales"
        return weight, "int8", ""
    if op in ("MatMul", "FusedMatMul") and weight.ndim == 2:
        return weight.T, "fp32", ""
    if op in ("Gemm", "FusedGemm") and weight.ndim == 2:
        if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0:
            return None, None, "transA or alpha"
        return (weight if a.get("transB", 0) else weight.T), "fp32", ""
    return None, None, f"{op} has no sparse kernel"


CANDIDATE_OPS = ("QConv2D", "QFullyConnected", "Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm")


def _pixels(program: Program, call: KernelCall, k: int, conv: bool) -> int:
    shape = program.tensors[call.inputs[0]].shape
    return int(math.prod(shape[2:])) * int(shape[0]) if conv else int(math.prod(shape)) // max(k, 1)


def decide(program: Program, call: KernelCall, isa: str) -> SparseDecision | None:
    """The decision for one call, or None when it is no candidate at all (not a weight reader)."""
    if call.op not in CANDIDATE_OPS:
        return None
    w, dtype, why = _weight_matrix(program, call)
    if w is None:
        return SparseDecision(call.name, call.op, 0, 0, 0, 1.0, None, 0.0, f"no sparse kernel: {why}")
    o, k = w.shape
    pixels = _pixels(program, call, k, call.op in ("QConv2D", "Conv", "FusedConv"))
    density = float(np.count_nonzero(w)) / max(w.size, 1)
    decision = SparseDecision(call.name, call.op, o, k, pixels, density, None, 0.0, "")
    if k > MAX_K:
        decision.reason = f"K = {k} above {MAX_K}"
        return decision
    if density > QUICK_DENSITY:
        decision.reason = f"{density:.0%} of the weights are non-zero"
        return decision
    costs = COSTS[(isa, dtype)]
    dense = dense_cost(costs, o, k)
    options = [({"format": "block", "block": b}, sparse_cost(costs, stored_blocks(w, b), b, o, k)) for b in BLOCK_SIZES]
    for n, m in N_M_PATTERNS:
        if fits_n_m(w, n, m):
            # same kernel as 1x1 blocks, 2-bit indices instead of 16: preferred on a tie
            options.append(({"format": "n:m", "n": n, "m": m}, sparse_cost(costs, o * k // m * n, 1, o, k) * 0.999))
    best, cost = min(options, key=lambda item: item[1])
    decision.modeled_speedup = dense / cost if cost else 0.0
    if cost <= MARGIN * dense:
        decision.choice = best
        decision.reason = f"{_format_name(best)}, modeled {decision.modeled_speedup:.2f}x faster than dense on {isa}"
    else:
        decision.reason = (f"best sparse format {_format_name(best)} models {decision.modeled_speedup:.2f}x of dense "
                           f"on {isa} (needs >= {1 / MARGIN:.2f}x)")
    return decision


def choose_sparse_kernels(program: Program, target) -> tuple[dict[str, dict], list[SparseDecision]]:
    """(plan for `write_blob`, every candidate's decision) for `program` on `target`."""
    isa = isa_class(target)
    decisions = [d for d in (decide(program, call, isa) for call in program.calls) if d is not None]
    plan = {d.call: d.choice for d in decisions if d.choice}
    return plan, decisions
