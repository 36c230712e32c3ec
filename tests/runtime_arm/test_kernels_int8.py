"""Every integer kernel of the C runtime bit-exact against the integer reference
(`backends/reference`), on randomized shapes: natively on the host (the ISA the CPU offers,
and the portable C path), and under qemu-aarch64 -cpu cortex-a53 (NEON only) with small shapes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_bit_exact,
    qemu,
    run_program_blob,
)


def _check(built, **run):
    program, feeds, expected = built
    assert_bit_exact(run_program_blob(program, feeds, **run), expected)


@pytest.mark.parametrize("seed", range(12))
def test_conv_random_shapes(seed):
    rng = np.random.default_rng(seed)
    _check(cases.conv(rng, n=1 + seed % 2, group=[1, 1, 2, 3][seed % 4], c=[3, 4, 4, 6][seed % 4],
                      dilation=(1 + seed % 2, 1)))


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_random_shapes(seed):
    rng = np.random.default_rng(100 + seed)
    _check(cases.conv(rng, depthwise=True, c=int(rng.integers(1, 12)), k=[(3, 3), (5, 5), (3, 1)][seed % 3],
                      dilation=(1, 1 + seed % 2)))


def test_conv_with_many_channels_spans_several_blocks():
    # more than EK_BLOCK_ROWS pixels and EK_BLOCK_COLS channels: every block edge is exercised
    _check(cases.conv(np.random.default_rng(7), c=5, hw=(13, 11), o=70, k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1)))


@pytest.mark.parametrize("bits,group_size", [(4, None), (2, None), (4, 9), (2, 27), (8, 3)])
def test_conv_low_bit_weights_packed(bits, group_size):
    rng = np.random.default_rng(bits * 10 + (group_size or 0))
    _check(cases.conv(rng, c=6, group=2, o=4, k=(3, 3), bits=bits, group_size=group_size, frac=5))


@pytest.mark.parametrize("bits", [4, 2])
def test_depthwise_low_bit(bits):
    _check(cases.conv(np.random.default_rng(bits), depthwise=True, c=7, k=(3, 3), bits=bits))


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, None), (2, None), (4, 8), (2, 16), (4, 25)])
def test_fully_connected(bits, group_size):
    rng = np.random.default_rng(bits + 3 * (group_size or 1))
    k = 2 * (group_size or 17) if group_size else int(rng.integers(5, 90))
    _check(cases.fully_connected(rng, shape=(2, 3, k), n=int(rng.integers(1, 90)), bits=bits, group_size=group_size))


def test_fully_connected_gemv_wider_than_a_block():
    _check(cases.fully_connected(np.random.default_rng(1), shape=(1, 200), n=150))


@pytest.mark.parametrize("with_ratio,group", [(False, 1), (True, 1), (True, 2)])
def test_conv_transpose(with_ratio, group):
    _check(cases.conv_transpose(np.random.default_rng(11 + group), with_ratio=with_ratio, group=group))


@pytest.mark.parametrize("a_shape,b_shape", [((2, 1, 3, 5), (1, 3, 5, 4)), ((4, 70, 9), (4, 9, 66)), ((1, 1), (1, 1))])
def test_matmul_broadcast(a_shape, b_shape):
    _check(cases.matmul(np.random.default_rng(6), a_shape=a_shape, b_shape=b_shape))


@pytest.mark.parametrize("op,a_shape,b_shape,b_const", [
    ("QAdd", (2, 3, 4, 5), (1, 3, 1, 5), False), ("QAdd", (2, 3, 4, 5), (2, 3, 4, 5), False),
    ("QAdd", (1, 4, 3), (3,), True), ("QMul", (1, 4, 3, 3), (1, 4, 1, 1), False), ("QMul", (2, 5, 7), (), True),
    ("QMul", (1, 1, 6), (3, 2, 1), False),
])
def test_add_mul_broadcast(op, a_shape, b_shape, b_const):
    _check(cases.add_mul(np.random.default_rng(8), op, a_shape, b_shape, b_const))


def test_subtract():
    _check(cases.add_mul(np.random.default_rng(9), "QAdd", (2, 3, 4), (2, 3, 4), subtract=True))


@pytest.mark.parametrize("pads,include", [((0, 0, 0, 0), 0), ((1, 1, 1, 1), 0), ((1, 0, 1, 1), 1)])
def test_average_pool(pads, include):
    _check(cases.average_pool(np.random.default_rng(9), pads=pads, include=include))


@pytest.mark.parametrize("pads,dilations", [((1, 1, 1, 1), (1, 2)), ((0, 0, 0, 0), (1, 1))])
def test_max_pool(pads, dilations):
    _check(cases.max_pool(np.random.default_rng(10), pads=pads, dilations=dilations))


@pytest.mark.parametrize("op,axes,keepdims", [("QGlobalAveragePool", None, 1), ("QReduceMean", (1,), 0),
                                              ("QReduceMean", (1, 3), 1), ("QReduceMean", (-1,), 0)])
def test_means(op, axes, keepdims):
    _check(cases.mean(np.random.default_rng(12), op, axes=axes, keepdims=keepdims))


@pytest.mark.parametrize("s_x,shape", [(0.05, (3, 2, 7)), (0.2, (2, 33)), (0.011, (1, 2, 3, 16))])
def test_softmax(s_x, shape):
    _check(cases.softmax(np.random.default_rng(13), s_x=s_x, shape=shape))


@pytest.mark.parametrize("d,s_x", [(8, 0.05), (31, 0.02), (64, 0.3)])
def test_layer_norm(d, s_x):
    _check(cases.layer_norm(np.random.default_rng(d), d=d, s_x=s_x))


def test_concat_resize():
    _check(cases.concat(np.random.default_rng(14)))
    _check(cases.resize_nearest(np.random.default_rng(15)))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad(mode):
    _check(cases.pad(np.random.default_rng(16), mode))


@pytest.mark.parametrize("op", ["QLookupTable", "QRequantize"])
def test_lookup_requantize(op):
    _check(cases.lookup_requantize(np.random.default_rng(17), op))


@pytest.mark.parametrize("op", ["Quantize", "Dequantize"])
def test_boundaries(op):
    _check(cases.boundaries(np.random.default_rng(18), op))


@pytest.mark.parametrize("bits,group_size,transpose", [(4, 8, True), (2, None, False), (8, 4, False)])
def test_dequantize_weight(bits, group_size, transpose):
    _check(cases.dequantize_weight(np.random.default_rng(19), bits=bits, group_size=group_size, transpose=transpose))


@pytest.mark.parametrize("op", ["Transpose", "Reshape", "Slice", "Squeeze", "Flatten"])
def test_movement_on_int8(op):
    _check(cases.movement(np.random.default_rng(20), op))


@pytest.mark.parametrize("isa", ["c", "auto"])
def test_isa_paths_agree_on_the_host(isa):
    built = cases.conv(np.random.default_rng(21), c=8, hw=(9, 9), o=20, k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1))
    _check(built, args=("--isa", isa))


def test_threads_give_the_same_result():
    built = cases.conv(np.random.default_rng(22), c=6, hw=(17, 9), o=70, k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1))
    _check(built, args=("--threads", "3"))
    _check(cases.fully_connected(np.random.default_rng(23), shape=(1, 64), n=300, bits=4), args=("--threads", "4"))


# -- under qemu-aarch64 -cpu cortex-a53: NEON only (small shapes: emulation is slow) ---------------
QEMU_CASES = {
    "conv": lambda rng: cases.conv(rng, c=4, group=2, o=6, hw=(6, 7), k=(3, 3), stride=(2, 1), pads=(1, 0, 1, 1)),
    "conv_int4_groups": lambda rng: cases.conv(rng, c=4, o=3, hw=(5, 5), k=(3, 3), bits=4, group_size=12),
    "depthwise_ternary": lambda rng: cases.conv(rng, depthwise=True, c=5, hw=(6, 6), k=(3, 3), bits=2),
    "fully_connected": lambda rng: cases.fully_connected(rng, shape=(3, 37), n=19),
    "fc_ternary_groups": lambda rng: cases.fully_connected(rng, shape=(2, 32), n=9, bits=2, group_size=16),
    "conv_transpose": lambda rng: cases.conv_transpose(rng, with_ratio=True),
    "matmul": lambda rng: cases.matmul(rng, a_shape=(2, 5, 9), b_shape=(1, 9, 7)),
    "add": lambda rng: cases.add_mul(rng, "QAdd", (1, 3, 4, 5), (1, 3, 1, 5)),
    "mul": lambda rng: cases.add_mul(rng, "QMul", (1, 3, 4, 5), (1, 3, 1, 1)),
    "average_pool": lambda rng: cases.average_pool(rng, pads=(1, 1, 1, 1)),
    "max_pool": lambda rng: cases.max_pool(rng),
    "global_average_pool": lambda rng: cases.mean(rng, "QGlobalAveragePool"),
    "softmax": lambda rng: cases.softmax(rng),
    "layer_norm": lambda rng: cases.layer_norm(rng, d=16),
    "concat": lambda rng: cases.concat(rng),
    "pad": lambda rng: cases.pad(rng, "reflect"),
    "quantize": lambda rng: cases.boundaries(rng, "Quantize"),
    "dequantize_weight": lambda rng: cases.dequantize_weight(rng),
}


@pytest.mark.parametrize("name", sorted(QEMU_CASES))
def test_under_qemu_cortex_a53(name):
    runner = aarch64_runner()
    _check(QEMU_CASES[name](np.random.default_rng(len(name))), runner=runner, prefix=qemu("cortex-a53"))
