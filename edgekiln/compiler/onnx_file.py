"""Writing single files atomically (temp file in the same folder, then one rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgekiln.compiler.graph import Graph
from edgekiln.errors import ArtifactError


def write_atomically(path: Path, data: bytes, force: bool = True) -> None:
    path = Path(path)
    if path.exists() and not force:
        raise ArtifactError(f"output {path} already exists; choose another path or pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_onnx_atomically(graph: Graph, path: Path, force: bool = False) -> None:
    """The optimized model as one .onnx file (weights inline; models here stay under 2 GB)."""
    write_atomically(path, graph.to_bytes(), force=force)
