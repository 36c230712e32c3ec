"""The sparse kernels of runtime_arm (src/sparse/) against the reference interpreter.

The Program keeps the dense, zero-filled weight (the reference runs the dense math on it);
the sparse plan names the call's format, so the blob holds the sparse arrays and the runtime runs
QSparseGemm / SparseGemm.  Int8 outputs must be bit-exact, float ones within 1e-4 of the
output's scale.  Randomized shapes, sparsities and formats (block 1/2/4/8, 2:4, 1:4) are
merged into one Program per run so each ISA costs one runner start: the host, three threads (AVX2 when the
CPU has it, and the portable C kernels via --isa c), qemu cortex-a53 (NEON) and cortex-a76
(dotprod CPU: the same NEON sparse kernels, dense neighbours on dotprod).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.arm_cpu.call_encoding import encode_program
from edgekiln.backends.arm_cpu.op_codes import OP
from edgekiln.compiler.memory_planner import plan_arena
from edgekiln.compiler.program import Program
from edgekiln.pruning.sparsity_formats import block_layout, fits_n_m, n_m_layout
from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_bit_exact,
    assert_close,
    one_call,
    qemu,
    run_blob,
)
from tests.runtime_arm.int8_cases import int8, multipliers

CHOICES = [{"format": "block", "block": 1}, {"format": "block", "block": 2}, {"format": "block", "block": 4},
           {"format": "block", "block": 8}, {"format": "n:m", "n": 2, "m": 4}, {"format": "n:m", "n": 1, "m": 4}]


def sparse_mask(rng, o: int, k: int, choice: dict) -> np.ndarray:
    """A random keep-mask for [O, K]: N:M groups, or blocks of B output channels at a random density
    (sometimes with whole empty rows)."""
    if choice["format"] == "n:m":
        n, m = choice["n"], choice["m"]
        keep = np.zeros((o, k // m, m), bool)
        ranks = rng.random((o, k // m, m)).argsort(axis=2)
        keep[ranks < n] = True
        keep &= rng.random(keep.shape) > 0.1  # some groups hold fewer than N
        return keep.reshape(o, k)
    block = choice["block"]
    density = float(rng.choice([0.03, 0.2, 0.5, 0.9]))
    rows = -(-o // block)
    blocks = rng.random((rows, k)) < density
    blocks[rng.random(rows) < 0.15] = False
    keep = np.repeat(blocks, block, axis=0)[:o]
    return keep & (rng.random((o, k)) > 0.2)  # blocks need not be full


def _k_for(rng, choice: dict) -> int:
    k = int(rng.integers(1, 90))
    return max(4, k - k % 4) if choice["format"] == "n:m" else k


def int8_conv_case(rng, choice: dict):
    n, c, o = int(rng.integers(1, 3)), _k_for(rng, choice), int(rng.integers(1, 45))
    h, w = int(rng.integers(1, 10)), int(rng.integers(1, 12))
    weights = int8(rng, (o, c, 1, 1), -127, 127) * sparse_mask(rng, o, c, choice)[:, :, None, None].astype(np.int8)
    mult, shift = multipliers(rng, o, max(c // 3, 1))
    attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1,
             "input_zero_point": int(rng.integers(-128, 128)), "output_zero_point": int(rng.integers(-10, 10)),
             "act_min": int(rng.choice([-128, -3])), "act_max": int(rng.choice([127, 100]))}
    return choice, one_call("QConv2D", [("x", int8(rng, (n, c, h, w)), False), ("w", weights, True),
                                ("bias", rng.integers(-3000, 3000, o).astype(np.int32), True), ("mult", mult, True),
                                ("shift", shift, True)], attrs)


def int8_fc_case(rng, choice: dict):
    rows, k, o = int(rng.integers(1, 40)), _k_for(rng, choice), int(rng.integers(1, 50))
    weights = int8(rng, (o, k), -127, 127) * sparse_mask(rng, o, k, choice).astype(np.int8)
    mult, shift = multipliers(rng, o, max(k // 3, 1))
    attrs = {"input_zero_point": int(rng.integers(-128, 128)), "output_zero_point": int(rng.integers(-5, 5)),
             "act_min": -128, "act_max": 127}
    return choice, one_call("QFullyConnected", [("x", int8(rng, (rows, k)), False), ("w", weights, True),
                                        ("bias", rng.integers(-9000, 9000, o).astype(np.int32), True),
                                        ("mult", mult, True), ("shift", shift, True)], attrs)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def float_case(rng, choice: dict, kind: str):
    k, o = _k_for(rng, choice), int(rng.integers(1, 40))
    mask = sparse_mask(rng, o, k, choice)
    w = f32(rng, o, k) * mask
    if kind == "conv":
        n, h, wd = int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(1, 13))
        operands = [("x", f32(rng, n, k, h, wd), False), ("w", w.reshape(o, k, 1, 1), True), ("b", f32(rng, o), True)]
        attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1,
                 "epilogue": ["Add", "Relu"]}
        operands.append(("r", f32(rng, n, o, h, wd), False))
        return choice, one_call("FusedConv", operands, attrs)
    rows = int(rng.integers(1, 30))
    if kind == "matmul":
        return choice, one_call("FusedMatMul", [("a", f32(rng, 2, rows, k), False),
                                                ("b", np.ascontiguousarray(w.T), True), ("bias", f32(rng, o), True)],
                                {"epilogue": ["Relu"]})
    trans_b = int(kind == "gemm")  # "gemm_kn": B stored [K, N]
    return choice, one_call("Gemm", [("a", f32(rng, rows, k), False), ("b", w if trans_b else np.ascontiguousarray(w.T), True),
                                     ("c", f32(rng, o), True)], {"transB": trans_b, "alpha": 1.0, "beta": 0.5})


def merge(cases):
    """One Program running every case's call side by side (names prefixed per case), and the
    sparse plan naming each call's format."""
    tensors, constants, calls, inputs, outputs, feeds, expected, plan = {}, {}, [], [], [], {}, {}, {}
    for i, (choice, (program, case_feeds, case_expected)) in enumerate(cases):
        rename = {name: f"c{i}_{name}" for name in program.tensors}
        for name, spec in program.tensors.items():
            tensors[rename[name]] = dataclasses.replace(spec, name=rename[name])
        constants.update({rename[n]: v for n, v in program.constants.items()})
        for call in program.calls:
            plan[f"c{i}_{call.name}"] = choice
            calls.append(dataclasses.replace(call, name=f"c{i}_{call.name}",
                                             inputs=tuple(rename.get(n, n) for n in call.inputs),
                                             outputs=tuple(rename[n] for n in call.outputs)))
        inputs += [rename[n] for n in program.inputs]
        outputs += [rename[n] for n in program.outputs]
        feeds.update({rename[n]: v for n, v in case_feeds.items()})
        expected.update({rename[n]: v for n, v in case_expected.items()})
    merged = Program(tensors, constants, calls, inputs, outputs, plan_arena(tensors, calls))
    merged.validate()
    return merged, feeds, expected, plan


