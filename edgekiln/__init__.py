"""edgekiln: an ahead-of-time deployment compiler for neural networks on edge devices.

    import edgekiln
    artifact = edgekiln.compile("model.onnx", target="cortex-a76", input_shapes={"x": (1, 3, 224, 224)})
    artifact.save("out/")
    outputs = edgekiln.Artifact.load("out/").run({"x": x})
"""

from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"

from edgekiln.compiler.artifact import Artifact  # noqa: E402
from edgekiln.errors import EdgekilnError  # noqa: E402


def compile(model: str | os.PathLike | Any, target: str = "host", *, quant: str | None = None,
            calib: Any = None, **options: Any) -> Artifact:
    """Compile an ONNX model (path or `onnx.ModelProto`) for `target` and return the artifact.

    Options: `input_shapes` ({name: shape} pinning dynamic dims), `check_ops` (refuse ops the
    target cannot run; default True), `progress`.  Quantization: `quant` ("int8", "int4:g64",
    "ternary", "w4a16:g64") with `calib` (a path, "synthetic", an array or an iterable of
    samples) and any other `QuantOptions` field (`calib_method`, `weights`, `keep_float`,
    `equalize`, `bias_correction`, ...).  Pruning: `prune` ("channels:0.3[:l1|l2|bn|data]" and
    "PATTERN=RATIO" overrides), `sparsity` ("2:4", "1:4", 0.7, "PATTERN=SPEC"), `sparsity_scope` ("layer" | "global"), `prune_exclude`,
    `refit` (default True), `prune_calib` (default: `calib`); see `compiler/prune_options.py`.
    arm_cpu targets: `weight_layout` ("fast", the default: low-bit weights in the layout that runs
    fastest on the target; "compact": the fewest bytes, unpacked at run time).
    The artifact is in memory until `.save(path)`.
    """
    from dataclasses import fields

    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.quant_options import QuantOptions, as_tuple

    quant_fields = {f.name for f in fields(QuantOptions)}
    quant_kwargs = {k: options.pop(k) for k in list(options) if k in quant_fields}
    quantization = None
    if quant is not None:
        for key in ("weights", "keep_float"):
            if key in quant_kwargs:
                quant_kwargs[key] = as_tuple(quant_kwargs[key])
        quantization = QuantOptions(quant=quant, calib=calib, **quant_kwargs)
    elif calib is not None or quant_kwargs:
        raise EdgekilnError("calib and the other quantization options need quant='int8' (or another precision)")
    pruning = _prune_options(options)
    return compile_model(model, target, quantization=quantization, pruning=pruning, **options).artifact


def _prune_options(options: dict[str, Any]) -> Any:
    """Pops the pruning keywords out of `options` into a `PruneOptions` (None when nothing asks to prune)."""
    from edgekiln.compiler.prune_options import PruneOptions

    fields = {"refit": options.pop("refit", True), "calib": options.pop("prune_calib", None),
              "sparsity_scope": options.pop("sparsity_scope", "layer")}
    if "prune_calib_samples" in options:
        fields["calib_samples"] = options.pop("prune_calib_samples")
    return PruneOptions.parse(options.pop("prune", None), options.pop("sparsity", None),
                              options.pop("prune_exclude", None), **fields)


def load(path: str | os.PathLike) -> Artifact:
    """Load a saved artifact (verifying every file against its manifest checksum)."""
    return Artifact.load(path)


__all__ = ["Artifact", "EdgekilnError", "compile", "load", "__version__"]
