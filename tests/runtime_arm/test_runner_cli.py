"""The ek_run executable's interface: latency statistics, the per-call profile, ISA choice
(refused when the CPU lacks it), threads, and its usage errors."""

from __future__ import annotations

import json
import subprocess

import numpy as np

from edgekiln.backends.arm_cpu.blob_writer import write_blob
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.harness import (
    HOST_ARCH,
    aarch64_runner,
    host_runner,
    qemu,
    run_blob,
)


def _conv():
    return cases.conv(np.random.default_rng(3), c=4, o=8, hw=(9, 9), k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1))


def test_repeat_prints_latency_statistics_and_profile(tmp_path):
    program, feeds, expected = _conv()
    profile = tmp_path / "profile.json"
    outputs, proc = run_blob(write_blob(program), program, feeds, host_runner(),
                             args=("--repeat", "5", "--warmup", "2", "--profile", str(profile)))
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(outputs["y0"], expected["y0"])
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    latency = stats["latency_ms"]
    assert stats["repeat"] == 5 and stats["warmup"] == 2 and stats["threads"] == 1
    assert 0 < latency["min"] <= latency["median"] <= latency["p90"]
    assert stats["isa"] in ("avx512vnni", "avxvnni", "avx2", "c", "neon", "dotprod", "i8mm")
    calls = json.loads(profile.read_text())["calls"]
    assert [(c["name"], c["op"]) for c in calls] == [("qconv2d", "QConv2D")] and calls[0]["seconds"] > 0


def test_isa_choice_and_refusal():
    program, feeds, _ = _conv()
    blob = write_blob(program)
    _, proc = run_blob(blob, program, feeds, host_runner(), args=("--isa", "c"))
    assert proc.returncode == 0 and json.loads(proc.stdout)["isa"] == "c"
    foreign = "i8mm" if HOST_ARCH == "x86_64" else "avx2"  # an ISA of the other architecture
    _, proc = run_blob(blob, program, feeds, host_runner(), args=("--isa", foreign))
    assert proc.returncode == 5 and f"{foreign} refused" in proc.stderr
    _, proc = run_blob(blob, program, feeds, host_runner(), args=("--isa", "sse9"))
    assert proc.returncode == 5 and "unknown ISA" in proc.stderr


def test_qemu_cpu_models_select_their_gemm_paths():
    runner = aarch64_runner()
    program, feeds, expected = cases.conv(np.random.default_rng(4), c=3, o=4, hw=(5, 5), k=(3, 3))
    blob = write_blob(program)
    for cpu, isa in (("cortex-a53", "neon"), ("cortex-a76", "dotprod"), ("max", "i8mm")):
        outputs, proc = run_blob(blob, program, feeds, runner, prefix=qemu(cpu))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["isa"] == isa, cpu
        np.testing.assert_array_equal(outputs["y0"], expected["y0"])
    _, proc = run_blob(blob, program, feeds, runner, prefix=qemu("cortex-a53"), args=("--isa", "dotprod"))
    assert proc.returncode == 5 and "dotprod refused" in proc.stderr


def test_usage_errors(tmp_path):
    program, _, _ = _conv()
    blob = tmp_path / "m.blob"
    blob.write_bytes(write_blob(program))
    runner = str(host_runner())
    for args, message in (([], "no model file"), ([str(blob)], "no --input for model input 'x'"),
                          ([str(blob), "--input", "x=/nonexistent.bin"], "is 0 bytes"),
                          ([str(blob), "--threads", "0"], "bad count"), ([str(blob), "--bogus"], "unknown option"),
                          ([str(tmp_path / "missing.blob")], "cannot read")):
        proc = subprocess.run([runner, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
