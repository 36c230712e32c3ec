"""Make each QResizeBilinear of an edgetpu Program read the source coordinates TFLite computes.

QResizeBilinear's tap tables follow the ONNX coordinate formula, rounded to 1/1024 of a pixel
(`compiler/bilinear_taps.py`).  TFLite's RESIZE_BILINEAR does not: it rounds its *step* to 1/1024
(`round(1024 · in / out)`) and multiplies, so on ratios whose step is not a multiple of 1/1024
(6 -> 17, 7 -> 30 ...) its coordinate drifts away from ONNX's along the axis, and no combination of
align_corners / half_pixel_centers reads the Program's coordinates.  The TFLite writer refuses such
a call (it would write a file up to 2 LSB away from the Program it claims to implement).

For an Edge TPU compile refusing the model is the worse answer: the file has to run TFLite's
kernel anyway.  So the edgetpu pipeline makes its Program follow TFLite instead: the call's tables
are replaced by TFLite's own (`bilinear_taps.tflite_taps`) for the flags closest to the model's
coordinates, and the .tflite, the integer reference and LiteRT's reference kernel then agree bit for
bit.  What moves is the distance to the model: each coordinate is off by at most d/1024 of a pixel
(d is reported in a note per call), which changes an output by at most d · 255 / 1024 LSB per axis
before rounding; model.onnx (the QDQ float reference) keeps the model's own coordinates.

A call whose coordinates one TFLite op already reads (every 2x, 4x, 1/2 ... resize) is left alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgekiln.compiler import bilinear_taps
from edgekiln.compiler.program import KernelCall, Program


def follow_tflite_bilinear_coordinates(program: Program, notes: list[str] | None = None) -> Program:
    """The Program with every QResizeBilinear that no TFLite RESIZE_BILINEAR reproduces reading
    TFLite's coordinates instead (see the module docstring); the same Program when there is none."""
    tensors, constants = dict(program.tensors), dict(program.constants)
    calls: list[KernelCall] = []
    moved: list[str] = []
    replaced: set[str] = set()
    for call in program.calls:
        if call.op != "QResizeBilinear":
            calls.append(call)
            continue
        x, taps_h_name, taps_w_name = call.inputs[:3]
        h, w = program.tensors[x].shape[2:]
        flags, distance, tflite_h, tflite_w = bilinear_taps.closest_tflite_taps(
            h, w, program.constants[taps_h_name], program.constants[taps_w_name])
        if distance <= bilinear_taps.TFLITE_TOLERANCE:  # one TFLite op already reads these coordinates
            calls.append(call)
            continue
        names = []
        for old, table in ((taps_h_name, tflite_h), (taps_w_name, tflite_w)):
            name = f"{old}_tflite"
            constants[name] = table.astype(np.int32)
            tensors[name] = dataclasses.replace(program.tensors[old], name=name, shape=tuple(table.shape))
            names.append(name)
            replaced.add(old)
        calls.append(dataclasses.replace(call, inputs=(x, *names, *call.inputs[3:])))
        align_corners, half_pixel = flags
        moved.append(f"{call.name} ({h}x{w} -> {len(tflite_h)}x{len(tflite_w)}: up to {distance}/1024 px, "
                     f"align_corners={align_corners}, half_pixel_centers={half_pixel})")
    if not moved:
        return program
    still_read = {name for call in calls for name in call.inputs if name}
    for name in replaced:
        if name not in still_read:  # the model's own tables, now read by nothing
            del constants[name], tensors[name]
    result = dataclasses.replace(program, tensors=tensors, constants=constants, calls=calls)
    result.validate()
    if notes is not None:
        notes.append(f"{len(moved)} bilinear Resize(s) follow TFLite's RESIZE_BILINEAR coordinates, whose rounded "
                     f"step drifts from the model's (each output within d·255/1024 LSB per axis of the model's "
                     f"resize before rounding; the .tflite and the Program agree bit for bit): " + "; ".join(moved))
    return result
