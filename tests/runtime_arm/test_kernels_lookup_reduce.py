"""The runtime's fast paths for the cheap-but-frequent integer kernels, bit-exact against the
integer reference (`backends/reference`):

- the 256-entry byte lookup (AVX2 pshufb telescoping, NEON tbl/tbx) behind QLookupTable, and
  behind QRequantize, QConcat's requantized inputs and QAdd / QMul with a constant scalar
  operand, which the runtime tabulates at load;
- Quantize (float -> int8) in SIMD: round-half-to-even ties, saturation, inf, -0.0;
- QReduceMean over adjacent axes as row / column sums with one requantization (and the
  general odometer loop for non-adjacent axes);
- QMaxPool's fast paths against the general loop;
- IndexMap's row shortcuts (a repeated input row, a contiguous run, no fill entries): nearest
  upsampling, Slice, Pad;
- QConvTranspose2D as one int8 GEMM when the kernel tiles the output (stride = kernel): pads,
  groups, batches, blocks with a ragged last one (and the tap-plane path it leaves few columns to);
- the depthwise row driver reusing a ring slot's zero-point borders (stride 1) and skipping
  window rows above / below the image (a 5x5 window on a 3-row map; rows of padding only).

Lengths straddle the 16/32-byte vector steps so every ragged tail is exercised.  Host: `--isa c`
(portable) and `--isa auto` (AVX2); aarch64: qemu cortex-a53 (NEON).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekiln.compiler.requantize import quantize_multiplier
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import aarch64_runner, assert_bit_exact, one_call, qemu, run_program_blob

LENGTHS = (1, 15, 16, 17, 31, 32, 33, 95, 1000)


def _lookup(rng, n):
    x = cases.int8(rng, (n,))
    x[: min(n, 2)] = [-128, 127][: min(n, 2)]  # both ends of the table
    return one_call("QLookupTable", [("x", x, False), ("t", cases.int8(rng, (256,)), True)], {"function": "t"})


def _requantize(rng, n):
    m, sh = quantize_multiplier(float(rng.uniform(0.2, 3.0)))
    return one_call("QRequantize", [("x", cases.int8(rng, (n,)), False)],
                    {"input_zero_point": int(rng.integers(-20, 20)), "output_zero_point": int(rng.integers(-9, 9)),
                     "multiplier": m, "shift": sh})


def _concat(rng, w):
    m0, s0 = quantize_multiplier(0.37)
    m2, s2 = quantize_multiplier(1.9)
    attrs = {"axis": 1, "input_zero_points": [4, 10, -3], "output_zero_point": -2,
             "requantize": [[m0, s0], None, [m2, s2]]}
    return one_call("QConcat", [("a", cases.int8(rng, (2, 3, 5, w)), False), ("b", cases.int8(rng, (2, 2, 5, w)), False),
                                ("c", cases.int8(rng, (2, 4, 5, w)), False)], attrs)


def _quantize(rng, n):
    x = (rng.standard_normal(n) * 9).astype(np.float32)
    special = np.array([0.05, -0.05, 0.15, -0.25, 1e6, -1e6, np.inf, -np.inf, -0.0, 12.75, -12.85], np.float32)
    x[: min(n, special.size)] = special[: min(n, special.size)]
    return one_call("Quantize", [("x", x, False)], {"scale": 0.1, "zero_point": int(rng.integers(-5, 5))})


def _scalar_operand(rng, op, n, scalar_first=False):
    """QAdd / QMul with a constant scalar operand (PP-OCR's affine blocks): run as a table."""
    program, feeds, expected = cases.add_mul(rng, op, (2, 3, n), (1, 1, 1), b_const=True,
                                             subtract=op == "QAdd" and n % 2 == 1)
    if not scalar_first:
        return program, feeds, expected
    call = program.calls[0]
    swapped = {k: v for k, v in call.attrs.items()}
    for key in ("zero_point", "multiplier", "shift"):  # a_* <-> b_*
        if f"a_{key}" in swapped:
            swapped[f"a_{key}"], swapped[f"b_{key}"] = call.attrs[f"b_{key}"], call.attrs[f"a_{key}"]
    return one_call(op, [("a", program.constants["b"], True), ("b", feeds["a"], False)], swapped)


def _mean(rng, shape, axes, keepdims):
    return cases.mean(rng, "QReduceMean", shape=shape, axes=axes, keepdims=keepdims)


MEANS = [((1, 96, 20, 20), (2, 3), 1),    # global pooling: row sums
         ((2, 5, 7, 3), (1,), 0),         # one middle axis: column sums over 7·3
         ((2, 5, 7, 3), (1, 2), 1),       # two adjacent middle axes
         ((3, 1, 6, 5), (0, 1, 2), 0),    # leading axes, a size-1 one among them
         ((2, 5, 7, 3), (1, 3), 1),       # not adjacent: the general loop
         ((4, 33), (1,), 0)]


def _max_pool(rng, shape, kernel, strides, pads, dilations=(1, 1)):
    return one_call("QMaxPool", [("x", cases.int8(rng, shape), False)],
                    {"kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads),
                     "dilations": list(dilations)})


MAX_POOLS = [((1, 3, 24, 24), (2, 2), (2, 2), (0, 0, 0, 0)),
             ((2, 2, 13, 37), (2, 2), (2, 2), (0, 0, 1, 1)),
             ((1, 4, 19, 21), (3, 3), (2, 2), (1, 1, 1, 1)),
             ((1, 2, 17, 40), (3, 3), (1, 1), (1, 1, 1, 1)),
             ((1, 2, 9, 11), (3, 2), (1, 2), (0, 1, 2, 0), (2, 1))]


def _index_maps(rng):
    h, w = 7, 19  # nearest 2x upsampling (a row read twice), a crop (contiguous runs), a pad (fill)
    up = one_call("QResizeNearest", [("x", cases.int8(rng, (1, 3, h, w)), False),
                                     ("ih", np.repeat(np.arange(h, dtype=np.int32), 2), True),
                                     ("iw", np.repeat(np.arange(w, dtype=np.int32), 2), True)])
    crop = one_call("Slice", [("x", cases.int8(rng, (2, 3, 9, 40)), False), ("st", np.array([1, 3], np.int64), True),
                              ("en", np.array([8, 37], np.int64), True), ("ax", np.array([2, 3], np.int64), True)],
                    out_dtypes=("int8",))
    return [up, crop, cases.pad(rng, "constant"), cases.pad(rng, "edge")]


def _conv_transpose_tiled(rng, *, c, og, k, hw, group=1, n=1, pads=(0, 0, 0, 0), zx=-7):
    o = og * group
    mult, shift = cases.multipliers(rng, o, c // group * k[0] * k[1])
    attrs = {"strides": list(k), "pads": list(pads), "dilations": [1, 1], "group": group, "input_zero_point": zx,
             "output_zero_point": 2, "act_min": -128, "act_max": 127}
    return one_call("QConvTranspose2D", [("x", cases.int8(rng, (n, c, *hw)), False),
                                         ("w", cases.int8(rng, (c, og, *k), -127, 127), True),
                                         ("bias", rng.integers(-2000, 2000, o).astype(np.int32), True),
                                         ("mult", mult, True), ("shift", shift, True)], attrs)


def _conv_transposes(rng):
    return [_conv_transpose_tiled(rng, c=24, og=24, k=(2, 2), hw=(9, 13)),          # ppocr_det's upsampling
            _conv_transpose_tiled(rng, c=8, og=1, k=(2, 2), hw=(11, 10), n=2),      # 4 columns: tap planes
            _conv_transpose_tiled(rng, c=6, og=3, k=(3, 2), hw=(5, 7), group=2, pads=(1, 0, 2, 1), zx=100),
            _conv_transpose_tiled(rng, c=4, og=8, k=(2, 3), hw=(6, 5), pads=(1, 2, 0, 1)),  # left pad: a cut first column
            _conv_transpose_tiled(rng, c=5, og=16, k=(1, 1), hw=(3, 30), n=2)]


def _depthwise(rng):
    return [cases.conv(rng, depthwise=True, c=5, hw=(9, 21), k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1)),
            cases.conv(rng, depthwise=True, c=3, hw=(7, 6), k=(5, 5), stride=(1, 1), pads=(2, 2, 2, 2)),
            cases.conv(rng, depthwise=True, c=2, hw=(8, 9), k=(3, 3), stride=(1, 1), pads=(0, 2, 1, 0)),
            # windows taller than the map: rows above / below the image are skipped (ppocr_cls)
            cases.conv(rng, depthwise=True, c=4, hw=(3, 37), k=(5, 5), stride=(1, 1), pads=(2, 2, 2, 2)),
            cases.conv(rng, depthwise=True, c=3, hw=(2, 20), k=(5, 5), stride=(2, 1), pads=(2, 2, 2, 2)),
            cases.conv(rng, depthwise=True, c=2, hw=(4, 11), k=(3, 3), stride=(1, 1), pads=(3, 1, 4, 1))]


def _all_cases(rng):
    built = [_lookup(rng, n) for n in LENGTHS] + [_requantize(rng, n) for n in (7, 64, 333)]
    built += [_concat(rng, w) for w in (3, 13)] + [_quantize(rng, n) for n in LENGTHS]
    built += [_scalar_operand(rng, op, n, first) for op in ("QAdd", "QMul") for n in (5, 40) for first in (0, 1)]
    built += [_mean(rng, *m) for m in MEANS] + [_max_pool(rng, *p) for p in MAX_POOLS] + _index_maps(rng)
    return built + _conv_transposes(rng) + _depthwise(rng)


@pytest.mark.parametrize("isa", ["c", "auto"])
def test_host(isa):
    for program, feeds, expected in _all_cases(np.random.default_rng(5)):
        assert_bit_exact(run_program_blob(program, feeds, args=("--isa", isa)), expected)


def test_neon_under_qemu():
    runner = aarch64_runner()
    rng = np.random.default_rng(6)
    built = [_lookup(rng, n) for n in (15, 16, 33, 1000)] + [_requantize(rng, 51), _concat(rng, 13)]
    built += [_quantize(rng, n) for n in (12, 16, 47)] + [_mean(rng, *MEANS[0]), _mean(rng, *MEANS[1])]
    built += [_scalar_operand(rng, "QAdd", 21), _scalar_operand(rng, "QMul", 21, scalar_first=True)]
    built += [_max_pool(rng, *p) for p in MAX_POOLS[:3]] + _conv_transposes(rng)[:3] + _depthwise(rng)[1:5]
    for program, feeds, expected in built:
        assert_bit_exact(run_program_blob(program, feeds, runner=runner, prefix=qemu("cortex-a53")), expected)


def test_every_lookup_index_reaches_its_entry():
    """All 256 inputs against a table of distinct values: a wrong lane of the telescoped
    shuffle or a wrong quarter of tbl/tbx would show as a swapped entry."""
    x = np.arange(-128, 128, dtype=np.int8)[np.random.default_rng(0).permutation(256)]
    table = np.random.default_rng(1).permutation(256).astype(np.int16) - 128
    built = one_call("QLookupTable", [("x", np.tile(x, 3), False), ("t", table.astype(np.int8), True)], {"function": "t"})
    for isa in ("c", "auto"):
        assert_bit_exact(run_program_blob(built[0], built[1], args=("--isa", isa)), built[2])


@pytest.mark.parametrize("threads", [2, 3])
def test_elementwise_split_over_threads(threads):
    """Calls big enough to be split into pieces (ek_parallel_range): pieces cut broadcast rows
    anywhere, and every thread count gives the reference's bytes."""
    rng = np.random.default_rng(threads)
    built = [cases.add_mul(rng, "QAdd", (1, 24, 60, 61), (1, 24, 60, 61)),
             cases.add_mul(rng, "QMul", (1, 40, 37, 41), (1, 40, 1, 1)),
             cases.add_mul(rng, "QAdd", (2, 3, 97, 211), (1, 1, 97, 211), subtract=True),
             _lookup(rng, 100_003), _requantize(rng, 70_001), _quantize(rng, 65_537),
             _conv_transpose_tiled(rng, c=16, og=8, k=(2, 2), hw=(20, 21), n=2)]
    for program, feeds, expected in built:
        assert_bit_exact(run_program_blob(program, feeds, args=("--threads", str(threads))), expected)
