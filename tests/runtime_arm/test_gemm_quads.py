"""The x86 VNNI int8 paths: the k-quad AVX-512 VNNI GEMM and its im2col, and every x86 GEMM
forced on whole convolutions.

- quads_driver.c checks pack + GEMM (gemm_s8_quads_vnni512.c) against the C reference GEMM on every
  k tail, every pixel tail and random shapes/strides, operands flush against PROT_NONE pages (the
  reference GEMM itself is checked against numpy in test_gemm_kernels.py).
- Convolutions (strides 1/2/3, dilations, padding, groups, blocks of more than 64 pixels, K not a
  multiple of 4, dilated taps that start outside the row, plus random ones) run by the host runtime with `--isa avx2 | avxvnni | avx512vnni` must match the
  integer reference interpreter bit for bit; avx512vnni takes the quad path (im2col straight into
  quads, im2col_quads_vnni512.c), the others the row GEMMs after the transposing im2col.

A VNNI ISA the CPU lacks is skipped with the reason (the selector refuses it and auto falls back
to AVX2); the CI host has both.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import assert_bit_exact, run_program_blob
from tests.runtime_arm.test_gemm_kernels import (
    X86_64_FLAGS,
    build_driver,
    host_cpu_flags,
    needs_host_x86,
    run,
)

CPU_FLAG = {"avx2": "avx2", "avxvnni": "avx_vnni", "avx512vnni": "avx512_vnni"}


def _require(isa: str) -> None:
    if CPU_FLAG[isa] not in host_cpu_flags():
        pytest.skip(f"this CPU has no {CPU_FLAG[isa]}: the selector refuses --isa {isa}")


@pytest.fixture(scope="module")
def quads_driver(tmp_path_factory):
    needed = ("gemm_s8_ref.c", "cpu_features.c", "gemm_s8_select.c", "gemm_s8_avx2.c", "gemm_s8_avxvnni.c",
              "gemm_s8_vnni512.c", "gemm_s8_quads_vnni512.c")  # what the x86 selector and the driver call
    return build_driver("gcc", {name: X86_64_FLAGS[name] for name in needed}, tmp_path_factory.mktemp("quads"), [],
                        driver="quads_driver")


@needs_host_x86
def test_quads_gemm_matches_reference_inside_guard_pages(quads_driver):
    _require("avx512vnni")
    result = run([str(quads_driver), "selftest"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    found = re.search(r"^quads: (\d+) cases, (\d+) failed$", result.stdout, re.MULTILINE)
    assert found and int(found[1]) > 700 and int(found[2]) == 0, result.stdout[-2000:]


@needs_host_x86
def test_quads_path_is_faster_than_the_row_gemm(quads_driver):
    _require("avx512vnni")
    best = {}
    for _ in range(2):  # the machine may be shared: keep each kernel's best of two runs
        out = run([str(quads_driver), "bench", "64", "64", "576", "200"]).stdout
        for name, ns in re.findall(r"^(\w+) m=.* best_ns=(\d+)", out, re.MULTILINE):
            best[name] = min(best.get(name, float("inf")), float(ns))
    # Measured (Sapphire Rapids): quads incl. packing 14 us, vnni512 26 us, avx2 61 us.
    assert best["quads"] < best["vnni512"] < best["avx2"], best


def _convs():
    rng = np.random.default_rng(7)
    yield cases.conv(rng, c=16, o=16, hw=(12, 11), k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1))  # > 64 pixels
    yield cases.conv(rng, c=3, o=7, hw=(17, 13), k=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1))    # K = 27
    yield cases.conv(rng, c=5, o=9, hw=(15, 20), k=(3, 3), stride=(2, 1), pads=(0, 2, 1, 0))
    yield cases.conv(rng, c=4, o=13, hw=(16, 19), k=(5, 3), stride=(3, 3), pads=(2, 1, 2, 1))
    yield cases.conv(rng, c=6, o=8, hw=(14, 14), k=(3, 3), stride=(1, 2), dilation=(2, 2), pads=(2, 2, 2, 2))
    yield cases.conv(rng, c=3, o=5, hw=(12, 13), k=(3, 3), stride=(1, 1), dilation=(1, 2), pads=(1, 2, 1, 2))
    yield cases.conv(rng, c=8, o=20, hw=(9, 70), k=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0))    # pointwise, in place
    yield cases.conv(rng, c=6, o=6, hw=(10, 10), k=(1, 1), stride=(2, 2), pads=(0, 0, 0, 0))
    yield cases.conv(rng, n=2, c=8, o=10, group=2, hw=(7, 9), k=(3, 3), stride=(1, 1), pads=(1, 0, 1, 2))
    yield cases.conv(rng, c=2, o=3, hw=(3, 90), k=(1, 7), stride=(1, 1), pads=(0, 3, 0, 3))     # runs of 90 > 64
    yield cases.conv(rng, c=9, o=70, hw=(5, 5), k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1))     # > 64 channels
    for i in range(8):  # random strides, dilations and pads: taps that start left or right of the image
        yield cases.conv(rng, c=int(rng.integers(1, 6)), o=int(rng.integers(1, 9)), k=[(3, 3), (1, 3), (5, 3), (7, 1)][i % 4],
                         hw=(int(rng.integers(3, 20)), int(rng.integers(3, 40))),
                         stride=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                         dilation=(int(rng.integers(1, 3)), int(rng.integers(1, 4))),
                         pads=tuple(int(v) for v in rng.integers(0, 4, 4)))


@needs_host_x86
@pytest.mark.parametrize("isa", ["avx2", "avxvnni", "avx512vnni"])
def test_convs_bit_exact_on_each_x86_gemm(isa):
    _require(isa)
    for program, feeds, expected in _convs():
        assert_bit_exact(run_program_blob(program, feeds, args=("--isa", isa)), expected)
