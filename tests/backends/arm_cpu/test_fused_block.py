"""The fused inverted-residual block (compiler/fused_block_lowering.py, runtime_arm
kernels/qinverted_residual.c): one QInvertedResidual call instead of expand 1x1 -> depthwise ->
project 1x1, computed band by band in the C runtime.

Fast: randomized one-call Programs (odd sizes, stride 2, 5x5, padding, dilation, images wide
enough to need several bands) bit-exact against the reference, which runs the call as the
composition of its three kernels; on the host (portable and AVX2) and under qemu (NEON).
Slow: the zoo's inverted_residual model and ppocr_cls compiled for the arm_cpu backend: the
blocks are fused, the arena shrinks, and the outputs are bit-exact with the reference and with
the unfused Program.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekiln.compiler.fused_block_lowering import (
    FUSED_OP,
    fuse_inverted_residual_blocks,
)
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_bit_exact,
    one_call,
    qemu,
    run_program_blob,
)


def _stage(rng, o, i, k, *, kind, ties=False):
    """Weights, bias, multiplier, shift of one stage with an output spread of about ±60; with
    `ties`, weights in {-1, 0, 1} and the multiplier exactly 1/2, so every odd sum is a rounding tie."""
    if ties:
        weights = cases.int8(rng, (o, i, k[0], k[1]), -1, 1)
        mult, shift = np.full(o, 1 << 30, np.int32), np.zeros(o, np.int32)
        bias = rng.integers(-9, 9, o).astype(np.int32)
    else:
        weights = cases.int8(rng, (o, i, k[0], k[1]), -127, 127)
        mult, shift = cases.multipliers(rng, o, i * k[0] * k[1])
        bias = rng.integers(-3000, 3000, o).astype(np.int32)
    return [(f"{kind}_w", weights, True), (f"{kind}_b", bias, True), (f"{kind}_m", mult, True),
            (f"{kind}_s", shift, True)]


def fused_block(rng, *, cin, ce, co, hw, k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), ties=False):
    zx, ze, zd, zy = (int(v) for v in rng.integers(-20, 20, 4))
    relu6 = {"act_min": int(rng.integers(-20, -5)), "act_max": int(rng.integers(60, 127))}
    pointwise = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
    parts = [{"name": "expand", "op": "QConv2D",
              "attrs": {**pointwise, "input_zero_point": zx, "output_zero_point": ze, **relu6}},
             {"name": "depthwise", "op": "QDepthwiseConv2D",
              "attrs": {"strides": list(stride), "pads": list(pads), "dilations": list(dilation), "group": ce,
                        "input_zero_point": ze, "output_zero_point": zd, **relu6}},
             {"name": "project", "op": "QConv2D",
              "attrs": {**pointwise, "input_zero_point": zd, "output_zero_point": zy, "act_min": -128, "act_max": 127}}]
    x = cases.int8(rng, (1, cin, *hw), -3, 3) if ties else cases.int8(rng, (1, cin, *hw))
    operands = [("x", x, False), *_stage(rng, ce, cin, (1, 1), kind="e", ties=ties),
                *_stage(rng, ce, 1, k, kind="d", ties=ties), *_stage(rng, co, ce, (1, 1), kind="p", ties=ties)]
    return one_call(FUSED_OP, operands, {"parts": parts})


BLOCKS = {
    "3x3 s1": {"cin": 5, "ce": 24, "co": 7, "hw": (9, 13)},
    "3x3 s2 odd": {"cin": 3, "ce": 17, "co": 5, "hw": (11, 9), "stride": (2, 2)},
    "5x5 s2 asymmetric pads": {"cin": 4, "ce": 9, "co": 6, "hw": (10, 15), "k": (5, 5), "stride": (2, 1),
                               "pads": (2, 1, 1, 2)},
    "3x3 dilated": {"cin": 6, "ce": 10, "co": 3, "hw": (12, 12), "dilation": (2, 2), "pads": (2, 2, 2, 2)},
    "several bands": {"cin": 8, "ce": 96, "co": 16, "hw": (40, 37)},  # 37·96 bytes a row: a band is a few rows
    "rounding ties": {"cin": 3, "ce": 20, "co": 18, "hw": (6, 7), "ties": True},
}


@pytest.mark.parametrize("isa", ["c", "auto"])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_fused_block_bit_exact_on_the_host(name, isa):
    program, feeds, expected = fused_block(np.random.default_rng(len(name)), **BLOCKS[name])
    assert_bit_exact(run_program_blob(program, feeds, args=("--isa", isa, "--threads", "2")), expected)


@pytest.mark.parametrize("cpu", ["cortex-a53", "max"])
def test_fused_block_under_qemu(cpu):
    runner = aarch64_runner()
    for name in ("3x3 s2 odd", "5x5 s2 asymmetric pads", "rounding ties"):
        program, feeds, expected = fused_block(np.random.default_rng(len(name) + 1), **BLOCKS[name])
        assert_bit_exact(run_program_blob(program, feeds, runner=runner, prefix=qemu(cpu)), expected)


# -- whole models (slow) ----------------------------------------------------------------------
def _compiled(name: str):
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.quant_options import QuantOptions
    from tests.zoo import input_shapes, model_path, sample_input

    return compile_model(model_path(name), "host", input_shapes=input_shapes(name), progress=False,
                         quantization=QuantOptions(calib=[sample_input(name, seed=s) for s in range(1, 5)]))


@pytest.mark.slow
@pytest.mark.parametrize("name,blocks", [("inverted_residual", 3), ("ppocr_cls", 2)])
def test_models_fuse_their_blocks_bit_exactly(name, blocks):
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.backends.reference.interpreter import run_program
    from edgekiln.compiler.integer_lowering import lower_quantized_graph
    from tests.zoo import sample_input

    result = _compiled(name)
    fused = [c for c in result.program.calls if c.op == FUSED_OP]
    assert len(fused) == blocks
    unfused = lower_quantized_graph(result.graph)
    assert fuse_inverted_residual_blocks(unfused).arena.arena_bytes == result.program.arena.arena_bytes
    if name == "inverted_residual":  # its peak is inside the blocks: the expanded tensors leave the arena
        assert result.program.arena.arena_bytes < unfused.arena.arena_bytes
    feeds = sample_input(name, seed=21)
    expected = run_program(unfused, feeds)
    got = ArmCpuRunner(result.artifact.files, result.artifact.manifest).run(feeds)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.slow
def test_model_fused_block_under_qemu():
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.backends.reference.runner import ReferenceRunner
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.quant_options import QuantOptions
    from tests.zoo import input_shapes, model_path, sample_input

    aarch64_runner()
    name = "inverted_residual"
    result = compile_model(model_path(name), "cortex-a76", input_shapes=input_shapes(name), progress=False,
                           quantization=QuantOptions(calib=[sample_input(name, seed=s) for s in range(1, 5)]))
    feeds = sample_input(name, seed=22)
    got = ArmCpuRunner(result.artifact.files, result.artifact.manifest, qemu_cpu="cortex-a53").run(feeds)
    expected = ReferenceRunner(result.artifact.files, result.artifact.manifest).run(feeds)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
