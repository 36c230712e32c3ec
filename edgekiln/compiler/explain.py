"""The `--explain` trace: what each pass did, and why it did not fire where it did not."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class PassRecord:
    """One run of one pass in one sweep of the pass manager."""

    pass_name: str
    sweep: int
    changed: bool
    nodes_before: int
    nodes_after: int
    applied: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)
    stage: str = ""


@dataclass
class ExplainTrace:
    """Every pass record of a compilation, plus free-form notes from the stages around them."""

    records: list[PassRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def render(self) -> str:
        lines = [f"note: {n}" for n in self.notes]
        for r in self.records:
            # A pass that neither changed anything nor considered a candidate is noise, and so
            # is a later sweep's unchanged run: its reasons were stated in sweep 1.
            if not (r.changed or r.applied or r.not_applied) or (r.sweep > 1 and not r.changed):
                continue
            delta = f"{r.nodes_before} -> {r.nodes_after} nodes"
            where = f"{r.stage} sweep {r.sweep}" if r.stage else f"sweep {r.sweep}"
            lines.append(f"[{where}] {r.pass_name}: {'changed' if r.changed else 'no change'} ({delta})")
            lines.extend(f"    applied: {a}" for a in r.applied)
            # Reasons repeat every sweep; the first sweep states them once.
            if r.sweep == 1 or r.changed:
                lines.extend(f"    not applied: {n}" for n in r.not_applied)
        if not any(r.changed for r in self.records):
            lines.append(f"passes: none of {len({r.pass_name for r in self.records})} changed the graph")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"notes": self.notes, "passes": [asdict(r) for r in self.records]}, indent=2)
