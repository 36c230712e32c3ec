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


def compile(model: str | os.PathLike | Any, target: str = "host", **options: Any) -> Artifact:
    """Compile an ONNX model (path or `onnx.ModelProto`) for `target` and return the artifact.

    Options: `input_shapes` ({name: shape} pinning dynamic dims), `check_ops` (refuse ops the
    target cannot run; default True).  The artifact is in memory until `.save(path)`.
    """
    from edgekiln.compiler.compile import compile_model

    return compile_model(model, target, **options).artifact


def load(path: str | os.PathLike) -> Artifact:
    """Load a saved artifact (verifying every file against its manifest checksum)."""
    return Artifact.load(path)


__all__ = ["Artifact", "EdgekilnError", "compile", "load", "__version__"]
