"""Comparing a rewritten model with the original in onnxruntime, the way every pass test does.

The criterion is max relative error <= 1e-5 per output (float32).  One kind of output needs
care: a probability map that ends in Sigmoid (the PP-OCR detector).  Any equivalent rewrite
changes float rounding by ~1 ulp per op, and after 60 convolutions the logits differ by
~1e-6 relative; onnxruntime's own Conv+BN fusion moves this model's probabilities by
1.2e-5.  So such a model is compiled with its logits (the Sigmoid's input) exposed as an
extra graph output, the logits are held to 1e-5 relative, and the probabilities to the
bound that follows from it: |Δp| <= |Δz| / 4, since sigmoid' <= 1/4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from tests.conftest import max_relative_error, run_ort

RELATIVE_TOLERANCE = 1e-5


def with_logits_exposed(source: Path, folder: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the model at `source` where each Sigmoid graph output's input is also an output.

    Returns the copy's path and {probability output: its logits output} (empty when none).
    """
    proto = onnx.load(source)
    producers = {o: n for n in proto.graph.node for o in n.output}
    probabilities = {}
    for output in list(proto.graph.output):
        node = producers.get(output.name)
        if node is not None and node.op_type == "Sigmoid":
            probabilities[output.name] = node.input[0]
            proto.graph.output.append(helper.make_tensor_value_info(node.input[0], output.type.tensor_type.elem_type,
                                                                    None))
    path = folder / f"{source.stem}.logits.onnx"
    onnx.save(proto, path)
    return path, probabilities


def assert_same_outputs(original: Path | onnx.ModelProto, rewritten: onnx.ModelProto,
                        feeds: dict[str, np.ndarray], probabilities: dict[str, str] | None = None) -> None:
    """Every output within 1e-5 relative; `probabilities` (with their logits also output) by the sigmoid bound."""
    onnx.checker.check_model(rewritten)
    names = [o.name for o in (original if isinstance(original, onnx.ModelProto) else onnx.load(original)).graph.output]
    want, got = run_ort(original, feeds), run_ort(rewritten, feeds)
    assert len(want) == len(got)
    outputs = dict(zip(names, zip(want, got)))
    probabilities = probabilities or {}
    for name, (expected, actual) in outputs.items():
        assert actual.shape == expected.shape, name
        if name in probabilities:
            logits_scale = float(np.max(np.abs(outputs[probabilities[name]][0])))
            bound = RELATIVE_TOLERANCE * logits_scale / 4
            assert float(np.max(np.abs(actual - expected))) <= bound, (name, bound)
        else:
            assert max_relative_error(expected, actual) <= RELATIVE_TOLERANCE, name