def all_cases(seed: int):
    rng = np.random.default_rng(seed)
    int8_cases, float_cases = [], []
    for i, choice in enumerate(CHOICES * 2):
        int8_cases.append(int8_conv_case(rng, choice))
        int8_cases.append(int8_fc_case(rng, choice))
        float_cases.append(float_case(rng, choice, ("conv", "matmul", "gemm", "gemm_kn")[i % 4]))
    return merge(int8_cases), merge(float_cases)


def _check(run, seed: int) -> None:
    int8_cases, float_cases = all_cases(seed)
    for (program, feeds, expected, plan), exact in ((int8_cases, True), (float_cases, False)):
        blob = write_blob(program, plan)
        got, proc = run(blob, program, feeds)
        assert proc.returncode == 0, proc.stderr
        (assert_bit_exact if exact else assert_close)(got, expected)


def test_blob_holds_sparse_calls():
    (qprog, _, _, qplan), (fprog, _, _, fplan) = all_cases(0)
    assert {c.op for c in encode_program(qprog, qplan)[0]} == {OP["QSPARSE_GEMM"]}
    assert {c.op for c in encode_program(fprog, fplan)[0]} == {OP["SPARSE_GEMM"]}
    assert OP["QSPARSE_GEMM"] not in {c.op for c in encode_program(qprog)[0]}  # no plan: dense


