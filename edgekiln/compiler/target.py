"""Targets: the devices edgekiln compiles for, described by data files.

"Targets are data": each bundled device is one TOML file in `edgekiln/compiler/targets/`,
and a user adds a device by writing such a file and passing its path
(`--target path/to/mydevice.toml`), not by writing code.  Every file is validated on load;
a missing field or a value of the wrong type is an `EdgekilnError` naming the file and field.

Common fields (units are part of the contract):

    name, description        `name` is what `--target NAME` takes
    kind                     arm_cpu | x86_cpu | mobile_gpu | edgetpu | fpga
    backend                  the backend that compiles for it: arm_cpu (also for x86 hosts, through
                             the C runtime's AVX2 path) | mobile_gpu | edgetpu | fpga_hls
    precisions               what that backend can emit for the device: fp32 fp16 int8 int4 ternary
    cores, clock_ghz         parallel units (CPU cores, GPU shader cores) and their clock in GHz;
                             required for CPUs and GPUs, absent where they mean nothing (an FPGA)
    ops_per_cycle.<p>        optional: peak arithmetic ops per clock per core (per device when
                             `cores` is absent); a multiply-accumulate counts as 2 ops
    peak_ops_per_second.<p>  peak ops/s for every precision in `precisions`; where ops_per_cycle
                             is given it must equal cores x clock x ops_per_cycle (1% slack)
    memory_bandwidth_gbps    off-chip bandwidth in GB/s (1e9 bytes/s); for a USB/PCIe accelerator
                             the host link, which every weight that does not fit on chip crosses
    on_chip_memory_bytes     memory a kernel can keep its working set in: a CPU's last-level cache
                             (shared L3, else all L2), a GPU's L2, EdgeTPU SRAM, FPGA BRAM + URAM

The kind's own table (`[cpu]`, `[gpu]`, `[accelerator]` or `[fpga]`) is kept whole as
`Target.details`; from `[cpu]` the ISA `features` and the `qemu_cpu` model that emulates the
core (`qemu-aarch64 -cpu MODEL`) are lifted into typed fields because backends branch on them.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.table import Table

from edgekiln.errors import EdgekilnError, UnknownTargetError

# kind -> the name of its own table in the file
KIND_TABLES = {"arm_cpu": "cpu", "x86_cpu": "cpu", "mobile_gpu": "gpu", "edgetpu": "accelerator", "fpga": "fpga"}
BACKENDS = ("arm_cpu", "mobile_gpu", "edgetpu", "fpga_hls")
PRECISIONS = ("fp32", "fp16", "int8", "int4", "ternary")
# A feature is only worth naming if some kernel selects on it; a typo must not silently drop one.
FEATURES = ("neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2",
            "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512vnni", "avxvnni")
SUMMARY_COLUMNS = ("name", "kind", "backend", "cores", "clock", "features", "peak int8", "peak fp32", "memory")

# field -> (shape, required); shapes are checked by _SHAPES below
_FIELDS = {
    "name": ("text", True),
    "kind": ("text", True),
    "backend": ("text", True),
    "description": ("text", True),
    "precisions": ("names", True),
    "peak_ops_per_second": ("numbers", True),
    "memory_bandwidth_gbps": ("number", True),
    "on_chip_memory_bytes": ("count", True),
    "cores": ("count", False),
    "clock_ghz": ("number", False),
    "ops_per_cycle": ("numbers", False),
}
_CPU_FIELDS = {"features": ("names", True), "qemu_cpu": ("text", False)}
_SHAPES = {
    "text": ("a non-empty string", lambda v: isinstance(v, str) and v.strip() != ""),
    "count": ("a positive integer", lambda v: type(v) is int and v > 0),
    "number": ("a positive number", lambda v: type(v) in (int, float) and 0 < v < math.inf),
    "names": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "numbers": ("a table of positive numbers", lambda v: isinstance(v, dict)),  # entries checked too
    "table": ("a table", lambda v: isinstance(v, dict)),
}


@dataclass(frozen=True)
class Target:
    """One device description; see the module docstring for what each field means."""

    name: str
    kind: str
    backend: str
    description: str
    precisions: tuple[str, ...]
    peak_ops_per_second: dict[str, float] = field(hash=False)
    memory_bandwidth_gbps: float
    on_chip_memory_bytes: int
    features: tuple[str, ...] = ()
    qemu_cpu: str | None = None
    cores: int | None = None
    clock_ghz: float | None = None
    ops_per_cycle: dict[str, float] = field(default_factory=dict, hash=False)
    details: dict[str, Any] = field(default_factory=dict, hash=False)

    def summary_row(self) -> dict[str, str]:
        """The `edgekiln targets` columns (SUMMARY_COLUMNS), as display strings."""
        values = (
            self.name, self.kind, self.backend,
            str(self.cores) if self.cores else "-",
            f"{self.clock_ghz:g} GHz" if self.clock_ghz else "-",
            " ".join(self.features) or "-",
            _humanize(self.peak_ops_per_second.get("int8"), "OPS"),
            _humanize(self.peak_ops_per_second.get("fp32"), "FLOPS"),
            f"{self.memory_bandwidth_gbps:.1f} GB/s, {_bytes(self.on_chip_memory_bytes)}",
        )
        return dict(zip(SUMMARY_COLUMNS, values))


def render_targets_table(targets: Iterable[Target]) -> Table:
    table = Table(title="edgekiln targets", caption="memory: DRAM (or host link) bandwidth, on-chip memory")
    for column in SUMMARY_COLUMNS:
        numeric = column in ("cores", "clock", "peak int8", "peak fp32")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column == "name")
    for target in targets:
        table.add_row(*target.summary_row().values())
    return table


def load_target_file(path: str | os.PathLike[str]) -> Target:
    """Load and validate a user's device description file."""
    path = Path(path)
    if not path.is_file():
        raise EdgekilnError(f"target description file '{path}' does not exist")
    return _parse(path.read_bytes(), str(path))


