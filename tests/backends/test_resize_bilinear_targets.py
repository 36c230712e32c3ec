"""A model with two bilinear Resizes (torch F.interpolate, align_corners False and True) compiled with int8
for host, cortex-a53 and edgetpu: QResizeBilinear bit-exact in the C runtime natively and under qemu,
and RESIZE_BILINEAR bit-exact in LiteRT (and judged TPU-mappable), each against the integer reference."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from edgekiln.backends.reference.runner import ReferenceRunner
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.quant_options import QuantOptions
from tests.runtime_arm.harness import aarch64_runner

torch = pytest.importorskip("torch")

SHAPE = (1, 3, 6, 5)


def _export(path) -> None:
    class UpsampleNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            # (12, 10) -> (23, 19) with aligned corners: a step of exactly 1/2 pixel
            return torch.nn.functional.interpolate(self.conv2(x), size=(23, 19), mode="bilinear", align_corners=True)

    torch.manual_seed(0)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and quick and offline
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(UpsampleNet().eval(), torch.zeros(SHAPE), str(path), input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("resize") / "upsample.onnx"
    _export(path)
    return path


def _compile(path, target: str):
    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(4)]
    return compile_model(str(path), target, quantization=QuantOptions(quant="int8", calib=calib), progress=False)


def _input(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["host", "cortex-a53"])
def test_arm_runtime_runs_both_resizes_bit_exact(model_path, target):
    if target != "host":
        aarch64_runner()  # skips without the cross compiler / qemu
    compiled = _compile(model_path, target)
    assert [c.op for c in compiled.program.calls].count("QResizeBilinear") == 2
    artifact = compiled.artifact
    reference = ReferenceRunner(artifact.files, artifact.manifest)
    for seed in (7, 8):
        feeds = {"x": _input(seed)}
        np.testing.assert_array_equal(artifact.run(feeds)["y"], reference.run(feeds)["y"])


@pytest.mark.slow
def test_edgetpu_writes_resize_bilinear_bit_exact_in_litert(model_path):
    pytest.importorskip("ai_edge_litert")
    from edgekiln.backends.edgetpu.tflite_reader import builtin_op_names, read_tflite
    from edgekiln.backends.edgetpu.tflite_verify import verify_tflite

    compiled = _compile(model_path, "edgetpu")
    ops = builtin_op_names(read_tflite(compiled.artifact.files["model.tflite"]))
    assert ops.count("RESIZE_BILINEAR") == 2 and "DEQUANTIZE" not in ops, ops
    verdicts = json.loads(compiled.artifact.files["edgetpu_report.json"])["ops"]
    assert [v["device"] for v in verdicts if v["op"] == "RESIZE_BILINEAR"] == ["tpu", "tpu"]
    report = verify_tflite(compiled.program, {"x": _input(7)})
    resize = [c for c in report.per_op if c.op == "QResizeBilinear"]
    assert len(resize) == 2 and all(c.max_diff == 0 for c in resize), report.to_text()
