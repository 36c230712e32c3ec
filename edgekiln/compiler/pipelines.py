"""The pass pipeline of each backend, each one explicit list, visible in one place.

Read top to bottom: this is everything that runs on a graph for a target, in order.
The `PassManager` repeats a list until a sweep changes nothing.
"""

from __future__ import annotations

from edgekiln.compiler.pass_contract import Pass
from edgekiln.passes.eliminate_identity import EliminateIdentityPass
from edgekiln.passes.fold_constants import FoldConstantsPass
from edgekiln.passes.remove_dead_nodes import RemoveDeadNodesPass


def cleanup() -> list[Pass]:
    return [
        EliminateIdentityPass(),
        FoldConstantsPass(),
        RemoveDeadNodesPass(),
    ]


def arm_cpu() -> list[Pass]:
    return [*cleanup()]


def mobile_gpu() -> list[Pass]:
    return [*cleanup()]


def edgetpu() -> list[Pass]:
    return [*cleanup()]


def fpga_hls() -> list[Pass]:
    return [*cleanup()]


PIPELINES = {
    "arm_cpu": arm_cpu,
    "mobile_gpu": mobile_gpu,
    "edgetpu": edgetpu,
    "fpga_hls": fpga_hls,
}


def passes_for(backend: str) -> list[Pass]:
    """A fresh list of pass instances for `backend` (passes may keep per-run state)."""
    return PIPELINES[backend]()
