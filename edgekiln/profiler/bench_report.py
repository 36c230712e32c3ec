"""`BenchReport`: what `edgekiln bench` measured, as a rich table and as JSON.

One report holds the run's latency statistics (min / median / p90 / mean over the timed
runs, ms), its memory (the arena and scratch the runtime allocates at load, and the
process's peak resident set), and one `CallProfile` per kernel call.  `measure` says what
a call's `cost` is:

    time           seconds per call, averaged over the timed runs (wall clock on the device)
    instructions   guest instructions per call under qemu (deterministic; emulated wall
                   time means nothing, so no latency is reported as a result)

`share` is the call's part of the sum over calls; `rate` is ops per second (time) or ops
per instruction (instructions); `peak_fraction` compares ops/s with the target's peak for
the call's precision, scaled to the threads used (threads / cores of the peak).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

MEASURES = ("time", "instructions")


@dataclass
class CallProfile:
    index: int
    name: str
    op: str
    precision: str
    ops: int
    compute_bound: bool
    cost: float                        # seconds or instructions
    share: float = 0.0
    rate: float | None = None          # ops/s or ops per instruction
    peak_fraction: float | None = None


@dataclass
class BenchReport:
    artifact: str
    target: str
    device: str
    measure: str
    threads: int
    isa: str
    repeat: int
    warmup: int
    latency_ms: dict[str, float]
    arena_bytes: int
    scratch_bytes: int
    max_rss_kb: int | None
    calls: list[CallProfile]
    total_instructions: int | None = None
    instruction_overhead: int | None = None
    peak_ops_per_second: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def finish(self, peak_cores: int | None) -> None:
        """Fill each call's share, rate and fraction of the (thread-scaled) peak."""
        total = sum(c.cost for c in self.calls) or 1.0
        scale = min(self.threads, peak_cores) / peak_cores if peak_cores else 1.0
        for call in self.calls:
            call.share = call.cost / total
            if call.cost <= 0 or not call.ops:
                continue
            call.rate = call.ops / call.cost
            peak = self.peak_ops_per_second.get(call.precision)
            if self.measure == "time" and call.compute_bound and peak:
                call.peak_fraction = call.rate / (peak * scale)

    def by_op(self) -> list[tuple[str, int, float]]:
        """(op, calls, share of the total cost) per op type, costliest first."""
        groups: dict[str, list[float]] = {}
        for call in self.calls:
            groups.setdefault(call.op, []).append(call.share)
        return sorted(((op, len(v), sum(v)) for op, v in groups.items()), key=lambda g: -g[2])

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "by_op": [{"op": op, "calls": n, "share": share}
                                                     for op, n, share in self.by_op()]},
                          indent=2, sort_keys=True) + "\n"

    def render(self, console: Console, top: int | None = 20) -> None:
        what = ("guest instructions per call (qemu TCG plugin; deterministic, emulated wall time is not a measure)"
                if self.measure == "instructions" else f"wall time per call, mean of {self.repeat} run(s)")
        console.print(f"[bold]{self.artifact}[/] on {self.device} (target {self.target}), isa {self.isa}, "
                      f"{self.threads} thread(s)", soft_wrap=True)
        console.print(f"measure     {what}", soft_wrap=True)
        if self.measure == "instructions":
            console.print(f"total       {self.total_instructions:,} instructions per run "
                          f"({self.instruction_overhead} clock-read instructions removed per call)")
        else:
            lat = self.latency_ms
            console.print(f"latency     min {lat['min']:.3f} ms, median {lat['median']:.3f} ms, p90 {lat['p90']:.3f} ms "
                          f"over {self.repeat} run(s) after {self.warmup} warm-up")
        rss = f", peak RSS {self.max_rss_kb:,} KiB" if self.max_rss_kb and self.max_rss_kb > 0 else ""
        console.print(f"memory      arena {self.arena_bytes:,} B + scratch {self.scratch_bytes:,} B{rss}")
        table = Table(box=box.SIMPLE, title_justify="left",
                      title=f"per-op profile ({'top ' + str(top) if top and len(self.calls) > top else 'all'} "
                            f"of {len(self.calls)} calls by cost)")
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("op", no_wrap=True)
        table.add_column("layer", overflow="fold", ratio=1, min_width=16)
        for title in ("prec", "instructions" if self.measure == "instructions" else "time", "share", "ops",
                      "ops/insn" if self.measure == "instructions" else "ops/s",
                      *(("% peak",) if self.measure == "time" else ())):
            table.add_column(title, justify="left" if title == "prec" else "right", no_wrap=True)
        ranked = sorted(self.calls, key=lambda c: -c.cost)[:top] if top else self.calls
        for c in ranked:
            cost = f"{int(c.cost):,}" if self.measure == "instructions" else _seconds(c.cost)
            rate = "-" if c.rate is None else (f"{c.rate:.2f}" if self.measure == "instructions" else _si(c.rate))
            row = [str(c.index), c.op, c.name, c.precision, cost, f"{c.share:.1%}", _si(c.ops), rate]
            if self.measure == "time":
                row.append("-" if c.peak_fraction is None else f"{c.peak_fraction:.1%}")
            table.add_row(*row)
        console.print(table)
        console.print("by op       " + ", ".join(f"{op} {share:.1%} ({n})" for op, n, share in self.by_op()[:8]),
                      soft_wrap=True)
        for note in self.notes:
            console.print(f"note: {note}", soft_wrap=True)


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def report_from_json(data: dict[str, Any]) -> BenchReport:
    data = {k: v for k, v in data.items() if k != "by_op"}  # derived, not stored
    calls = [CallProfile(**c) for c in data.pop("calls")]
    return BenchReport(calls=calls, **data)
