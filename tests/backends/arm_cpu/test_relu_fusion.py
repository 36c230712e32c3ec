"""A standalone Relu folded into its producer (compiler/fuse_relu_into_producer.py) on the arm_cpu backend.

The C kernels must honour what the rewrite writes: QAdd / QMul clamp attributes (ACT_MIN / ACT_MAX, the
SIMD paths included), QConvTranspose2D's clamp, the replaced per-channel multipliers and shifts of a
weight kernel.  Checked: the Program has no Relu table after the producer and clamps at the Relu's zero
point; the runtime is bit-exact with the integer reference on host (AVX2) and under qemu cortex-a53
(NEON); and its output is within one LSB of onnxruntime running the QDQ model.onnx, which keeps the
unfused Relu (two roundings where the Program has one, so about an LSB apart at those points).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

import edgekiln
from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
from edgekiln.backends.reference.runner import ReferenceRunner
from edgekiln.compiler import fuse_relu_into_producer as fusion
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.quant_options import QuantOptions
from tests.conftest import run_ort
from tests.runtime_arm.harness import aarch64_runner
from tests.support.relu_fusion_graphs import (
    calibration,
    feeds,
    params,
    residual_block,
    transposed_conv_relu,
)
from tests.zoo import input_shapes, model_path, sample_input

GRAPHS = {"Add": (residual_block, "QAdd"), "Mul": (functools.partial(residual_block, op="Mul"), "QMul"),
          "ConvTranspose": (transposed_conv_relu, "QConvTranspose2D")}


@functools.cache
def compiled(graph: str, target: str):
    return compile_model(GRAPHS[graph][0](), target, quantization=QuantOptions(quant="int8", calib=calibration()),
                         progress=False)


def bit_exact(artifact: edgekiln.Artifact, x, cpu: str | None = None) -> dict[str, np.ndarray]:
    got = ArmCpuRunner(artifact.files, artifact.manifest, qemu_cpu=cpu).run(x)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(x)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    return got


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_relu_is_the_producers_clamp_bit_exact_on_host_and_within_one_lsb_of_the_qdq_model(graph):
    result = compiled(graph, "host")
    program, op = result.program, GRAPHS[graph][1]
    assert not any(c.op == "QLookupTable" for c in program.calls)
    assert any("fused 1 Relu(s) into the kernel before them" in note for note in result.trace.notes)
    producer = next(c for c in program.calls if c.op == op)
    _, zp_y = params(program, producer.outputs[0])
    assert (producer.attrs["act_min"], producer.attrs["act_max"]) == (max(-128, zp_y), 127)
    s_y = params(program, producer.outputs[0])[0]
    for seed in (5, 6):
        x = feeds(seed)
        got = bit_exact(result.artifact, x)[program.outputs[0]]
        (want,) = run_ort(result.artifact.files["model.onnx"], x)
        lsb = np.abs(got.astype(np.float64) - want) / s_y
        # measured: max 1.0, 73-93% equal (the QDQ model rounds at the sum's scale, then again at the Relu's)
        assert np.max(lsb) <= 1.001 and np.mean(lsb < 0.5) > 0.6, (np.max(lsb), np.mean(lsb < 0.5))


RAISED_ZERO_POINT = -100


def relu_outputs_at_a_raised_zero_point(program, notes=None, *, fuse):
    """`fuse` after moving each Relu table's output to zero point -100 (calibrated Relu outputs sit at -128, where
    the clamp is int8 saturation): the fused producers then clamp at -100, a clamp the kernels must apply."""
    relu_outputs = {c.outputs[0] for c in program.calls if c.op == "QLookupTable" and c.attrs.get("function") == "Relu"}
    tensors = dict(program.tensors)
    for name in relu_outputs:
        tensors[name] = dataclasses.replace(tensors[name], quant=dataclasses.replace(
            tensors[name].quant, zero_point=(RAISED_ZERO_POINT,)))
    calls = [dataclasses.replace(c, attrs={**c.attrs, "zero_point": RAISED_ZERO_POINT})
             if c.op == "Dequantize" and c.inputs[0] in relu_outputs else c for c in program.calls]
    return fuse(dataclasses.replace(program, tensors=tensors, calls=calls), notes)


@pytest.mark.parametrize("target,cpu", [("host", None), ("cortex-a53", "cortex-a53")])
@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_a_clamp_above_int8_saturation_is_applied_bit_exact(graph, target, cpu, monkeypatch):
    if cpu:
        aarch64_runner()
    fuse = fusion.fuse_relu_into_producers
    monkeypatch.setattr(fusion, "fuse_relu_into_producers",
                        functools.partial(relu_outputs_at_a_raised_zero_point, fuse=fuse))
    result = compile_model(GRAPHS[graph][0](), target, quantization=QuantOptions(quant="int8", calib=calibration()),
                           progress=False)
    producer = next(c for c in result.program.calls if c.op == GRAPHS[graph][1])
    assert producer.attrs["act_min"] == RAISED_ZERO_POINT
    got = bit_exact(result.artifact, feeds(8), cpu=cpu)[result.program.outputs[0]]
    assert np.min(got) == 0.0 and np.mean(got == 0.0) > 0.2  # the clamp did cut: relu(x) >= 0, many zeros


@pytest.mark.slow
@pytest.mark.parametrize("name,producer", [("resnet_basic", "QAdd"), ("ppocr_det", "QConvTranspose2D")])
def test_zoo_relus_fold_and_stay_bit_exact_under_qemu_cortex_a53(name, producer):
    aarch64_runner()
    result = compile_model(model_path(name), "cortex-a53", input_shapes=input_shapes(name), progress=False,
                           quantization=QuantOptions(quant="int8",
                                                     calib=[sample_input(name, seed=s) for s in range(1, 5)]))
    program = result.program
    assert not any(c.attrs.get("function") == "Relu" for c in program.calls if c.op == "QLookupTable")
    # the clamp starts at the Relu's zero point (-128 for a calibrated range [0, max]: int8 saturation clamps)
    clamped = [c for c in program.calls if c.op == producer and "act_min" in c.attrs
               and c.attrs["act_min"] == max(-128, params(program, c.outputs[0])[1])]
    assert clamped and any(f"{clamped[0].name} ({producer})" in note for note in result.trace.notes)
    bit_exact(result.artifact, sample_input(name, seed=14), cpu="cortex-a53")