def available_targets() -> list[Target]:
    """The bundled targets, sorted by name."""
    return list(_bundled())


def get_target(name_or_path: str | os.PathLike[str]) -> Target:
    """A bundled target by name, or a description file when given a path (anything ending in .toml)."""
    text = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or text.lower().endswith(".toml") or "/" in text or os.sep in text:
        return load_target_file(text)
    by_name = {t.name: t for t in _bundled()}
    key = text.strip().lower()
    if key in by_name:
        return by_name[key]
    close = difflib.get_close_matches(key, by_name, n=3, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else "."
    raise UnknownTargetError(f"unknown target '{text}'{hint} Run 'edgekiln targets' for the list, "
                             "or pass a description file (.toml)")


@functools.cache
def _bundled() -> tuple[Target, ...]:
    # importlib.resources rather than __file__, so the files are found inside a wheel or zip too.
    folder = resources.files("edgekiln.compiler") / "targets"
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".toml"):
            continue
        source = f"edgekiln/compiler/targets/{entry.name}"
        target = _parse(entry.read_bytes(), source)
        if target.name != entry.name.removesuffix(".toml"):
            raise _error(source, "name", f"is '{target.name}' but a bundled target's name must match its file name")
        found.append(target)
    return tuple(sorted(found, key=lambda t: t.name))