@pytest.mark.parametrize("isa", ["auto", "c"])
def test_host(isa):
    from tests.runtime_arm.harness import host_runner

    _check(lambda blob, program, feeds: run_blob(blob, program, feeds, host_runner(), args=("--isa", isa, "--threads", "3")), seed=1)


@pytest.mark.parametrize("cpu,seed", [("cortex-a53", 2), ("cortex-a76", 3)])
def test_qemu(cpu, seed):
    runner = aarch64_runner()
    _check(lambda blob, program, feeds: run_blob(blob, program, feeds, runner, prefix=qemu(cpu)), seed=seed)


def test_formats_round_trip():
    """The layouts hold exactly the weight: rebuilding [O, K] from them gives it back."""
    rng = np.random.default_rng(7)
    for choice in CHOICES:
        o, k = 13, 24
        w = (rng.integers(-127, 128, (o, k)) * sparse_mask(rng, o, k, choice)).astype(np.int8)
        rebuilt = np.zeros((-(-o // 8) * 8, k), np.int64)
        if choice["format"] == "block":
            b = choice["block"]
            values, index, row_ptr = block_layout(w, b)
            for r in range(len(row_ptr) - 1):
                for t in range(row_ptr[r], row_ptr[r + 1]):
                    rebuilt[r * b:(r + 1) * b, index.view(np.uint16)[t]] = values[t * b:(t + 1) * b]
        else:
            n, m = choice["n"], choice["m"]
            assert fits_n_m(w, n, m)
            values, meta = n_m_layout(w, n, m)
            pos = np.stack([(meta >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)[:values.size]
            for t, v in enumerate(values):
                row, rest = divmod(t, k // m * n)
                rebuilt[row, rest // n * m + pos[t]] += v
        np.testing.assert_array_equal(rebuilt[:o], w)


def test_plan_on_a_3x3_conv_is_refused():
    from edgekiln.errors import UnsupportedOpError
    from tests.runtime_arm.int8_cases import conv

    program, _, _ = conv(np.random.default_rng(4), k=(3, 3))
    with pytest.raises(UnsupportedOpError, match="not 1x1"):
        write_blob(program, {program.calls[0].name: {"format": "block", "block": 1}})


def test_corrupted_sparse_blobs_fail_cleanly_under_sanitizers(tmp_path):
    """fuzz/fuzz_blob.c (AddressSanitizer + UBSan) mutates sparse blobs (indices, row pointers,
    counts, attributes) and runs every one that still loads: no out-of-bounds access, no UB."""
    import os
    import subprocess

    from tests.runtime_arm.harness import sanitized_fuzzer

    fuzzer = sanitized_fuzzer()
    rng = np.random.default_rng(11)
    seeds = {"int8_conv_block4": int8_conv_case(rng, CHOICES[2]), "int8_fc_2_4": int8_fc_case(rng, CHOICES[4]),
             "fp32_conv_block8": float_case(rng, CHOICES[3], "conv"), "fp32_fc_1_4": float_case(rng, CHOICES[5], "gemm")}
    env = {**os.environ, "ASAN_OPTIONS": "allocator_may_return_null=1:detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    seconds = float(os.environ.get("EDGEKILN_FUZZ_SECONDS", "0.6"))
    for k, (name, (choice, (program, _, _))) in enumerate(sorted(seeds.items())):
        path = tmp_path / f"{name}.blob"
        path.write_bytes(write_blob(program, {program.calls[0].name: choice}))
        proc = subprocess.run([str(fuzzer), str(path), str(seconds), str(k + 1)], capture_output=True, text=True,
                              check=False, env=env, timeout=seconds * 10 + 60)
        assert proc.returncode == 0, f"{name}: {proc.stdout}\n{proc.stderr[-4000:]}"
