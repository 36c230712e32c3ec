"""Parsing `--input-shape name=1x3x224x224` options."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from edgekiln.errors import OptionError

InputShapes = dict[str, tuple[int, ...]]


def parse_input_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """`'x=1x3x224x224'` -> `('x', (1, 3, 224, 224))`; commas work as separators too."""
    name, sep, dims = spec.partition("=")
    if not sep or not name.strip() or not dims.strip():
        raise OptionError(f"--input-shape {spec!r}: expected NAME=DIMS, e.g. x=1x3x224x224")
    parts = dims.replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise OptionError(
            f"--input-shape {spec!r}: dimensions must be positive integers separated by 'x', e.g. 1x3x224x224"
        ) from None
    if any(d <= 0 for d in shape):
        raise OptionError(f"--input-shape {spec!r}: every dimension must be positive")
    return name.strip(), shape


def parse_input_shapes(specs: Iterable[str] | Mapping[str, Iterable[int]] | None) -> InputShapes:
    """Options from the CLI (strings) or the API (a mapping) as one dict."""
    if specs is None:
        return {}
    if isinstance(specs, Mapping):
        return {str(k): tuple(int(d) for d in v) for k, v in specs.items()}
    shapes: InputShapes = {}
    for spec in specs:
        name, shape = parse_input_shape(spec)
        if name in shapes:
            raise OptionError(f"--input-shape given twice for input {name!r}")
        shapes[name] = shape
    return shapes
