"""`ReferenceRunner`: runs an artifact's lowered Program (`program/`) in the integer reference."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekiln.backends.reference.interpreter import run_program
from edgekiln.compiler.program import Program
from edgekiln.errors import ArtifactError

PROGRAM_DIR = "program/"


class ReferenceRunner:
    """`files` are the artifact's files keyed by relative path; the Program is read from `program/`."""

    def __init__(self, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        wanted = {path: data for path, data in files.items()
                  if path.startswith(PROGRAM_DIR) and path.count("/") == 1}
        if f"{PROGRAM_DIR}program.json" not in wanted:
            raise ArtifactError("the artifact has no program/program.json: it was not lowered to a Program, "
                                "so the reference runner cannot run it; recompile it")
        with tempfile.TemporaryDirectory() as tmp:
            for path, data in wanted.items():
                (Path(tmp) / path.removeprefix(PROGRAM_DIR)).write_bytes(data)
            self.program = Program.load(tmp)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_program(self.program, feeds)
