"""The calibration statistics cache: activation ranges on disk, so a second compile skips calibration.

One JSON file per key under `$EDGEKILN_CACHE/calibration` (default
`~/.cache/edgekiln/calibration`), named by

    sha256(cache format, graph bytes hash, data fingerprint, method, observed value names)

so a different model, different data, another method or another set of values never hits.
Files are written to a temporary name in the same folder and renamed into place, so a
crash or a parallel run never leaves a half-written entry; an unreadable entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

CACHE_FORMAT = 1


def cache_dir() -> Path:
    root = os.environ.get("EDGEKILN_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "edgekiln"
    return base / "calibration"


def cache_key(graph_hash: str, data_fingerprint: str, method: str, values: Sequence[str]) -> str:
    digest = hashlib.sha256(f"format={CACHE_FORMAT}\0{graph_hash}\0{data_fingerprint}\0{method}\0".encode())
    digest.update("\0".join(values).encode())
    return digest.hexdigest()


def cache_path(key: str) -> Path:
    return cache_dir() / f"{key}.json"


def load_entry(key: str) -> dict | None:
    """The stored ranges {value: {...}} for `key`, or None (missing or unreadable)."""
    try:
        entry = json.loads(cache_path(key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or not isinstance(entry.get("ranges"), dict):
        return None
    return entry["ranges"]


def store_entry(key: str, ranges: dict) -> Path:
    """Write atomically; returns the entry's path."""
    path = cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": CACHE_FORMAT, "ranges": ranges}, indent=1, sort_keys=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
