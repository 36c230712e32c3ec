"""`edgekiln bench`: latency and per-op profile on the host, guest instruction counts per call
under qemu, and their references.

- ops per call: equal to 2 x the MACs `edgekiln inspect` counts on the ONNX graph (an
  independent count over the source model);
- time: shares sum to one, ops/s and % of peak follow from the target's description;
- instructions: the same artifact gives the same counts twice; the per-call counts plus the
  clock overhead add up to the marked total, and that total equals the difference of two
  whole-process counts (R+1 runs minus R runs) taken without any marker; the portable C GEMM
  path costs more instructions than dotprod on the same convolution.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

import edgekiln
from edgekiln.backends.arm_cpu.insn_plugin import build_plugin
from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
from edgekiln.cli import main
from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.model_stats import layer_stats
from edgekiln.compiler.target import get_target
from edgekiln.profiler.bench_artifact import bench_artifact, random_inputs
from edgekiln.profiler.call_ops import call_work
from tests.runtime_arm.harness import aarch64_runner
from tests.support.graphs import conv_relu_model
from tests.zoo import input_shapes, model_path, sample_input


@pytest.fixture(scope="module")
def host_conv(tmp_path_factory):
    import onnx

    folder = tmp_path_factory.mktemp("bench")
    onnx.save(conv_relu_model(), folder / "conv.onnx")
    artifact = edgekiln.compile(folder / "conv.onnx")
    artifact.save(folder / "art")
    return folder / "art", folder / "conv.onnx"


@pytest.fixture(scope="module")
def digits_a76(tmp_path_factory):
    aarch64_runner()  # skips without the cross compiler / qemu
    name = "digits_cnn"
    artifact = edgekiln.compile(model_path(name), "cortex-a76", input_shapes=input_shapes(name), quant="int8",
                                calib=[sample_input(name, seed=s) for s in range(1, 5)], progress=False)
    artifact.save(tmp_path_factory.mktemp("digits") / "art")
    return artifact


def test_host_bench_cli_reports_latency_profile_and_peak(host_conv, tmp_path):
    artifact_dir, _ = host_conv
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(artifact_dir), "--repeat", "5", "--warmup", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "wall time per call" in result.output and "per-op profile" in result.output
    report = json.loads(out.read_text())
    assert report["measure"] == "time" and report["device"] == "local" and report["repeat"] == 5
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"]
    assert report["arena_bytes"] >= 0 and report["max_rss_kb"] > 0
    calls = report["calls"]
    assert abs(sum(c["share"] for c in calls) - 1) < 1e-6
    conv = next(c for c in calls if c["compute_bound"])
    assert conv["ops"] == 2 * (4 * 8 * 8) * (3 * 3 * 3) and conv["precision"] == "fp32"
    host = get_target("host")
    expected = conv["ops"] / conv["cost"] / (host.peak_ops_per_second["fp32"] / host.cores)
    assert conv["peak_fraction"] == pytest.approx(expected, rel=1e-9)


def test_bench_option_errors_are_one_line(host_conv):
    artifact_dir, _ = host_conv
    for args, message in ((["--measure", "instructions"], "instruction counts need the qemu device"),
                          (["--device", "usb"], "unknown device 'usb'")):
        result = CliRunner().invoke(main, ["bench", str(artifact_dir), *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_run_command_takes_threads(host_conv, tmp_path):
    artifact_dir, _ = host_conv
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = []
    for threads in ("1", "2"):
        result = CliRunner().invoke(main, ["run", str(artifact_dir), "-i", str(tmp_path / "x.npy"), "--threads", threads,
                                           "-o", str(tmp_path / f"y{threads}.npy")])
        assert result.exit_code == 0, result.output
        outs.append(np.load(tmp_path / f"y{threads}.npy"))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.slow
def test_ops_per_call_match_the_onnx_mac_count(digits_a76):
    graph = load_model(model_path("digits_cnn"), input_shapes("digits_cnn"))
    macs = {s.name: s.macs for s in layer_stats(graph) if s.op_type in ("Conv", "Gemm", "MatMul")}
    program = json.loads(digits_a76.files["program/program.json"])
    assert macs
    for name, count in macs.items():
        # A node lowers to one call of its name, or to several named "<node>/<step>".
        calls = [c for c in program["calls"] if c["name"] == name or c["name"].startswith(name + "/")]
        works = [call_work(c, program["tensors"]) for c in calls]
        assert sum(w.ops for w in works if w.compute_bound) == 2 * count, name
        for call, work in zip(calls, works):
            if call["op"] in ("QConv2D", "QFullyConnected"):
                assert work.precision == "int8", name


@pytest.mark.slow
def test_instruction_counts_are_deterministic_and_add_up(digits_a76):
    runner = ArmCpuRunner(digits_a76.files, digits_a76.manifest)
    feeds = random_inputs(digits_a76.input_specs)
    first, stats = runner.count_instructions(feeds)
    second, _ = runner.count_instructions(feeds)
    assert first == second
    assert len(first.per_call) == len(stats["profile"]) == len(digits_a76.manifest["layers"])
    calls = len(first.per_call)
    inside = sum(first.per_call) + calls * first.overhead
    assert 0 < first.overhead < 200 and inside <= first.total < inside + 400  # the run's own loop + two clock reads

    # Independent: whole-process counts of R and R+1 runs, no marker, no per-call clock reads.
    plugin = build_plugin()
    work = digits_a76.path
    (work.parent / "in0.bin").write_bytes(feeds["input"].astype("<f4").tobytes())
    runner_exe = work.parent / "ek_run"  # a saved artifact's files are not executable
    runner_exe.write_bytes(digits_a76.files["bin/ek_run"])
    runner_exe.chmod(0o755)
    totals = []
    for repeat in (1, 2):
        proc = subprocess.run(["qemu-aarch64", "-cpu", "cortex-a76", "-plugin", str(plugin), "-d", "plugin",
                               str(runner_exe), str(work / "model.blob"), "--input",
                               f"input={work.parent / 'in0.bin'}", "--warmup", "1", "--repeat", str(repeat)],
                              capture_output=True, text=True, check=True)
        totals.append(int(proc.stderr.split("insns: ")[1].split()[0]))
    one_run = totals[1] - totals[0]
    assert abs(one_run - (first.total - calls * first.overhead)) < 0.02 * one_run + 200


@pytest.mark.slow
def test_c_gemm_path_costs_more_instructions_than_dotprod(digits_a76):
    runner = ArmCpuRunner(digits_a76.files, digits_a76.manifest)
    feeds = random_inputs(digits_a76.input_specs)
    portable, _ = runner.count_instructions(feeds, isa="c")
    dotprod, stats = runner.count_instructions(feeds, isa="dotprod")
    convs = [k for k, c in enumerate(stats["profile"]) if c["op"] == "QConv2D"]
    assert convs and all(portable.per_call[k] > dotprod.per_call[k] for k in convs)
    # Data movement has no ISA-specific path (Quantize, the lookups and the pools do, since they got NEON
    # kernels): its count must not move with --isa, or the per-call attribution would be off.
    untouched = [k for k, c in enumerate(stats["profile"]) if c["op"] in ("Copy",)]
    assert untouched and all(portable.per_call[k] == dotprod.per_call[k] for k in untouched)


@pytest.mark.slow
def test_qemu_bench_cli_defaults_to_instructions(digits_a76, tmp_path):
    out = tmp_path / "b.json"
    result = CliRunner().invoke(main, ["bench", str(digits_a76.path), "--json", str(out), "--top", "0"])
    assert result.exit_code == 0, result.output
    assert "guest instructions per call" in result.output
    report = json.loads(out.read_text())
    assert report["measure"] == "instructions" and report["device"] == "qemu" and report["isa"] == "dotprod"
    assert report["total_instructions"] > sum(c["cost"] for c in report["calls"]) > 0
    result = CliRunner().invoke(main, ["bench", str(digits_a76.path), "--threads", "2"])
    assert result.exit_code == 2 and "--threads 1" in result.output
    direct = bench_artifact(digits_a76, device="qemu:cortex-a53", measure="instructions")
    assert direct.isa == "neon" and direct.total_instructions != report["total_instructions"]
    if os.uname().machine == "x86_64":
        result = CliRunner().invoke(main, ["bench", str(digits_a76.path), "--device", "local"])
        assert result.exit_code == 2 and "run it under qemu or on the device" in result.output


def test_a_lookup_table_is_no_weight_and_gets_no_precision():
    tensors = {"x": {"shape": [1, 8], "dtype": "int8", "kind": "activation"},
               "table": {"shape": [256], "dtype": "int8", "kind": "constant", "quant": None},
               "y": {"shape": [1, 8], "dtype": "int8", "kind": "activation"},
               "w": {"shape": [4, 8], "dtype": "int8", "kind": "constant", "quant": {"bits": 4}}}
    lookup = call_work({"op": "QLookupTable", "inputs": ["x", "table"], "outputs": ["y"]}, tensors)
    assert lookup.precision == "-" and not lookup.compute_bound
    fc = call_work({"op": "QFullyConnected", "inputs": ["x", "w"], "outputs": ["y"]}, tensors)
    assert fc.precision == "int4" and fc.ops == 2 * 8 * 8
