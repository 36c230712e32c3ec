"""Fuzzing the blob loader: corrupted blobs give a clean error, never a crash.

Two harnesses on real blobs of many op kinds:
- `fuzz/fuzz_blob.c` built with AddressSanitizer + UBSan mutates blobs in-process (bit flips,
  interesting integers over table fields, truncation), usually re-sealing the CRC so the
  mutation reaches the table and kernel checks, and runs every blob that still loads; any
  out-of-bounds access or undefined behaviour aborts it;
- the shipped static `ek_run` gets mutated blobs from Python and must exit 0, 3 or 4, never
  by a signal.

EDGEKILN_FUZZ_SECONDS sets the sanitizer run per seed (default 0.6 s; the slow test 8 s).
"""

from __future__ import annotations

import os
import subprocess
import zlib

import numpy as np
import pytest

from edgekiln.backends.arm_cpu.blob_writer import write_blob
from tests.backends.arm_cpu.test_fused_block import fused_block
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import host_runner, one_call, run_blob, sanitized_fuzzer


def _seeds():
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.uniform(-1, 1, s).astype(np.float32)
    return {
        "conv_int4_groups": cases.conv(rng, c=4, o=5, hw=(7, 6), k=(3, 3), bits=4, group_size=12),
        "depthwise_ternary": cases.conv(rng, depthwise=True, c=6, hw=(7, 7), k=(3, 3), bits=2),
        "fc": cases.fully_connected(rng, shape=(2, 40), n=33),
        "inverted_residual": fused_block(rng, cin=3, ce=17, co=5, hw=(11, 9), stride=(2, 2)),
        "matmul": cases.matmul(rng, a_shape=(2, 3, 5, 7), b_shape=(1, 3, 7, 4)),
        "softmax": cases.softmax(rng),
        "layer_norm": cases.layer_norm(rng, d=16),
        "concat": cases.concat(rng),
        "pad": cases.pad(rng, "reflect"),
        "conv_transpose": cases.conv_transpose(rng, with_ratio=True),
        "f32_conv": one_call("FusedConv", [("x", f32(1, 3, 6, 6), False), ("w", f32(4, 3, 3, 3), True),
                                           ("b", f32(4), True), ("r", f32(1, 4, 6, 6), False)],
                             {"epilogue": ["Add", "Relu"], "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        "f32_gemm": one_call("Gemm", [("a", f32(3, 8), False), ("b", f32(5, 8), True), ("c", f32(5), True)], {"transB": 1}),
        "f32_resize": one_call("Resize", [("x", f32(1, 2, 4, 5), False), ("roi", np.zeros(0, np.float32), True),
                                          ("scales", np.array([1, 1, 2, 2], np.float32), True)], {"mode": "linear"}),
        "f32_slice": one_call("Slice", [("x", f32(3, 4, 5), False), ("s", np.array([-1], np.int64), True),
                                        ("e", np.array([-9], np.int64), True), ("a", np.array([2], np.int64), True),
                                        ("p", np.array([-2], np.int64), True)]),
        "f32_layer_norm": one_call("LayerNormalization", [("x", f32(2, 3, 8), False), ("s", f32(8), True)], {"axis": -1}),
        "resize_bilinear": cases.resize_bilinear(rng, shape=(1, 2, 5, 6), out_hw=(7, 3)),
        "fc_float_output": cases.weight_float_output(rng, "QFullyConnected"),
        # written with --weight-layout compact (COMPACT_SEEDS): ternary base-3, unpacked per task
        "conv_ternary_compact": cases.conv(rng, c=5, o=7, hw=(6, 5), k=(3, 3), bits=2, group_size=15),
    }


COMPACT_SEEDS = {"conv_ternary_compact"}


SEEDS = _seeds()


def _fuzz(seconds: float, tmp_path) -> dict[str, str]:
    fuzzer = sanitized_fuzzer()
    env = {**os.environ, "ASAN_OPTIONS": "allocator_may_return_null=1:detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    results = {}
    for k, (name, (program, _, _)) in enumerate(sorted(SEEDS.items())):
        path = tmp_path / f"{name}.blob"
        path.write_bytes(write_blob(program, weight_layout="compact" if name in COMPACT_SEEDS else "fast"))
        proc = subprocess.run([str(fuzzer), str(path), str(seconds), str(k + 1)], capture_output=True, text=True, check=False,
                              env=env, timeout=seconds * 10 + 60)
        assert proc.returncode == 0, f"{name}: {proc.stdout}\n{proc.stderr[-4000:]}"
        results[name] = proc.stdout.strip()
    return results


def test_sanitized_fuzzer_finds_nothing(tmp_path):
    seconds = float(os.environ.get("EDGEKILN_FUZZ_SECONDS", "0.6"))
    results = _fuzz(seconds, tmp_path)
    counts = {name: [int(v) for v in line.split()[1::2]] for name, line in results.items()}
    assert sum(c[0] for c in counts.values()) > 1000      # iterations
    assert all(c[1] > 0 for c in counts.values())          # some mutants still load (and run)


@pytest.mark.slow
def test_sanitized_fuzzer_long(tmp_path):
    _fuzz(float(os.environ.get("EDGEKILN_FUZZ_SECONDS", "8")), tmp_path)


def _mutants(blob: bytes, rng: np.random.Generator, count: int):
    tables_end = int.from_bytes(blob[64 + 16 * 7:64 + 16 * 7 + 8], "little")
    for _ in range(count):
        data = bytearray(blob)
        kind = rng.integers(0, 4)
        if kind == 0:
            data = data[:int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(0, tables_end))
                if kind == 1:
                    data[at] ^= 1 << int(rng.integers(0, 8))
                elif kind == 2:
                    data[at] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF]))
                else:
                    at -= at % 4
                    data[at:at + 4] = int(rng.choice([0, 1, 2**31 - 1, 2**32 - 1, 2**16])).to_bytes(4, "little")
        if len(data) >= 32 and rng.random() < 0.85:
            data[24:28] = zlib.crc32(bytes(data[32:])).to_bytes(4, "little")
        yield bytes(data)


def test_ek_run_exits_cleanly_on_corrupted_blobs():
    rng = np.random.default_rng(1)
    statuses = {}
    for name in ("conv_int4_groups", "matmul", "f32_conv", "layer_norm"):
        program, feeds, _ = SEEDS[name]
        for blob in _mutants(write_blob(program), rng, 60):
            _, proc = run_blob(blob, program, feeds, host_runner(), timeout=60)
            assert proc.returncode >= 0, f"{name}: ek_run killed by signal {-proc.returncode}: {proc.stderr}"
            assert proc.returncode in (0, 3, 4), f"{name}: exit {proc.returncode}: {proc.stderr}"
            statuses[proc.returncode] = statuses.get(proc.returncode, 0) + 1
    assert statuses.get(3, 0) > 100
