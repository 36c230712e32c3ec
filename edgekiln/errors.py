"""The errors edgekiln raises for a user's mistake.

Every `EdgekilnError` is a problem the user can fix: the message names the file, node or
option at fault and says what to do.  The CLI prints it on one line and exits with code 2;
anything else escaping is a bug in edgekiln and keeps its traceback.
"""

from __future__ import annotations


class EdgekilnError(Exception):
    """A user-facing error: bad model, bad option, missing tool."""

    exit_code = 2


class ModelLoadError(EdgekilnError):
    """The model file cannot be read or is not valid ONNX."""


class DynamicShapeError(EdgekilnError):
    """A graph input still has a symbolic or unknown dimension."""


class UnsupportedOpError(EdgekilnError):
    """A node uses an operator the compiler (or the chosen target) cannot run."""


class UnknownTargetError(EdgekilnError):
    """A target name that no description file defines."""


class OptionError(EdgekilnError):
    """An option value that cannot be parsed or does not fit the model."""


class PassError(EdgekilnError):
    """A pass produced an invalid graph; names the pass, the node and the passes before it."""


class ArtifactError(EdgekilnError):
    """An artifact that cannot be written, read or run."""


class MissingExtraError(EdgekilnError):
    """An optional dependency is not installed."""


class CalibrationError(EdgekilnError):
    """Calibration data that does not fit the model (shape, dtype, count, NaN/Inf), or calibration that cannot run."""


class QuantizationError(EdgekilnError):
    """A model, config or range that cannot be quantized as asked (missing range, NaN/Inf weights, ...)."""
