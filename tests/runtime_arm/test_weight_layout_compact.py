"""`--weight-layout compact`: int4 GEMM weights flat (no K-block padding), every ternary tensor
base-3 (five values per byte, `EK_PACK_INT2_B3`), and the runtime reading both, bit-exactly:

- the Python packer (backends/arm_cpu/ternary_base3.py) round-trips and matches the documented
  digits; the C decoder (src/ternary_base3.c, built with AddressSanitizer by base3_driver.c)
  decodes every (first, count) range of a tensor like numpy, writing nothing past `count`;
- one-call Programs (conv, grouped conv, depthwise, fully connected, per-group int4:g32 and
  ternary:g64, transposed conv, DequantizeWeight) written compact run on the host runtime
  (portable and auto ISA) and under qemu cortex-a53 against the integer reference, with fewer
  blob bytes than the fast layout;
- the loader refuses a base-3 byte above 242 and a short base-3 tensor, naming the tensor;
- the option: the CLI and the API write and record it, a target without a blob refuses it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgekiln
from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.blob_writer import write_blob
from edgekiln.backends.arm_cpu.ternary_base3 import (
    pack_base3,
    packed_bytes,
    unpack_base3,
)
from edgekiln.backends.arm_cpu.toolchain import RUNTIME_DIR
from edgekiln.cli import main
from edgekiln.compiler.program import QuantParams
from edgekiln.errors import OptionError
from tests.runtime_arm import int8_cases as cases
from tests.runtime_arm.blob_tools import BlobView
from tests.runtime_arm.harness import (
    SANITIZER_FLAGS,
    aarch64_runner,
    assert_bit_exact,
    host_runner,
    one_call,
    qemu,
    run_blob,
)
from tests.support.graphs import conv_relu_model

PK = op_codes.PACK


# ---- the packing ------------------------------------------------------------------------------

def test_base3_round_trips_for_every_length_and_matches_the_documented_digits():
    rng = np.random.default_rng(0)
    for n in [*range(24), 999, 1000, 1001]:
        w = rng.integers(-1, 2, n).astype(np.int8)
        data = pack_base3(w)
        assert len(data) == packed_bytes(n) == -(-n // 5)
        assert max(data, default=0) <= 242
        np.testing.assert_array_equal(unpack_base3(data, n), w)
    # byte = sum (w_i + 1)·3^i; the positions past the end are value 0 (digit 1)
    assert pack_base3(np.array([-1, 0, 1, 1, -1], np.int8)) == bytes([0 + 1 * 3 + 2 * 9 + 2 * 27 + 0 * 81])
    assert pack_base3(np.array([1, -1], np.int8)) == bytes([2 + 0 * 3 + 1 * 9 + 1 * 27 + 1 * 81])
    assert pack_base3(np.ones((2, 3), np.int8)) == bytes([242, 2 + 3 + 9 + 27 + 81])
    with pytest.raises(ValueError, match="ternary"):
        pack_base3(np.array([-2], np.int8))
    with pytest.raises(ValueError, match="above 242"):
        unpack_base3(bytes([243]), 5)


@pytest.fixture(scope="module")
def base3_driver(tmp_path_factory) -> Path:
    """The driver with AddressSanitizer / UBSan where the compiler has them, else plain (the
    canary bytes behind each decode still catch a write past `count`)."""
    out = tmp_path_factory.mktemp("base3") / "base3_driver"
    here = Path(__file__).resolve().parent
    command = ["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME_DIR / 'src'}",
               str(here / "base3_driver.c"), str(RUNTIME_DIR / "src" / "ternary_base3.c"), "-o", str(out)]
    if subprocess.run([*command, *SANITIZER_FLAGS], capture_output=True, check=False).returncode != 0:
        subprocess.run(command, check=True, capture_output=True, text=True)
    return out


@pytest.mark.parametrize("n", [1, 4, 5, 6, 13, 29])
def test_c_decoder_reads_every_range_like_numpy(base3_driver, n):
    w = np.random.default_rng(n).integers(-1, 2, n).astype(np.int8)
    w[: min(n, 3)] = [-1, 1, 0][: min(n, 3)]
    proc = subprocess.run([str(base3_driver), str(n)], input=pack_base3(w), capture_output=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    expected = b"".join(w[first:first + count].tobytes() for first in range(n) for count in range(n - first + 1))
    assert proc.stdout == expected


def test_c_decoder_flags_a_byte_above_242(base3_driver):
    proc = subprocess.run([str(base3_driver), "10"], input=bytes([7, 243]), capture_output=True, check=False, timeout=60)
    assert proc.returncode == 3


# ---- programs through ek_run ------------------------------------------------------------------

def _conv_transpose_ternary(rng):
    """QConvTranspose2D with ternary weights (the compact layout stores them base-3)."""
    c, og, kh, kw = 4, 3, 3, 2
    mult, shift = cases.multipliers(rng, og, c * kh * kw)
    attrs = {"strides": [2, 1], "pads": [1, 0, 0, 1], "dilations": [1, 2], "group": 1, "output_padding": [1, 0],
             "input_zero_point": -7, "output_zero_point": 2, "act_min": -128, "act_max": 127}
    w = cases.int8(rng, (c, og, kh, kw), -1, 1)
    operands = [("x", cases.int8(rng, (1, c, 5, 4)), False), ("w", w, True),
                ("bias", rng.integers(-2000, 2000, og).astype(np.int32), True), ("mult", mult, True),
                ("shift", shift, True)]
    quant = {"w": QuantParams(scale=(0.01,) * og, zero_point=(0,) * og, axis=1, bits=2)}
    return one_call("QConvTranspose2D", operands, attrs, quant=quant)


def _programs():
    rng = np.random.default_rng
    return {
        "conv_int4": cases.conv(rng(1), c=6, hw=(7, 6), o=11, k=(3, 3), stride=(1, 2), pads=(1, 1, 0, 1), bits=4),
        "conv_ternary": cases.conv(rng(11), c=7, hw=(6, 9), o=37, k=(3, 3), pads=(1, 1, 1, 1), bits=2),
        "conv_ternary_grouped": cases.conv(rng(2), c=8, group=2, o=6, hw=(5, 5), k=(3, 3), bits=2),
        "conv_int4_k_groups_of_32": cases.conv(rng(3), c=8, o=5, hw=(4, 5), k=(2, 2), bits=4, group_size=32),
        "fc_ternary_k_groups_of_64": cases.fully_connected(rng(4), shape=(3, 192), n=21, bits=2, group_size=64),
        "fc_int4_gemv": cases.fully_connected(rng(5), shape=(1, 300), n=37, bits=4),
        "fc_ternary_odd_k": cases.fully_connected(rng(6), shape=(5, 131), n=9, bits=2),
        "depthwise_ternary": cases.conv(rng(8), depthwise=True, c=5, k=(3, 3), hw=(9, 7), bits=2),
        "conv_transpose_ternary": _conv_transpose_ternary(rng(9)),
        "dequantize_weight_ternary": cases.dequantize_weight(rng(10), bits=2, group_size=8),
    }


PROGRAMS = _programs()


def _w_entry(blob: bytes) -> tuple[int, int]:
    """(packing, nbytes) of the weight tensor 'w'."""
    view = BlobView(blob)
    strings = view.section(op_codes.SECTION["STRINGS"])[0]
    for i in range(view.n_tensors):
        entry = view.tensor(i)
        name_at = strings + int.from_bytes(blob[entry + 4:entry + 8], "little")
        if blob[name_at:blob.index(b"\0", name_at)] == b"w":
            return blob[entry + 3], int.from_bytes(blob[entry + 64:entry + 72], "little")
    raise AssertionError("no weight tensor 'w' in the blob")


def _packing_of_w(blob: bytes) -> int:
    return _w_entry(blob)[0]


def _constant_bytes(blob: bytes) -> int:
    """Bytes of the constants themselves (not the 64-byte alignment of the section)."""
    view = BlobView(blob)
    total = 0
    for i in range(view.n_tensors):
        entry = view.tensor(i)
        if blob[entry + 2] == op_codes.STORE["CONST"]:
            total += int.from_bytes(blob[entry + 64:entry + 72], "little")
    return total


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_compact_layout_packs_flat_or_base3_and_stores_fewer_bytes(name):
    program = PROGRAMS[name][0]
    fast, compact = write_blob(program), write_blob(program, weight_layout="compact")
    bits, n = program.tensors["w"].quant.bits, program.constants["w"].size
    # int4: two values per byte, no padding; ternary: five per byte
    assert _w_entry(compact) == ((PK["INT4"], -(-n // 2)) if bits == 4 else (PK["INT2_B3"], -(-n // 5)))
    # fewer bytes, except an int4 layer whose rows fill whole blocks (K = 32) or that was flat already
    assert _constant_bytes(compact) < _constant_bytes(fast) or (bits == 4 and _w_entry(fast)[1] == -(-n // 2))


def test_fast_layout_is_the_default_and_unchanged():
    program = PROGRAMS["conv_ternary"][0]
    assert write_blob(program) == write_blob(program, weight_layout="fast")
    assert _packing_of_w(write_blob(program)) == PK["INT2_K64"]
    with pytest.raises(ValueError, match="weight_layout 'tiny'"):
        write_blob(program, weight_layout="tiny")


@pytest.mark.parametrize("isa", ["c", "auto"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_compact_programs_on_the_host(name, isa):
    program, feeds, expected = PROGRAMS[name]
    outputs, proc = run_blob(write_blob(program, weight_layout="compact"), program, feeds, host_runner(), (),
                             ("--isa", isa))
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(outputs, expected)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_compact_programs_under_qemu_cortex_a53(name):
    program, feeds, expected = PROGRAMS[name]
    outputs, proc = run_blob(write_blob(program, weight_layout="compact"), program, feeds, aarch64_runner(),
                             qemu("cortex-a53"))
    assert proc.returncode == 0, proc.stderr
    assert_bit_exact(outputs, expected)


def _base3_entry(blob: bytes) -> tuple[BlobView, int]:
    view = BlobView(blob)
    return view, next(view.tensor(i) for i in range(view.n_tensors) if blob[view.tensor(i) + 3] == PK["INT2_B3"])


def test_loader_refuses_a_base3_byte_above_242():
    program, feeds, _ = PROGRAMS["conv_ternary"]
    view, entry = _base3_entry(write_blob(program, weight_layout="compact"))
    constants = view.section(op_codes.SECTION["CONSTANTS"])[0]
    at = constants + int.from_bytes(view.data[entry + 56:entry + 64], "little") + 3
    _, proc = run_blob(view.put(at, "<B", 243).sealed(), program, feeds, host_runner())
    assert proc.returncode == 3 and "tensor" in proc.stderr and "'w': base-3 packed byte 3 is 243" in proc.stderr, proc.stderr


def test_loader_refuses_a_short_base3_tensor():
    program, feeds, _ = PROGRAMS["fc_ternary_odd_k"]
    view, entry = _base3_entry(write_blob(program, weight_layout="compact"))
    nbytes = int.from_bytes(view.data[entry + 64:entry + 72], "little")
    assert nbytes == -(-9 * 131 // 5)
    _, proc = run_blob(view.put(entry + 64, "<Q", nbytes - 1).sealed(), program, feeds, host_runner())
    assert proc.returncode == 3 and "'w'" in proc.stderr and "its shape and dtype need" in proc.stderr, proc.stderr


# ---- the option -------------------------------------------------------------------------------

@pytest.fixture
def conv_model(tmp_path, save_model) -> tuple[Path, Path]:
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    return save_model(conv_relu_model()), calib


def test_cli_writes_a_compact_artifact_that_matches_the_reference(conv_model, tmp_path):
    from edgekiln.backends.reference.runner import ReferenceRunner

    model, calib = conv_model
    common = [str(model), "--quant", "ternary", "--calib", str(calib), "--weights", "conv:ternary"]
    for layout in ("fast", "compact"):
        result = CliRunner().invoke(main, ["compile", *common, "-o", str(tmp_path / layout), "--weight-layout", layout])
        assert result.exit_code == 0, result.output
    artifact = edgekiln.load(tmp_path / "compact")
    assert artifact.manifest["options"]["weight_layout"] == "compact"
    assert json.loads((tmp_path / "fast" / "manifest.json").read_text())["options"]["weight_layout"] == "fast"
    assert _packings(artifact.files["model.blob"]) == {PK["INT2_B3"]}
    assert len(artifact.files["model.blob"]) <= (tmp_path / "fast" / "model.blob").stat().st_size
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run({"x": x})
    got = artifact.run({"x": x})
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def _packings(blob: bytes) -> set[int]:
    """The packings of the blob's packed tensors."""
    view = BlobView(blob)
    return {blob[view.tensor(i) + 3] for i in range(view.n_tensors)} - {PK["NONE"]}


