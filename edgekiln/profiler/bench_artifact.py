"""`bench_artifact`: run a compiled arm_cpu artifact on a device and profile it per kernel call.

    report = bench_artifact(Artifact.load("out/"), device="qemu", repeat=10)
    report.render(console); Path("bench.json").write_text(report.to_json())

The measure follows the device unless `measure` says otherwise: under qemu, guest
instruction counts (deterministic: the same artifact gives the same numbers on any machine);
on real hardware (local, ssh, adb), wall time.  Inputs default to seeded random data of the
manifest's shapes and dtypes (a kernel's cost does not depend on the values, except for
data-dependent ops such as ArgMax or NonMaxSuppression).  Each call's ops come from the
artifact's Program (`call_ops.call_work`); the peak from the target's description.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from edgekiln.errors import ArtifactError, EdgekilnError, OptionError
from edgekiln.profiler.bench_report import MEASURES, BenchReport, CallProfile
from edgekiln.profiler.call_ops import CallWork, call_work

PROGRAM_JSON = "program/program.json"


def random_inputs(specs: list[dict[str, Any]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the manifest's shapes: N(0, 1) floats, integers spanning their type."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feeds[spec["name"]] = rng.standard_normal(spec["shape"]).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec["name"]] = rng.integers(0, 2, spec["shape"]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            feeds[spec["name"]] = rng.integers(max(info.min, -128), min(info.max, 127) + 1, spec["shape"]).astype(dtype)
    return feeds


def bench_artifact(artifact: Any, *, device: str | None = None, repeat: int = 10, warmup: int = 1, threads: int = 1,
                   measure: str | None = None, isa: str = "auto", inputs: dict[str, np.ndarray] | None = None,
                   timeout: float | None = None) -> BenchReport:
    # a backend: imported on use, so the profiler package loads without it
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner

    manifest = artifact.manifest
    if manifest.get("runner") != "arm_cpu":
        raise ArtifactError(f"bench runs artifacts of the arm_cpu backend; this one runs with {manifest.get('runner')!r}"
                            " (compile for an ARM target or 'host')")
    if repeat < 1 or warmup < 0 or threads < 1:
        raise OptionError("--repeat and --threads must be at least 1, --warmup at least 0")
    runner = ArmCpuRunner(artifact.files, manifest, transport=device, timeout=timeout)
    measure = measure or ("instructions" if runner.transport.name == "qemu" else "time")
    if measure not in MEASURES:
        raise OptionError(f"--measure {measure}: use {' or '.join(MEASURES)}")
    if measure == "instructions" and threads != 1:
        raise OptionError("--measure instructions counts one thread exactly (threads share qemu's counter): "
                          "use --threads 1, or --measure time")
    feeds = artifact._check_inputs(inputs) if inputs is not None else random_inputs(artifact.input_specs)
    notes = []
    if measure == "instructions":
        counts, stats = runner.count_instructions(feeds, isa=isa, warmup=min(warmup, 1))
        costs = [float(c) for c in counts.per_call]
        notes.append("instruction counts come from one run under qemu-user; they rank kernels and ISA paths "
                     "deterministically but are not cycles: memory stalls and issue width are not modelled")
    else:
        stats = runner.bench(feeds, repeat=repeat, warmup=warmup, threads=threads, isa=isa, profile=True)
        costs = [float(c["seconds"]) for c in stats["profile"]]
        if runner.transport.name == "qemu":
            notes.append("wall time under qemu is emulation time, not the device's; --measure instructions "
                         "gives a deterministic measure")
        if stats.get("max_rss_kb") and runner.transport.name == "qemu":
            notes.append("peak RSS under qemu includes the emulator")
    works = _works_by_call(artifact.files, stats["profile"])
    calls = [CallProfile(index=k, name=c["name"], op=c["op"], precision=w.precision, ops=w.ops,
                         compute_bound=w.compute_bound, cost=cost)
             for k, (c, w, cost) in enumerate(zip(stats["profile"], works, costs))]
    peak, cores = _target_peak(manifest["target"]["name"])
    report = BenchReport(
        artifact=str(artifact.path or manifest["model"]["name"]), target=manifest["target"]["name"],
        device=runner.transport.name, measure=measure, threads=stats.get("threads", threads),
        isa=stats.get("isa", isa), repeat=stats.get("repeat", repeat), warmup=stats.get("warmup", warmup),
        latency_ms=stats["latency_ms"], arena_bytes=stats.get("arena_bytes", 0),
        scratch_bytes=stats.get("scratch_bytes", 0), max_rss_kb=stats.get("max_rss_kb"), calls=calls,
        total_instructions=counts.total if measure == "instructions" else None,
        instruction_overhead=counts.overhead if measure == "instructions" else None,
        peak_ops_per_second=peak, notes=notes)
    report.finish(cores)
    return report


def _works_by_call(files: dict[str, bytes], profile: list[dict[str, Any]]) -> list[CallWork]:
    """The work of each runtime call: the Program call of the same name, counted once (a
    Program call the blob splits into several runtime calls gives its ops to the first)."""
    if PROGRAM_JSON not in files:
        return [CallWork(0, False, "-") for _ in profile]
    program = json.loads(files[PROGRAM_JSON])
    pending = {}
    for call in program["calls"]:
        pending.setdefault(call["name"], []).append(call_work(call, program["tensors"]))
    works = []
    for entry in profile:
        queue = pending.get(entry["name"])
        works.append(queue.pop(0) if queue else CallWork(0, False, "-"))
    return works


def _target_peak(name: str) -> tuple[dict[str, float], int | None]:
    from edgekiln.compiler.target import get_target

    try:
        target = get_target(name)
    except EdgekilnError:  # a target file that is not here any more: no peak to compare with
        return {}, None
    return dict(target.peak_ops_per_second), target.cores
