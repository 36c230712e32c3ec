"""The SIMD non-GEMM integer kernels (runtime_arm/src/kernels/*_avx2.c, *_neon.c, ek_simd.h) and
the restructured portable loops (tap-plane ConvTranspose, run-based im2col, the transposed 1x1
rows) bit-exact against
the integer reference, on randomized odd shapes: rows shorter and longer than one 16-wide
vector step with ragged tails, stride 1 and 2, dilation, padding, broadcast operands, and the
cases that must fall back to the scalar loops (accumulator bounds beyond int32).

Host: `--isa c` (portable) and `--isa auto` (AVX2 where the CPU has it).  aarch64: qemu
cortex-a53 (NEON), cortex-a76 (dotprod) and max (i8mm) all take the NEON table.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekiln.compiler.requantize import quantize_multiplier
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_bit_exact,
    one_call,
    qemu,
    run_program_blob,
)


def _check(built, **run):
    program, feeds, expected = built
    assert_bit_exact(run_program_blob(program, feeds, **run), expected)


def _depthwise(rng, i):
    k = [(3, 3), (5, 5), (3, 3), (5, 5), (7, 3)][i % 5]
    stride = (1 + i % 2, 1 + (i // 2) % 2)
    h, w = int(rng.integers(k[0], 30)), int(rng.integers(k[1], 45))
    return cases.conv(rng, depthwise=True, c=int(rng.integers(1, 6)), k=k, hw=(h, w), stride=stride,
                      dilation=(1 + (i // 3) % 2, 1 + (i // 4) % 2))


def _conv(rng, i):
    k = [(3, 3), (1, 1), (5, 3), (1, 1)][i % 4]
    if i % 4 == 3:  # 1x1, stride 1, no padding: the transposed-block path (16x16 tiles and ragged edges)
        return cases.conv(rng, n=1 + i % 2, group=1 + (i // 4) % 2, c=2 * int(rng.integers(17, 25)), o=14, k=k,
                          stride=(1, 1), pads=(0, 0, 0, 0), hw=(int(rng.integers(5, 25)), int(rng.integers(4, 25))))
    return cases.conv(rng, n=1 + i % 2, group=[1, 2][i % 2], c=4, o=[2, 6, 8, 34][i % 4], k=k,
                      hw=(int(rng.integers(3, 25)), int(rng.integers(3, 25))), dilation=(1 + i % 2, 1))


def _elementwise(rng, i):
    op = ("QAdd", "QMul")[i % 2]
    shapes = [((2, 3, 5, 37), (2, 3, 5, 37)), ((1, 4, 3, 35), (1, 4, 1, 1)), ((1, 4, 1, 1), (1, 4, 3, 35)),
              ((2, 3, 33), (33,)), ((1, 2, 16), (1, 2, 16))][(i // 2) % 5]
    return cases.add_mul(rng, op, *shapes, b_const=shapes[1] == (33,), subtract=op == "QAdd" and i % 4 == 0)


BUILDERS = {"depthwise": _depthwise, "conv": _conv, "elementwise": _elementwise,
            "conv_transpose": lambda rng, i: cases.conv_transpose(rng, with_ratio=i == 3, group=1 + i % 2)}


@pytest.mark.parametrize("isa", ["c", "auto"])
@pytest.mark.parametrize("kind,count", [("depthwise", 10), ("conv", 8), ("elementwise", 10), ("conv_transpose", 4)])
def test_randomized_shapes_on_the_host(kind, count, isa):
    rng = np.random.default_rng(len(kind) * 1000 + count)
    for i in range(count):
        _check(BUILDERS[kind](rng, i), args=("--isa", isa))


def _depthwise_with_bias(bias_value: int):
    """A depthwise call whose folded bias breaks the SIMD path's int32 bound: the scalar loop runs."""
    rng = np.random.default_rng(5)
    m, s = quantize_multiplier(1e-9)
    attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 3, "input_zero_point": 7,
             "output_zero_point": 0, "act_min": -128, "act_max": 127}
    operands = [("x", cases.int8(rng, (1, 3, 9, 21)), False), ("w", cases.int8(rng, (3, 1, 3, 3), -127, 127), True),
                ("bias", np.array([bias_value, -bias_value, 5], np.int32), True),
                ("mult", np.full(3, m, np.int32), True), ("shift", np.full(3, s, np.int32), True)]
    return one_call("QDepthwiseConv2D", operands, attrs)


def test_bounds_fall_back_to_the_scalar_loops():
    _check(_depthwise_with_bias(2**31 - 1000), args=("--isa", "auto"))
    # QAdd with left_shift 24: (x - z)·2^24 leaves int32, so the SIMD QAdd must not run
    program, feeds, _ = cases.add_mul(np.random.default_rng(3), "QAdd", (1, 2, 40), (1, 2, 40))
    call = program.calls[0]
    s_y = 0.02
    call.attrs.update(left_shift=24)
    call.attrs["multiplier"], call.attrs["shift"] = quantize_multiplier(1.0 / (2**24 * s_y) * 0.05)
    from edgekiln.backends.reference.interpreter import run_program

    _check((program, feeds, run_program(program, feeds)), args=("--isa", "auto"))


def _ties():
    """Multiplier exactly 1/2 (m = 2^30, shift 0): every odd accumulator is a rounding tie, which
    the one rule rounds up (−1.5 -> −1); small operands keep the results unclamped."""
    rng = np.random.default_rng(9)
    half = {"input_zero_point": 0, "output_zero_point": 1, "act_min": -128, "act_max": 127}
    q = (np.full(4, 1 << 30, np.int32), np.zeros(4, np.int32))
    depthwise = one_call("QDepthwiseConv2D", [
        ("x", cases.int8(rng, (1, 4, 7, 37), -3, 3), False), ("w", cases.int8(rng, (4, 1, 3, 3), -1, 1), True),
        ("bias", rng.integers(-5, 5, 4).astype(np.int32), True), ("mult", q[0], True), ("shift", q[1], True)],
        {**half, "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 4})
    pointwise = one_call("QConv2D", [
        ("x", cases.int8(rng, (1, 4, 6, 9), -3, 3), False), ("w", cases.int8(rng, (4, 4, 1, 1), -1, 1), True),
        ("bias", rng.integers(-5, 5, 4).astype(np.int32), True), ("mult", q[0], True), ("shift", q[1], True)],
        {**half, "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1})
    mul = one_call("QMul", [("a", cases.int8(rng, (1, 3, 40), -9, 9), False), ("b", cases.int8(rng, (1, 3, 40), -9, 9), False)],
                   {"a_zero_point": 0, "b_zero_point": 0, "output_zero_point": 0, "multiplier": 1 << 30, "shift": 2,
                    "act_min": -128, "act_max": 127})
    return [depthwise, pointwise, mul]


@pytest.mark.parametrize("isa", ["c", "auto"])
def test_rounding_ties_round_half_up(isa):
    for built in _ties():
        _check(built, args=("--isa", isa))


@pytest.mark.parametrize("cpu", ["cortex-a53", "cortex-a76", "max"])
def test_neon_paths_under_qemu(cpu):
    runner = aarch64_runner()
    rng = np.random.default_rng(sum(map(ord, cpu)))
    built = [_depthwise(rng, i) for i in range(3)] + [_conv(rng, 1), _conv(rng, 0), _conv(rng, 3), _elementwise(rng, 0),
                                                      _elementwise(rng, 3), cases.conv_transpose(rng, group=2),
                                                      *_ties()]
    for b in built:
        _check(b, runner=runner, prefix=qemu(cpu))
