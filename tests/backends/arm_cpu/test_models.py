"""Whole models through the C runtime (slow): every zoo model and the PP-OCR models, float32
and int8 (plus int4 and ternary weights on a few), compiled by the arm_cpu backend.

- host (native x86_64 build): int8 / int4 / ternary bit-exact against the integer reference,
  float32 within 1e-4 of the reference interpreter and of onnxruntime on the original model;
- qemu-aarch64 -cpu cortex-a76 (dotprod), max (i8mm) and cortex-a53 (NEON): a few models
  bit-exact (emulation is slow).
Compiled artifacts are shared across tests through a module cache."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import edgekiln
from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
from edgekiln.backends.reference.runner import ReferenceRunner
from tests.conftest import max_relative_error, run_ort
from tests.runtime_arm.harness import aarch64_runner
from tests.zoo import PPOCR_MODELS, ZOO_MODELS, input_shapes, model_path, sample_input

pytestmark = pytest.mark.slow


@functools.cache
def compiled(name: str, target: str, quant: str | None) -> edgekiln.Artifact:
    options = {} if quant is None else {"quant": quant, "calib": [sample_input(name, seed=s) for s in range(1, 5)]}
    return edgekiln.compile(model_path(name), target, input_shapes=input_shapes(name), progress=False, **options)


def _bit_exact(artifact: edgekiln.Artifact, feeds, cpu: str | None = None):
    got = ArmCpuRunner(artifact.files, artifact.manifest, qemu_cpu=cpu).run(feeds)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    return got


@pytest.mark.parametrize("name", [*ZOO_MODELS, *PPOCR_MODELS])
def test_int8_bit_exact_on_host(name):
    _bit_exact(compiled(name, "host", "int8"), sample_input(name, seed=11))


@pytest.mark.parametrize("name", [*ZOO_MODELS, *PPOCR_MODELS])
def test_float32_on_host_matches_the_references(name):
    artifact = compiled(name, "host", None)
    feeds = sample_input(name, seed=12)
    got = artifact.run(feeds)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    original = run_ort(model_path(name), feeds)
    for k, key in enumerate(expected):
        assert max_relative_error(expected[key], got[key]) < 1e-4, key
        assert max_relative_error(original[k], got[key]) < 1e-4, key


@pytest.mark.parametrize("name,quant", [("resnet_basic", "int4:g32"), ("tiny_transformer", "int4:g32"),
                                        ("inverted_residual", "ternary"), ("ppocr_cls", "int4:g32"),
                                        ("ppocr_cls", "ternary")])
def test_low_bit_weights_bit_exact_on_host(name, quant):
    _bit_exact(compiled(name, "host", quant), sample_input(name, seed=13))


@pytest.mark.parametrize("name,quant,cpu", [("lenet_mnist", "int8", "cortex-a76"), ("tiny_transformer", "int8", "cortex-a76"),
                                            ("ppocr_cls", "int8", "cortex-a76"), ("se_hardswish", "int8", "max"),
                                            ("resnet_basic", "int4:g32", "cortex-a53"),
                                            ("inverted_residual", "ternary", "max")])
def test_bit_exact_under_qemu(name, quant, cpu):
    aarch64_runner()
    _bit_exact(compiled(name, "cortex-a76", quant), sample_input(name, seed=14), cpu=cpu)


def test_float32_under_qemu():
    aarch64_runner()
    name = "tiny_transformer"
    artifact = compiled(name, "cortex-a76", None)
    feeds = sample_input(name, seed=15)
    got = artifact.run(feeds)
    expected = run_ort(model_path(name), feeds)
    assert max_relative_error(expected[0], next(iter(got.values()))) < 1e-4


def test_threads_do_not_change_results():
    artifact = compiled("ppocr_det", "host", "int8")
    feeds = sample_input("ppocr_det", seed=16)
    runner = ArmCpuRunner(artifact.files, artifact.manifest)
    one, four = runner.run(feeds, threads=1), runner.run(feeds, threads=4)
    for key in one:
        np.testing.assert_array_equal(one[key], four[key])
