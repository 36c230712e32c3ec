"""The Edge TPU report files every edgetpu compile puts into its artifact.

    edgetpu_report.json / .txt   the report of model.tflite (`report.py`)
    model_edgetpu.tflite         edgetpu_compiler's output model, when the compiler is on PATH
    edgetpu_compiler.log         its console output and operation log, parsed into the report

Without edgetpu_compiler the report comes from Coral's documented rules alone, and the caller is
told so once (the returned note).
"""

from __future__ import annotations

import warnings
from typing import Any

from edgekiln.backends.edgetpu.compiler_log import merge_into_report
from edgekiln.backends.edgetpu.compiler_log_runner import (
    absent_message,
    find_compiler,
    run_compiler,
)
from edgekiln.backends.edgetpu.report import EdgeTpuReport, report_from_tflite


def edgetpu_report_files(tflite: bytes, target: Any, *, label: str = "model.tflite",
                         use_compiler: bool = True) -> tuple[dict[str, bytes], EdgeTpuReport, list[str]]:
    """(artifact files, the report, notes for the user) for the artifact's `tflite` bytes."""
    report = report_from_tflite(tflite, target, label=label)
    files: dict[str, bytes] = {}
    notes: list[str] = []
    if use_compiler and find_compiler() is not None:
        run = run_compiler(tflite)
        merge_into_report(report, run.log)
        files["edgetpu_compiler.log"] = run.log_text.encode()
        if run.model is not None:
            files["model_edgetpu.tflite"] = run.model
        else:
            notes.append(f"edgetpu_compiler failed ({run.log.error}); model.tflite is kept, see edgetpu_compiler.log")
    elif use_compiler and (message := absent_message()) is not None:
        notes.append(message)
        warnings.warn(message, stacklevel=2)  # shown without --explain too; absent_message() says it once
    report.notes.extend(notes)
    files["edgetpu_report.json"] = report.to_json().encode()
    files["edgetpu_report.txt"] = report.to_text().encode()
    return files, report, notes
