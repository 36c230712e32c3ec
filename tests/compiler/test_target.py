"""Targets are data: the bundled descriptions, user-written ones, and every way a file can be wrong."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
from importlib import resources

import pytest
from rich.table import Table

from edgekiln.compiler.target import (SUMMARY_COLUMNS, Target, available_targets, get_target,
                                      load_target_file, render_targets_table)
from edgekiln.errors import EdgekilnError, UnknownTargetError

BUNDLED_FILES = sorted(p.name for p in (resources.files("edgekiln.compiler") / "targets").iterdir()
                       if p.name.endswith(".toml"))
REQUIRED = {"host", "cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1", "cortex-x1",
            "mali-g76", "adreno-640", "edgetpu", "kv260", "zcu104"}

# A small valid user description; the malformed cases below each break one thing in it.
MY_DEVICE = """\
name = "my-board"
kind = "arm_cpu"
backend = "arm_cpu"
description = "a test board"
precisions = ["fp32", "int8"]
cores = 2
clock_ghz = 1.0
memory_bandwidth_gbps = 6.4
on_chip_memory_bytes = 524288

[ops_per_cycle]
fp32 = 16
int8 = 64

[peak_ops_per_second]
fp32 = 32.0e9
int8 = 128.0e9

[cpu]
features = ["neon", "dotprod"]
qemu_cpu = "cortex-a76"
l2_bytes = 524288
"""


def write(tmp_path, text: str, name: str = "my-board.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the bundled descriptions ------------------------------------------------------------------

def test_every_required_target_is_bundled():
    assert REQUIRED <= {t.name for t in available_targets()}
    assert len(BUNDLED_FILES) == len(available_targets())


@pytest.mark.parametrize("filename", BUNDLED_FILES)
def test_bundled_file_loads_and_validates(filename):
    target = get_target(filename.removesuffix(".toml"))
    assert target.name == filename.removesuffix(".toml")
    assert target.precisions and set(target.peak_ops_per_second) == set(target.precisions)
    assert target.memory_bandwidth_gbps > 0 and target.on_chip_memory_bytes > 0
    assert target.details, "the kind's own table is kept"
    if target.kind in ("arm_cpu", "x86_cpu", "mobile_gpu"):
        assert target.cores and target.clock_ghz and {"fp32", "int8"} <= set(target.ops_per_cycle)


@pytest.mark.parametrize("filename", BUNDLED_FILES)
def test_every_number_cites_a_source(filename):
    """Each numeric line has a comment ([SOURCE] tag, ESTIMATE, derivation), or its table header does."""
    text = (resources.files("edgekiln.compiler") / "targets" / filename).read_text()
    assert "https://" in text
    header_commented = False
    for line in text.splitlines():
        if line.startswith("["):
            header_commented = "#" in line
            continue
        value = line.partition("=")[2].split("#")[0].strip()
        if value[:1].isdigit():
            assert "#" in line or header_commented, f"{filename}: {line}"


def test_peaks_equal_cores_times_clock_times_ops_per_cycle():
    for t in available_targets():
        for precision, ops in t.ops_per_cycle.items():
            derived = (t.cores or 1) * t.clock_ghz * 1e9 * ops
            assert math.isclose(t.peak_ops_per_second[precision], derived, rel_tol=1e-9), (t.name, precision)


def test_sdot_gives_four_times_the_fp32_lane_rate():
    # fp32 FMLA: 4 lanes x 2 flops per 128-bit op; SDOT: 16 int8 MACs x 2 ops on the same pipes.
    for name in ("cortex-a76", "neoverse-n1", "cortex-x1"):
        t = get_target(name)
        assert t.ops_per_cycle["int8"] == 4 * t.ops_per_cycle["fp32"], name
    assert get_target("cortex-a76").ops_per_cycle["fp32"] == 16  # 2 x 128-bit FMA pipes
    assert get_target("cortex-x1").ops_per_cycle["fp32"] == 32   # 4 x 128-bit pipes


@pytest.mark.parametrize(("name", "has", "lacks", "qemu"), [
    ("cortex-a53", {"neon"}, {"dotprod", "i8mm", "fp16"}, "cortex-a53"),
    ("cortex-a72", {"neon"}, {"dotprod", "i8mm", "fp16"}, "cortex-a72"),
    ("cortex-a76", {"neon", "fp16", "dotprod"}, {"i8mm"}, "cortex-a76"),
    ("neoverse-n1", {"neon", "fp16", "dotprod"}, {"i8mm", "sve"}, "neoverse-n1"),
    # Armv8.2 + dotprod; i8mm came with Armv8.6 (Cortex-X2).  qemu has no X1, "max" is a superset.
    ("cortex-x1", {"neon", "fp16", "dotprod"}, {"i8mm", "bf16", "sve"}, "max"),
])
def test_arm_isa_features_and_qemu_model(name, has, lacks, qemu):
    t = get_target(name)
    assert t.kind == "arm_cpu" and t.backend == "arm_cpu"
    assert has <= set(t.features) and not lacks & set(t.features)
    assert t.qemu_cpu == qemu


def test_host_is_x86_compiled_by_the_arm_cpu_backend():
    host = get_target("host")
    assert (host.kind, host.backend, host.qemu_cpu) == ("x86_cpu", "arm_cpu", None)
    assert {"avx2", "fma"} <= set(host.features)


def test_accelerators_have_no_isa_features():
    tpu = get_target("edgetpu")
    assert tpu.precisions == ("int8",)
    assert tpu.peak_ops_per_second["int8"] == 4e12
    assert tpu.details["tops_per_watt"] == 2.0
    for name in ("edgetpu", "mali-g76", "adreno-640", "kv260", "zcu104"):
        assert get_target(name).features == () and get_target(name).qemu_cpu is None
    assert get_target("kv260").details["dsp"] == 1248 and get_target("zcu104").details["dsp"] == 1728


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None or shutil.which("qemu-arm") is None,
                    reason="qemu-user not installed")
def test_qemu_models_exist():
    # 32-bit armv7 targets (isa armv7-a) run under qemu-arm, whose CPU models differ from qemu-aarch64's
    listings = {q: subprocess.run([q, "-cpu", "help"], capture_output=True, text=True, check=False).stdout.split()
                for q in ("qemu-aarch64", "qemu-arm")}
    for t in available_targets():
        if t.qemu_cpu:
            qemu = "qemu-arm" if str(t.details.get("isa", "")).startswith("armv7") else "qemu-aarch64"
            assert t.qemu_cpu in listings[qemu], t.name


def test_available_targets_is_sorted_cached_and_safe_to_mutate():
    first = available_targets()
    assert [t.name for t in first] == sorted(t.name for t in first)
    first.clear()
    again = available_targets()
    assert again and again[0] is available_targets()[0]


# --- lookup ------------------------------------------------------------------------------------

def test_lookup_ignores_case():
    assert get_target("Cortex-A76") is get_target("cortex-a76")


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownTargetError) as info:
        get_target("cortex-a77")
    message = str(info.value)
    assert message.startswith("unknown target 'cortex-a77'; did you mean: cortex-a7, cortex-a76, cortex-a72")
    assert "Run 'edgekiln targets' for the list, or pass a description file (.toml)" in message


def test_unknown_name_without_close_names():
    with pytest.raises(UnknownTargetError, match=r"^unknown target 'toaster'\. Run 'edgekiln targets'"):
        get_target("toaster")


def test_user_file_loads_by_path(tmp_path):
    path = write(tmp_path, MY_DEVICE)
    for given in (path, str(path)):
        t = get_target(given)
        assert t.name == "my-board" and t.features == ("neon", "dotprod") and t.qemu_cpu == "cortex-a76"
        assert t.peak_ops_per_second == {"fp32": 32e9, "int8": 128e9}
        assert t.details["l2_bytes"] == 524288
    assert load_target_file(path) == get_target(str(path))
    assert "my-board" not in {t.name for t in available_targets()}


def test_user_file_that_does_not_exist(tmp_path):
    with pytest.raises(EdgekilnError, match="does not exist"):
        get_target(str(tmp_path / "nope.toml"))


# --- malformed files: each names the file and the field ----------------------------------------

@pytest.mark.parametrize(("old", "new", "field", "says"), [
    ('cores = 2\n', '', "cores", "is missing"),
    ('description = "a test board"\n', '', "description", "is missing"),
    ('cores = 2', 'cores = "two"', "cores", "must be a positive integer"),
    ('cores = 2', 'cores = 2.5', "cores", "must be a positive integer"),
    ('clock_ghz = 1.0', 'clock_ghz = -1.0', "clock_ghz", "must be a positive number"),
    ('memory_bandwidth_gbps = 6.4', 'memory_bandwidth_gbps = true', "memory_bandwidth_gbps", "positive number"),
    ('precisions = ["fp32", "int8"]', 'precisions = "int8"', "precisions", "must be a list of strings"),
    ('precisions = ["fp32", "int8"]', 'precisions = ["fp32", "int9"]', "precisions", "int9"),
    ('kind = "arm_cpu"', 'kind = "cpu"', "kind", "not one of"),
    ('backend = "arm_cpu"', 'backend = "tvm"', "backend", "not one of"),
    ('int8 = 128.0e9', 'int8 = "fast"', "peak_ops_per_second.int8", "positive number"),
    ('int8 = 128.0e9\n', '', "peak_ops_per_second.int8", "is missing"),
    ('int8 = 128.0e9', 'int8 = 64.0e9', "peak_ops_per_second.int8", "cores x clock_ghz x ops_per_cycle.int8"),
    ('fp32 = 32.0e9', 'fp32 = 32.0e9\nfp16 = 64.0e9', "peak_ops_per_second.fp16", "not in 'precisions'"),
    ('features = ["neon", "dotprod"]', 'features = ["neon", "dotpord"]', "cpu.features", "dotpord"),
    ('features = ["neon", "dotprod"]\n', '', "cpu.features", "is missing"),
    ('qemu_cpu = "cortex-a76"', 'qemu_cpu = 76', "cpu.qemu_cpu", "must be a non-empty string"),
    ('[cpu]', '[gpu]', "gpu", "does not belong in a description of kind 'arm_cpu'"),
    ('[cpu]\nfeatures = ["neon", "dotprod"]\nqemu_cpu = "cortex-a76"\nl2_bytes = 524288\n', '', "cpu", "is missing"),
    ('[cpu]', '[cpus]', "cpus", "is not a known field (did you mean 'cpu'?)"),
    ('memory_bandwidth_gbps = 6.4', 'memory_bandwith_gbps = 6.4', "memory_bandwith_gbps",
     "did you mean 'memory_bandwidth_gbps'"),
])
def test_malformed_file_names_file_and_field(tmp_path, old, new, field, says):
    assert old in MY_DEVICE
    path = write(tmp_path, MY_DEVICE.replace(old, new, 1))
    with pytest.raises(EdgekilnError) as info:
        get_target(str(path))
    message = str(info.value)
    assert str(path) in message and f"field '{field}'" in message and says in message, message


def test_bad_toml_names_the_file(tmp_path):
    path = write(tmp_path, MY_DEVICE.replace('name = "my-board"', 'name = my-board'))
    with pytest.raises(EdgekilnError, match=r"my-board\.toml: not a valid TOML file.*line 1"):
        get_target(str(path))


def test_ops_per_cycle_needs_a_clock(tmp_path):
    text = MY_DEVICE.replace('kind = "arm_cpu"', 'kind = "fpga"').replace('backend = "arm_cpu"', 'backend = "fpga_hls"')
    text = text.replace("clock_ghz = 1.0\n", "").replace("[cpu]", "[fpga]")
    with pytest.raises(EdgekilnError, match=r"field 'clock_ghz' is missing \(required when 'ops_per_cycle'"):
        get_target(str(write(tmp_path, text)))


# --- the `edgekiln targets` table --------------------------------------------------------------

def test_summary_row_humanizes_peaks():
    row = get_target("edgetpu").summary_row()
    assert tuple(row) == SUMMARY_COLUMNS
    assert row["peak int8"] == "4.0 TOPS" and row["peak fp32"] == "-" and row["cores"] == "-"
    a76 = get_target("cortex-a76").summary_row()
    assert (a76["peak int8"], a76["peak fp32"], a76["clock"]) == ("614.4 GOPS", "153.6 GFLOPS", "2.4 GHz")
    assert a76["features"] == "neon fp16 dotprod" and a76["memory"] == "17.1 GB/s, 2.0 MiB"


def test_render_targets_table():
    table = render_targets_table(available_targets())
    assert isinstance(table, Table)
    assert [c.header for c in table.columns] == list(SUMMARY_COLUMNS)
    assert table.row_count == len(available_targets())
    assert render_targets_table([]).row_count == 0


def test_targets_serialize_to_json():
    # `edgekiln targets --json` dumps dataclasses.asdict of each target.
    dumped = json.loads(json.dumps([dataclasses.asdict(t) for t in available_targets()], default=list))
    assert {d["name"] for d in dumped} >= REQUIRED
    assert isinstance(get_target("host"), Target)
