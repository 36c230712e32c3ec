"""The arm_cpu backend: a Program becomes a model blob plus a static runner executable.

    lower(program, target, options) -> {"model.blob": ..., "bin/ek_run": ..., "arm_cpu.json": ...}

`model.blob` is `blob_writer.write_blob(program)`; `bin/ek_run` the runtime built for the
target's architecture by `toolchain.build_program` (aarch64 for ARM targets, the host's
x86_64 for `host`); `arm_cpu.json` says how to run it (architecture, the qemu CPU model that
emulates the target, its ISA features and cores), which the runner's transport reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.arm_cpu.toolchain import build_program, find_toolchain
from edgekiln.compiler.program import Program

CONFIG_FILE = "arm_cpu.json"
BLOB_FILE = "model.blob"
RUNNER_FILE = "bin/ek_run"
CONFIG_FORMAT = "edgekiln-arm-cpu"
CONFIG_VERSION = 1


def target_arch(target: Any) -> str:
    """The machine architecture of a target: x86 CPUs (the host) x86_64; ARM CPUs aarch64, except
    32-bit ones (the target file's `[cpu] isa` is armv7-a or older), which are arm (armv7 hard-float)."""
    if target.kind == "x86_cpu":
        return "x86_64"
    isa = str((getattr(target, "details", None) or {}).get("isa", ""))
    return "arm" if isa.startswith(("armv7", "armv6")) else "aarch64"


def lower(program: Program, target: Any, options: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The backend files for `program` on `target`; `options["toolchain"]` picks the C compiler,
    `options["weight_layout"]` ("fast" | "compact") the low-bit weight layout (blob_writer.py)."""
    options = options or {}
    # first: an unsupported op is reported before any build; `sparse_plan` (call -> sparse
    # weight format, from edgekiln.pruning.sparsity_kernels) picks the layers run sparse
    blob = write_blob(program, options.get("sparse_plan"), tuple(getattr(target, "features", ())),
                      options.get("weight_layout") or "fast")
    toolchain = find_toolchain(target_arch(target), options.get("toolchain"))
    runner = build_program(toolchain)
    config = {
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "arch": toolchain.arch,
        "qemu_cpu": getattr(target, "qemu_cpu", None),
        "features": list(getattr(target, "features", ())),
        "cores": getattr(target, "cores", None),
        "blob": BLOB_FILE,
        "runner": RUNNER_FILE,
        "compiler": toolchain.version,
    }
    return {BLOB_FILE: blob, RUNNER_FILE: runner.path.read_bytes(),
            CONFIG_FILE: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()}
