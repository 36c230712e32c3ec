"""How an artifact is executed on this machine, chosen by the manifest's `runner` field.

`onnxruntime` runs the artifact's optimized `model.onnx` (for a quantized artifact: the QDQ
float reference); `reference` runs the lowered Program in the numpy integer interpreter,
the definition of correct for quantized programs.  Target backends add their native
runners here (runtime_arm under qemu or on the host, OpenCL on PoCL, LiteRT, HLS C-sim).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from edgekiln.errors import ArtifactError


class Runner(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxRuntimeRunner:
    """Runs `model.onnx` in onnxruntime on the CPU, one thread (deterministic and quiet)."""

    def __init__(self, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(files["model.onnx"], options, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds)))


def _reference_runner(files: dict[str, bytes], manifest: dict[str, Any]) -> Runner:
    # The reference backend is imported on use: the compiler never loads a backend at import time.
    from edgekiln.backends.reference.runner import ReferenceRunner

    return ReferenceRunner(files, manifest)


def _arm_cpu_runner(files: dict[str, bytes], manifest: dict[str, Any]) -> Runner:
    # runtime_arm's ek_run, locally (host build) or under qemu-user (ARM targets).
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner

    return ArmCpuRunner(files, manifest)


def _litert_runner(files: dict[str, bytes], manifest: dict[str, Any]) -> Runner:
    # model.tflite in the LiteRT interpreter (reference kernels), for edgetpu artifacts.
    from edgekiln.backends.edgetpu.litert_runner import LiteRTRunner

    return LiteRTRunner(files, manifest)


RUNNERS = {"onnxruntime": OnnxRuntimeRunner, "reference": _reference_runner, "arm_cpu": _arm_cpu_runner,
           "litert": _litert_runner}


def make_runner(name: str, files: dict[str, bytes], manifest: dict[str, Any]) -> Runner:
    if name not in RUNNERS:
        raise ArtifactError(f"artifact runner {name!r} is not known to this edgekiln (known: {', '.join(RUNNERS)})")
    return RUNNERS[name](files, manifest)
