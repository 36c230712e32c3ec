"""`edgekiln inspect` for the Edge TPU: a .tflite file, or an ONNX model with --target edgetpu."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekiln.errors import EdgekilnError


def edgetpu_report_requested(model: Path, target_names: tuple[str, ...]) -> bool:
    """A .tflite model always gets the Edge TPU report; an ONNX one when an edgetpu target is named."""
    from edgekiln.compiler.target import get_target

    if model.suffix.lower() == ".tflite":
        return True
    return bool(target_names) and all(get_target(n).backend == "edgetpu" for n in target_names)


def show_edgetpu_report(console: Any, model: Path, input_shapes: tuple[str, ...], target_names: tuple[str, ...],
                        all_layers: bool, json_path: Path | None) -> None:
    from edgekiln.backends.edgetpu.report import report_from_tflite
    from edgekiln.backends.edgetpu.report_onnx import report_for_onnx
    from edgekiln.compiler.target import get_target

    if not model.exists():
        raise EdgekilnError(f"{model}: no such file")
    target = get_target(target_names[0] if target_names else "edgetpu")
    if target.backend != "edgetpu":
        raise EdgekilnError(f"a .tflite file is reported for the Edge TPU only; drop --target {target.name} "
                            "or pass --target edgetpu")
    if model.suffix.lower() == ".tflite":
        report = report_from_tflite(model, target)
    else:
        console.print(f"Compiling {model.name} to int8 for {target.name} to judge the .tflite it produces ...")
        report = report_for_onnx(model, target, input_shapes=input_shapes or None)
    report.render(console, max_ops=None if all_layers else 40)
    if json_path is not None:
        json_path.write_text(report.to_json())
