"""The C kernel of QResizeBilinear (runtime_arm/src/kernels/qresize_bilinear.c) bit-exact against the
integer reference: upscale, downscale, odd sizes, every coordinate transformation, arbitrary tap
tables and the extreme sums; natively (portable C and the CPU's ISA, several threads) and under
qemu-aarch64 -cpu cortex-a53."""

from __future__ import annotations

import numpy as np
import pytest

from edgekiln.compiler.bilinear_taps import MODES
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_bit_exact,
    one_call,
    qemu,
    run_program_blob,
)

SHAPES = [((1, 3, 5, 7), (9, 4)), ((2, 2, 8, 6), (16, 12)), ((1, 4, 9, 11), (4, 3)), ((1, 1, 1, 1), (3, 5)),
          ((1, 2, 6, 5), (1, 1))]


def _check(built, **run):
    program, feeds, expected = built
    assert_bit_exact(run_program_blob(program, feeds, **run), expected)


@pytest.mark.parametrize("mode", MODES)
def test_onnx_modes_on_the_host(mode):
    rng = np.random.default_rng(len(mode))
    for shape, out_hw in SHAPES:
        _check(cases.resize_bilinear(rng, shape=shape, out_hw=out_hw, mode=mode))


@pytest.mark.parametrize("isa, threads", [("c", 1), ("auto", 3)])
def test_arbitrary_tables_isa_paths_and_threads(isa, threads):
    # 37 output rows: three bands of 16 per plane; random rows in any order stress the two-row cache
    built = cases.resize_bilinear(np.random.default_rng(5), shape=(2, 3, 13, 17), out_hw=(37, 29), random_taps=True)
    _check(built, args=("--isa", isa, "--threads", str(threads)))
    _check(cases.resize_bilinear(np.random.default_rng(6), shape=(1, 5, 9, 8), out_hw=(40, 17)),
           args=("--isa", isa, "--threads", str(threads)))
    # H_out < H: the kernel blends rows first (one scratch row of the input), then gathers columns
    _check(cases.resize_bilinear(np.random.default_rng(7), shape=(2, 2, 41, 11), out_hw=(19, 23), random_taps=True),
           args=("--isa", isa, "--threads", str(threads)))


def test_extreme_values_reach_the_int8_bounds_and_round_half_away_from_zero():
    x = np.array([[[[-128, 127], [127, -128]]]], np.int8)
    # fractions 0, 512 and 1024 on both axes: corners, exact ties (+-0.5) and midpoints
    taps = np.array([[0, 1, 0], [0, 1, 512], [0, 1, 1024], [1, 1, 0]], np.int32)
    program, feeds, expected = one_call("QResizeBilinear", [("x", x, False), ("taps_h", taps, True),
                                                            ("taps_w", taps, True)])
    assert expected["y0"][0, 0, 0, 0] == -128 and expected["y0"][0, 0, 2, 0] == 127
    assert expected["y0"][0, 0, 1, 1] == -1  # (-128 + 127 + 127 - 128) / 4 = -0.5 -> -1
    assert_bit_exact(run_program_blob(program, feeds), expected)


def test_loader_refuses_taps_outside_the_input():
    from edgekiln.backends.arm_cpu.blob_writer import write_blob
    from tests.runtime_arm.harness import host_runner, run_blob

    program, feeds, _ = cases.resize_bilinear(np.random.default_rng(2), shape=(1, 1, 3, 3), out_hw=(2, 2))
    program.constants["taps_h"] = np.array([[0, 3, 10], [0, 1, 0]], np.int32)  # row 3 of a 3-row input
    _, proc = run_blob(write_blob(program), program, feeds, host_runner())
    assert proc.returncode != 0 and "taps_h row 0 reads 0, 3 outside [0, 3)" in proc.stderr, proc.stderr


@pytest.mark.parametrize("mode", ["half_pixel", "align_corners"])
def test_under_qemu_cortex_a53(mode):
    runner = aarch64_runner()
    rng = np.random.default_rng(9)
    for shape, out_hw in SHAPES[:3]:
        _check(cases.resize_bilinear(rng, shape=shape, out_hw=out_hw, mode=mode), runner=runner,
               prefix=qemu("cortex-a53"))
    _check(cases.resize_bilinear(rng, shape=(1, 2, 7, 9), out_hw=(5, 13), random_taps=True), runner=runner,
           prefix=qemu("cortex-a53"))
