"""The `litert` artifact runner: an edgetpu artifact's `model.tflite` in the LiteRT interpreter.

Feeds and results are the Program's: float NCHW arrays keyed by the ONNX input / output names.
An int8 graph input is quantized here exactly as the Program's Quantize call does it (round
half to even, `requantize.quantize`), and an int8 output dequantized like its Dequantize, so
the only differences from the integer reference are TFLite's own kernels (pinned to the
reference resolver, see `litert_interpreter.py`).  An artifact compiled with `--cpu-tail` also
holds `cpu_tail.onnx`: the ops the Edge TPU cannot run, which take the `.tflite`'s outputs (the
cut tensors) and give the model's outputs; it runs in onnxruntime after the interpreter, as it
would on the host next to the TPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekiln.backends.edgetpu.litert_interpreter import make_interpreter
from edgekiln.backends.edgetpu.tflite_layout import NCHW_TO_NHWC, NHWC_TO_NCHW
from edgekiln.compiler.requantize import dequantize, quantize
from edgekiln.errors import ArtifactError

TFLITE_FILE = "model.tflite"
CPU_TAIL_FILE = "cpu_tail.onnx"


class LiteRTRunner:
    def __init__(self, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        if TFLITE_FILE not in files:
            raise ArtifactError(f"the artifact has no {TFLITE_FILE}; recompile it for the edgetpu target")
        self.interpreter = make_interpreter(files[TFLITE_FILE])
        self.cpu_tail = None
        if CPU_TAIL_FILE in files:
            import onnxruntime

            self.cpu_tail = onnxruntime.InferenceSession(files[CPU_TAIL_FILE], providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self.interpreter
        for detail in it.get_input_details():
            name = detail["name"]
            if name not in feeds:
                raise ArtifactError(f"input {name!r} is missing (the model takes "
                                    f"{', '.join(d['name'] for d in it.get_input_details())})")
            array = np.asarray(feeds[name], np.float32)
            if array.ndim == 4:
                array = np.transpose(array, NCHW_TO_NHWC)
            if detail["dtype"] == np.int8:
                scale, zero_point = detail["quantization"]
                array = quantize(array, scale, zero_point)
            it.set_tensor(detail["index"], np.ascontiguousarray(array, detail["dtype"]))
        it.invoke()
        results = {}
        for detail in it.get_output_details():
            array = it.get_tensor(detail["index"])
            if detail["dtype"] == np.int8:
                scale, zero_point = detail["quantization"]
                array = dequantize(array, scale, zero_point)
            if array.ndim == 4:
                array = np.transpose(array, NHWC_TO_NCHW)
            results[detail["name"]] = np.ascontiguousarray(array)
        if self.cpu_tail is None:
            return results
        tail_inputs = {i.name for i in self.cpu_tail.get_inputs()}
        tail_feeds = {name: value for name, value in {**feeds, **results}.items() if name in tail_inputs}
        tail_outputs = [o.name for o in self.cpu_tail.get_outputs()]
        return dict(zip(tail_outputs, self.cpu_tail.run(tail_outputs, tail_feeds)))
