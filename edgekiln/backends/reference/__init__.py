"""The integer reference backend: a numpy interpreter of the Program (the definition of a correct
output) and a runner that executes an artifact's `program/` with it."""

from edgekiln.backends.reference.interpreter import run_program
from edgekiln.backends.reference.runner import ReferenceRunner

__all__ = ["ReferenceRunner", "run_program"]
