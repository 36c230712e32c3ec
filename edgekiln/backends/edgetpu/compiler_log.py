"""Parse edgetpu_compiler's console output and operation log, and merge it into the Edge TPU report.

The format, as Coral documents it ([COMP], "Compiler usage") and as the compiler prints it
(`edgetpu_compiler -s model.tflite`):

    Edge TPU Compiler version 16.0.384591198
    Model compiled successfully in 1237 ms.
    Input model: model.tflite
    Input size: 3.94MiB
    Output model: model_edgetpu.tflite
    Output size: 4.21MiB
    On-chip memory used for caching model parameters: 3.88MiB
    On-chip memory remaining for caching model parameters: 3.49MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 72
    Operation log: model_edgetpu.log
    Model successfully compiled but not all operations are supported by the Edge TPU. ...
    Number of operations that will run on Edge TPU: 70
    Number of operations that will run on CPU: 2

    Operator                       Count      Status

    CONV_2D                        63         Mapped to Edge TPU
    SOFTMAX                        1          More than one subgraph is not supported

The `.log` file holds the header lines and the same "Operator / Count / Status" table.  A failed
compile prints instead "ERROR: Didn't find op for builtin opcode ..." / "Invalid model" /
"Internal compiler error. Aborting!".

The table counts ops per (operator, status), not per op, so `merge_into_report` attaches the
statuses to the report's ops of each operator in file order, mapped ones first — a pairing, not
an identification — and lists every operator whose mapped count differs from the report's.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

MAPPED = "Mapped to Edge TPU"

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = re.compile(r"([0-9.]+)\s*(B|KiB|MiB|GiB)$")
_ROW = re.compile(r"^([A-Z][A-Z0-9_]*(?::\S+)?)\s+(\d+)\s+(\S.*?)\s*$")
_FIELDS = {
    "Input model": ("input_model", str), "Output model": ("output_model", str),
    "Input size": ("input_bytes", "size"), "Output size": ("output_bytes", "size"),
    "On-chip memory used for caching model parameters": ("on_chip_used_bytes", "size"),
    "On-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", "size"),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_bytes", "size"),
    "Number of Edge TPU subgraphs": ("tpu_subgraphs", int), "Total number of operations": ("total_ops", int),
    "Number of operations that will run on Edge TPU": ("tpu_ops", int),
    "Number of operations that will run on CPU": ("cpu_ops", int),
}


@dataclass
class OperatorRow:
    operator: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status == MAPPED


@dataclass
class CompilerLog:
    version: str | None = None
    compiled: bool = False
    all_supported: bool | None = None  # None when the log does not say
    error: str | None = None
    rows: list[OperatorRow] = field(default_factory=list)
    input_model: str | None = None
    output_model: str | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    on_chip_used_bytes: int | None = None
    on_chip_remaining_bytes: int | None = None
    off_chip_bytes: int | None = None
    tpu_subgraphs: int | None = None
    total_ops: int | None = None
    tpu_ops: int | None = None
    cpu_ops: int | None = None

    @property
    def summary(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        if not self.compiled and not self.rows:
            return "no result in the log"
        mapped = sum(r.count for r in self.rows if r.mapped)
        total = sum(r.count for r in self.rows)
        tail = "" if self.all_supported in (True, None) else " (not all operations are supported)"
        return f"{mapped} of {total} ops mapped to the Edge TPU{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


def parse_compiler_log(*texts: str) -> CompilerLog:
    """Parse the compiler's stdout and/or its `.log` file (later texts fill what earlier ones lack)."""
    log = CompilerLog()
    rows: dict[tuple[str, str], int] = {}
    for text in texts:
        in_table = False
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("Edge TPU Compiler version"):
                log.version = line.rsplit(" ", 1)[-1]
            elif line.startswith("Model compiled successfully") or line == "Compilation succeeded!":
                log.compiled = True
            elif line.startswith("Model successfully compiled but not all operations are supported"):
                log.compiled, log.all_supported = True, False
            elif line.startswith(("ERROR:", "Internal compiler error", "Invalid model", "Model could not be parsed")):
                log.error = log.error or line.removeprefix("ERROR:").strip()
            elif re.match(r"^Operator\s+Count\s+Status$", line):
                in_table = True
            elif in_table and (match := _ROW.match(line)):
                key = (match.group(1), match.group(3))
                # stdout and the .log repeat the table: keep one copy per (operator, status)
                rows[key] = max(rows.get(key, 0), int(match.group(2)))
            elif ":" in line:
                in_table = False
                name, _, value = line.partition(":")
                if name.strip() in _FIELDS:
                    attribute, kind = _FIELDS[name.strip()]
                    if getattr(log, attribute) is None:
                        setattr(log, attribute, _value(value.strip(), kind))
    log.rows = [OperatorRow(op, count, status) for (op, status), count in rows.items()]
    if log.error:
        log.compiled = False
    elif log.compiled and log.all_supported is None and log.rows:
        log.all_supported = all(r.mapped for r in log.rows)
    return log


def _value(text: str, kind: Any) -> Any:
    if kind == "size":
        match = _SIZE.match(text)
        return round(float(match.group(1)) * _UNITS[match.group(2)]) if match else None
    try:
        return kind(text)
    except ValueError:
        return None


def merge_into_report(report: Any, log: CompilerLog) -> None:
    """Attach the compiler's statuses to `report.ops` and record where they disagree with the rules."""
    statuses: dict[str, list[str]] = {}
    for row in sorted(log.rows, key=lambda r: not r.mapped):  # mapped first, see the module docstring
        statuses.setdefault(row.operator, []).extend([row.status] * row.count)
    by_operator: dict[str, list[dict[str, Any]]] = {}
    for op in report.ops:
        by_operator.setdefault(op["op"], []).append(op)
    disagreements = []
    for operator, ops in by_operator.items():
        queue = statuses.get(operator, [])
        ordered = sorted(ops, key=lambda o: o["device"] != "tpu")
        for op, status in zip(ordered, queue):
            op["compiler_status"] = status
        ours = sum(o["device"] == "tpu" for o in ops)
        theirs = sum(s == MAPPED for s in queue)
        if ours != theirs or len(queue) not in (0, len(ops)):
            disagreements.append(f"{operator}: rules map {ours} of {len(ops)}, edgetpu_compiler maps {theirs} "
                                 f"of {len(queue)}")
    report.compiler = {**log.to_dict(), "disagreements": disagreements}
