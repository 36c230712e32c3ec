"""`PruneOptions`: everything a user says about pruning, from the CLI or the Python API.

    --prune channels:RATIO[:METHOD]     structured channel pruning: remove RATIO of the channels of every
                                        prunable dependency group; METHOD ranks channels: l1 (default), l2,
                                        bn (BatchNorm |gamma|) or data (output reconstruction error on
                                        calibration data)
    --prune 'PATTERN=RATIO'             per-layer override: the output channels of layers whose name matches
                                        the glob PATTERN (or op:Type) use RATIO (0 keeps them whole); a group
                                        made by several layers takes the smallest of their ratios
    --sparsity 2:4 | 1:4 | 0.7          weight sparsity: N:M along the input channel, or an unstructured
                                        magnitude ratio
    --sparsity 'PATTERN=SPEC'           per-layer sparsity override (SPEC as above, or 0 for dense)
    --prune-exclude PATTERN             nodes neither pruning nor sparsity touches (repeatable)
    --refit / --no-refit                least-squares re-fit of the layer after a pruned group
    --prune-calib DATA                  calibration data for `data` importance and re-fitting
                                        (default: --calib's data)

A pattern is an `fnmatch` glob on node names, or `op:Type` for every node of an op type.
Channel ratios are in [0, 1); sparsity ratios in [0, 1).  Parsing happens here, once, so
the CLI and `edgekiln.compile(prune=..., sparsity=...)` accept exactly the same strings.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekiln.errors import OptionError

CHANNEL_METHODS = ("l1", "l2", "bn", "data")
SPARSITY_SCOPES = ("layer", "global")


@dataclass(frozen=True)
class SparsitySpec:
    """One sparsity request: `n`:`m` (keep n of every m weights along the input channel) or a `ratio` of zeros."""

    n: int | None = None
    m: int | None = None
    ratio: float | None = None

    @property
    def is_n_m(self) -> bool:
        return self.m is not None

    @property
    def is_dense(self) -> bool:
        return not self.is_n_m and not self.ratio

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_n_m else f"{self.ratio:g}"

    @classmethod
    def parse(cls, text: str | float) -> SparsitySpec:
        if isinstance(text, (int, float)):
            return cls(ratio=_ratio(float(text), f"--sparsity {text}"))
        text = text.strip()
        if ":" in text:
            n_text, _, m_text = text.partition(":")
            try:
                n, m = int(n_text), int(m_text)
            except ValueError:
                raise OptionError(f"--sparsity {text!r}: N:M needs two integers, e.g. 2:4 or 1:4") from None
            if not 0 < n < m:
                raise OptionError(f"--sparsity {text!r}: N:M keeps N of every M weights, so 0 < N < M (e.g. 2:4)")
            return cls(n=n, m=m)
        try:
            value = float(text)
        except ValueError:
            raise OptionError(f"--sparsity {text!r}: expected N:M (2:4, 1:4) or a ratio of zeros like 0.7") from None
        return cls(ratio=_ratio(value, f"--sparsity {text}"))


@dataclass(frozen=True)
class PruneOptions:
    """Structured channel pruning (`channels`) and weight sparsity (`sparsity`) settings.

    `channel_overrides` / `sparsity_overrides` are (pattern, value) pairs; the LAST matching
    pattern wins, so later command-line flags refine earlier ones.
    """

    channels: float | None = None
    method: str = "l1"
    channel_overrides: tuple[tuple[str, float], ...] = ()
    sparsity: SparsitySpec | None = None
    sparsity_overrides: tuple[tuple[str, SparsitySpec], ...] = ()
    sparsity_scope: str = "layer"
    exclude: tuple[str, ...] = ()
    refit: bool = True
    calib: Any = None
    calib_samples: int | None = None

    def __post_init__(self) -> None:
        if self.method not in CHANNEL_METHODS:
            raise OptionError(f"--prune channels:RATIO:{self.method}: unknown importance; use one of "
                              + ", ".join(CHANNEL_METHODS))
        if self.sparsity_scope not in SPARSITY_SCOPES:
            raise OptionError(f"sparsity scope {self.sparsity_scope!r}: use 'layer' or 'global'")

    # -- construction from user strings --------------------------------------------------
    @classmethod
    def parse(cls, prune: str | Iterable[str] | None = None, sparsity: str | float | Iterable[str] | None = None,
              exclude: str | Iterable[str] | None = None, **fields: Any) -> PruneOptions | None:
        """Options from `--prune` / `--sparsity` / `--prune-exclude` values; None when nothing asks to prune."""
        channels, method, channel_overrides = None, "l1", []
        for item in _as_tuple(prune):
            if item.startswith("channels:") or item == "channels":
                channels, method = _parse_channels(item)
            elif "=" in item:
                pattern, value = _split_override(item, "--prune")
                try:
                    channel_overrides.append((pattern, _ratio(float(value), f"--prune {item}")))
                except ValueError:
                    raise OptionError(f"--prune {item!r}: the override value must be a ratio like 0.5") from None
            else:
                raise OptionError(f"--prune {item!r}: expected channels:RATIO[:l1|l2|bn|data] "
                                  "(e.g. channels:0.3) or a per-layer override PATTERN=RATIO")
        spec, sparsity_overrides = None, []
        for item in (sparsity,) if isinstance(sparsity, (int, float)) else _as_tuple(sparsity):
            if isinstance(item, str) and "=" in item:
                pattern, value = _split_override(item, "--sparsity")
                sparsity_overrides.append((pattern, SparsitySpec.parse(value)))
            else:
                spec = SparsitySpec.parse(item)
        excluded = _as_tuple(exclude)
        if channels is None and spec is None:
            if channel_overrides or sparsity_overrides:
                return cls(channel_overrides=tuple(channel_overrides), sparsity_overrides=tuple(sparsity_overrides),
                           exclude=excluded, method=method, **fields)
            if excluded or fields.get("calib") is not None:
                raise OptionError("--prune-exclude and --prune-calib need --prune channels:RATIO or --sparsity")
            return None
        return cls(channels=channels, method=method, channel_overrides=tuple(channel_overrides), sparsity=spec,
                   sparsity_overrides=tuple(sparsity_overrides), exclude=excluded, **fields)

    # -- questions the passes ask ----------------------------------------------------------
    @property
    def prunes_channels(self) -> bool:
        return bool(self.channels) or any(ratio > 0 for _, ratio in self.channel_overrides)

    @property
    def sparsifies(self) -> bool:
        return (self.sparsity is not None and not self.sparsity.is_dense) or any(
            not s.is_dense for _, s in self.sparsity_overrides)

    def excluded(self, node_name: str, op_type: str = "") -> bool:
        return any(matches(p, node_name, op_type) for p in self.exclude)

    def channel_ratio_for(self, node_name: str, op_type: str = "") -> float:
        """The channel ratio for a node: the last matching override, else `channels` (0: not pruned)."""
        if self.excluded(node_name, op_type):
            return 0.0
        ratio = self.channels or 0.0
        for pattern, value in self.channel_overrides:
            if matches(pattern, node_name, op_type):
                ratio = value
        return ratio

    def sparsity_for(self, node_name: str, op_type: str = "") -> SparsitySpec | None:
        """The sparsity for a node: the last matching override, else `sparsity`; None when dense or excluded."""
        if self.excluded(node_name, op_type):
            return None
        spec = self.sparsity
        for pattern, value in self.sparsity_overrides:
            if matches(pattern, node_name, op_type):
                spec = value
        return None if spec is None or spec.is_dense else spec

    def to_manifest(self) -> dict[str, Any]:
        calib = self.calib
        return {
            "channels": self.channels, "method": self.method,
            "channel_overrides": [list(o) for o in self.channel_overrides],
            "sparsity": None if self.sparsity is None else str(self.sparsity),
            "sparsity_overrides": [[p, str(s)] for p, s in self.sparsity_overrides],
            "sparsity_scope": self.sparsity_scope, "exclude": list(self.exclude), "refit": self.refit,
            "calib": calib if calib is None or isinstance(calib, str) else (
                Path(calib).name if isinstance(calib, Path) else f"<{type(calib).__name__}>"),
        }


def matches(pattern: str, node_name: str, op_type: str = "") -> bool:
    """`op:Type` matches an op type; anything else is an fnmatch glob on the node name."""
    if pattern.startswith("op:"):
        return pattern[3:] == op_type
    return fnmatch.fnmatchcase(node_name, pattern)


def _parse_channels(item: str) -> tuple[float, str]:
    parts = item.split(":")
    if len(parts) not in (2, 3):
        raise OptionError(f"--prune {item!r}: expected channels:RATIO[:l1|l2|bn|data], e.g. channels:0.3")
    try:
        ratio = _ratio(float(parts[1]), f"--prune {item}")
    except ValueError:
        raise OptionError(f"--prune {item!r}: RATIO must be a number in [0, 1), e.g. channels:0.3") from None
    method = parts[2] if len(parts) == 3 else "l1"
    if method not in CHANNEL_METHODS:
        raise OptionError(f"--prune {item!r}: unknown importance {method!r}; use one of " + ", ".join(CHANNEL_METHODS))
    return ratio, method


def _split_override(item: str, flag: str) -> tuple[str, str]:
    pattern, _, value = item.rpartition("=")
    if not pattern:
        raise OptionError(f"{flag} {item!r}: a per-layer override is PATTERN=VALUE with a node-name glob or op:Type")
    return pattern, value


def _ratio(value: float, where: str) -> float:
    if not 0.0 <= value < 1.0:
        raise OptionError(f"{where}: the ratio must be in [0, 1) (0.3 removes 30%)")
    return value


def _as_tuple(values: Any) -> tuple:
    if values is None:
        return ()
    return (values,) if isinstance(values, (str, int, float)) else tuple(values)