def _parse(raw: bytes, source: str) -> Target:
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EdgekilnError(f"{source}: not a valid TOML file: {exc}") from exc

    # Unknown keys first: a misspelt optional field would otherwise be silently ignored.
    known = [*_FIELDS, *dict.fromkeys(KIND_TABLES.values())]
    unknown = sorted(set(data) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise _error(source, unknown[0], "is not a known field" + (f" (did you mean '{close[0]}'?)" if close else ""))
    values = {f: _field(data, f, shape, required, source) for f, (shape, required) in _FIELDS.items()}
    kind = _one_of(values["kind"], KIND_TABLES, "kind", source)
    _one_of(values["backend"], BACKENDS, "backend", source)
    table_name = KIND_TABLES[kind]
    for other in set(KIND_TABLES.values()) - {table_name}:
        if other in data:
            raise _error(source, other, f"does not belong in a description of kind '{kind}', "
                                        f"which has a [{table_name}] table")
    details = _field(data, table_name, "table", True, source)
    _check_numbers(values, kind, source)

    features, qemu_cpu = (), None
    if table_name == "cpu":
        cpu = {f: _field(details, f, shape, required, source, prefix="cpu.")
               for f, (shape, required) in _CPU_FIELDS.items()}
        features = tuple(_one_of(f, FEATURES, "cpu.features", source) for f in cpu["features"])
        qemu_cpu = cpu["qemu_cpu"]

    return Target(
        name=values["name"], kind=kind, backend=values["backend"], description=values["description"],
        precisions=tuple(values["precisions"]),
        peak_ops_per_second={p: float(v) for p, v in values["peak_ops_per_second"].items()},
        memory_bandwidth_gbps=float(values["memory_bandwidth_gbps"]),
        on_chip_memory_bytes=values["on_chip_memory_bytes"], features=features, qemu_cpu=qemu_cpu,
        cores=values["cores"],
        clock_ghz=None if values["clock_ghz"] is None else float(values["clock_ghz"]),
        ops_per_cycle={p: float(v) for p, v in (values["ops_per_cycle"] or {}).items()}, details=details,
    )


def _check_numbers(values: dict[str, Any], kind: str, source: str) -> None:
    """Precisions are known and each has a peak; peaks agree with cores x clock x ops_per_cycle."""
    precisions = values["precisions"]
    if not precisions:
        raise _error(source, "precisions", "must name at least one precision")
    for p in precisions:
        _one_of(p, PRECISIONS, "precisions", source)
    peak, per_cycle = values["peak_ops_per_second"], values["ops_per_cycle"] or {}
    for p in precisions:
        if p not in peak:
            raise _error(source, f"peak_ops_per_second.{p}", "is missing (every listed precision needs a peak)")
    for table, entries in (("peak_ops_per_second", peak), ("ops_per_cycle", per_cycle)):
        for p in entries:
            if p not in precisions:
                raise _error(source, f"{table}.{p}", f"names a precision not in 'precisions' {precisions}")

    if kind in ("arm_cpu", "x86_cpu", "mobile_gpu"):
        for f in ("cores", "clock_ghz"):
            if values[f] is None:
                raise _error(source, f, f"is missing (required for kind '{kind}')")
    if per_cycle and values["clock_ghz"] is None:
        raise _error(source, "clock_ghz", "is missing (required when 'ops_per_cycle' is given)")
    for p, ops in per_cycle.items():
        derived = (values["cores"] or 1) * values["clock_ghz"] * 1e9 * ops
        if not math.isclose(peak[p], derived, rel_tol=0.01):
            raise _error(source, f"peak_ops_per_second.{p}",
                         f"is {peak[p]:.4g} but cores x clock_ghz x ops_per_cycle.{p} gives {derived:.4g}")


def _field(data: dict, name: str, shape: str, required: bool, source: str, *, prefix: str = "") -> Any:
    if name not in data:
        if required:
            raise _error(source, prefix + name, "is missing")
        return None
    value = data[name]
    words, ok = _SHAPES[shape]
    if not ok(value):
        raise _error(source, prefix + name, f"must be {words}, got {value!r}")
    if shape == "numbers":
        for key in value:
            _field(value, key, "number", True, source, prefix=f"{prefix}{name}.")
    return value


def _one_of(value: str, allowed: Iterable[str], name: str, source: str) -> str:
    if value not in allowed:
        raise _error(source, name, f"has '{value}', which is not one of: {', '.join(allowed)}")
    return value


def _error(source: str, name: str, problem: str) -> EdgekilnError:
    return EdgekilnError(f"{source}: field '{name}' {problem}")


def _humanize(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.1f} {prefix}{unit}"
    return f"{value:.1f} {unit}"


def _bytes(count: int) -> str:
    for prefix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {prefix}"
    return f"{count} B"