def test_a_target_without_a_blob_refuses_compact(conv_model, tmp_path):
    model, _ = conv_model
    result = CliRunner().invoke(main, ["compile", str(model), "-o", str(tmp_path / "o"), "--target", "kv260",
                                       "--weight-layout", "compact"])
    assert result.exit_code == 2
    assert "--weight-layout compact" in result.output and "kv260" in result.output
    with pytest.raises(OptionError, match="target edgetpu"):
        edgekiln.compile(model, "edgetpu", weight_layout="compact")
    with pytest.raises(OptionError, match="'tiny' is not known"):
        edgekiln.compile(model, weight_layout="tiny")
    unknown = CliRunner().invoke(main, ["compile", str(model), "-o", str(tmp_path / "u"), "--weight-layout", "tiny"])
    assert unknown.exit_code == 2 and "'tiny' is not one of 'fast', 'compact'" in unknown.output


# ---- whole models (slow) ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("name", "quant", "target"), [("lenet_mnist", "ternary", "cortex-a53"),
                                                       ("resnet_basic", "int4:g64", "cortex-a53"),
                                                       ("resnet_basic", "ternary", "host")])
def test_zoo_models_compact_are_smaller_and_bit_exact(name, quant, target):
    from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
    from edgekiln.backends.reference.runner import ReferenceRunner
    from tests.zoo import input_shapes, model_path, sample_input

    if target != "host":
        aarch64_runner()
    blobs = {}
    for layout in ("fast", "compact"):
        artifact = edgekiln.compile(model_path(name), target, input_shapes=input_shapes(name), quant=quant,
                                    calib=[sample_input(name, seed=s) for s in range(1, 5)], progress=False,
                                    weight_layout=layout)
        blobs[layout] = artifact.files["model.blob"]
    assert _packings(blobs["compact"]) & {PK["INT4_K32"], PK["INT2_K64"]} == set()
    assert PK["INT2_B3" if quant == "ternary" else "INT4"] in _packings(blobs["compact"])
    if target == "host":  # x86: the fast layout unpacks GEMM weights too, so it stores them as compact does
        assert _constant_bytes(blobs["compact"]) == _constant_bytes(blobs["fast"])
    else:
        assert _constant_bytes(blobs["compact"]) < _constant_bytes(blobs["fast"])
    feeds = sample_input(name, seed=21)
    got = ArmCpuRunner(artifact.files, artifact.manifest).run(feeds)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
