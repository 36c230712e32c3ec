"""Lazy imports of heavy optional dependencies (the extras in pyproject.toml)."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekiln.errors import MissingExtraError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or fail with a message naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the Python package '{module}', which is not installed "
            f"({exc}). Install it with: pip install 'edgekiln[{extra}]'"
        ) from exc
