"""The Program: text dump, summary, validation, and an exact, reproducible save/load."""

from __future__ import annotations

import dataclasses
import json

import ml_dtypes
import numpy as np
import pytest

from edgekiln.compiler.memory_planner import plan_arena
from edgekiln.compiler.program import (
    CONSTANT_ALIGNMENT,
    KernelCall,
    Program,
    QuantParams,
    TensorSpec,
    pack_low_bit,
)


def small_program() -> Program:
    """x -> Conv -> Relu -> Conv -> y, with a quantized weight and odd-sized constants."""
    rng = np.random.default_rng(0)
    constants = {
        "W_conv1": rng.standard_normal((16, 3, 3, 3)).astype(np.float32),
        "B_conv1": rng.standard_normal(16).astype(np.float32),
        "W_conv2": rng.integers(-8, 8, (4, 16, 1, 1)).astype(np.int8),
        "odd": np.arange(5, dtype=np.int16),
        "half": np.array([1.5, -2.25], dtype=np.float16),
        "bf": np.array([1.0, 3.5], dtype=ml_dtypes.bfloat16),
        "scalar": np.array(7, dtype=np.int64),
    }
    quant = QuantParams(scale=tuple(float(s) for s in np.linspace(0.01, 0.04, 4)),
                        zero_point=(0, 0, 0, 0), axis=0, bits=4, group_size=None)
    tensors = {
        "x": TensorSpec("x", "float32", (1, 3, 32, 32), "NCHW", "input"),
        "c1": TensorSpec("c1", "float32", (1, 16, 32, 32), "NCHW", "intermediate"),
        "r1": TensorSpec("r1", "float32", (1, 16, 32, 32), "NCHW", "intermediate"),
        "y": TensorSpec("y", "float32", (1, 4, 32, 32), "NCHW", "output"),
    }
    for name, array in constants.items():
        q = quant if name == "W_conv2" else None
        tensors[name] = TensorSpec(name, array.dtype.name, array.shape, "any", "constant", q)
    calls = [
        KernelCall("conv1", "Conv", ("x", "W_conv1", "B_conv1"), ("c1",),
                   {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "group": 1}),
        KernelCall("relu1", "Relu", ("c1",), ("r1",)),
        KernelCall("conv2", "Conv", ("r1", "W_conv2", ""), ("y",),
                   {"kernel_shape": [1, 1], "alpha": 0.009999999776482582}, block="b0"),
    ]
    arena = plan_arena(tensors, calls)
    return Program(tensors, constants, calls, ["x"], ["y"], arena)


def test_tensor_spec_nbytes():
    assert TensorSpec("a", "float32", (1, 16, 32, 32)).nbytes == 65536
    assert TensorSpec("a", "int8", (10,)).nbytes == 10
    assert TensorSpec("a", "bfloat16", (3,)).nbytes == 6
    assert TensorSpec("a", "int64", ()).nbytes == 8
    assert TensorSpec("a", "float32", (0, 4)).nbytes == 0
    with pytest.raises(ValueError, match="kind"):
        TensorSpec("a", "float32", (1,), kind="weight")


def test_kernel_call_is_frozen_and_replaceable():
    call = KernelCall("relu1", "Relu", ("a",), ("b",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.block = "b1"  # type: ignore[misc]
    assert dataclasses.replace(call, block="b1").block == "b1"


def test_to_text_shows_calls_types_and_offsets():
    program = small_program()
    text = program.to_text()
    c1 = program.arena.offsets["c1"]
    assert ("%c1 = Conv[group=1, kernel_shape=3x3, pads=1,1,1,1, strides=1x1]"
            "(%x: float32[1,3,32,32], W_conv1: float32[16,3,3,3], B_conv1: float32[16]) "
            f"-> float32[1,16,32,32] @{c1}") in text
    assert f"%r1 = Relu(%c1: float32[1,16,32,32] @{c1})" in text
    assert "W_conv2: int8[4,16,1,1] q4" in text  # quantized operands are marked
    assert ", _) -> float32[1,4,32,32]  # block b0" in text  # absent input, fused block
    assert "alpha=0.01" in text
    assert "input  %x: float32[1,3,32,32] NCHW" in text
    assert "arena 128.0 KiB vs 128.0 KiB naive (1.00x; peak live 128.0 KiB)" in text


def test_summary_counts():
    summary = small_program().summary()
    assert summary["calls"] == 3
    assert summary["ops"] == {"Conv": 2, "Relu": 1}
    assert summary["constant_bytes"] == 1728 + 64 + 64 + 10 + 4 + 4 + 8
    assert summary["arena_bytes"] == 131072
    json.dumps(summary)  # JSON-able, for manifests


def test_save_load_round_trips_exactly(tmp_path):
    program = small_program()
    program.save(tmp_path)
    loaded = Program.load(tmp_path)
    assert loaded == program
    assert list(loaded.constants) == list(program.constants)  # file order = dict order
    assert loaded.constants["bf"].dtype == ml_dtypes.bfloat16
    assert loaded.tensors["W_conv2"].quant == program.tensors["W_conv2"].quant
    assert loaded.calls[2].attrs["alpha"] == 0.009999999776482582
    loaded.constants["odd"][0] = 99  # loaded arrays are writable copies
    assert loaded != program
    loaded.validate()


def test_save_is_byte_for_byte_reproducible(tmp_path):
    small_program().save(tmp_path / "a")
    small_program().save(tmp_path / "b")
    for name in ("program.json", "constants.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["constants.bin", "program.json"]
    # Saving what was loaded writes the same bytes again.
    Program.load(tmp_path / "a").save(tmp_path / "c")
    for name in ("program.json", "constants.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def test_constants_file_layout(tmp_path):
    program = small_program()
    program.save(tmp_path)
    document = json.loads((tmp_path / "program.json").read_text())
    blob = (tmp_path / "constants.bin").read_bytes()
    for name, entry in document["constants"].items():
        assert entry["offset"] % CONSTANT_ALIGNMENT == 0
        array = program.constants[name]
        stored = blob[entry["offset"]:entry["offset"] + entry["nbytes"]]
        if "packing" in entry:  # a low-bit weight: packed, two or four values a byte
            assert stored == pack_low_bit(array, program.tensors[name].quant.bits)
        else:
            assert stored == array.tobytes()
        assert entry["dtype"] == array.dtype.name and entry["shape"] == list(array.shape)
    assert list(document) == sorted(document)
    assert document["format"] == "edgekiln.program" and document["version"] == 1


def test_load_refuses_other_files(tmp_path):
    (tmp_path / "program.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an edgekiln.program"):
        Program.load(tmp_path)


def test_validate_names_the_problem():
    program = small_program()
    program.validate()
    broken = dataclasses.replace(program, calls=list(reversed(program.calls)))
    with pytest.raises(ValueError, match="reads 'r1' before it is written"):
        broken.validate()
    no_offset = dataclasses.replace(
        program, arena=dataclasses.replace(program.arena, offsets={"c1": 0}))
    with pytest.raises(ValueError, match="'r1' has no arena offset"):
        no_offset.validate()


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_weights_are_packed_on_disk_and_unpacked_on_load(tmp_path, bits):
    from edgekiln.compiler.program import (
        ArenaPlan,
        KernelCall,
        Program,
        QuantParams,
        TensorSpec,
    )

    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    weights = np.random.default_rng(bits).integers(low, high + 1, size=(5, 7)).astype(np.int8)  # 35: not a multiple
    spec = TensorSpec("w", "int8", (5, 7), kind="constant", quant=QuantParams((1.0,) * 5, (0,) * 5, 0, bits))
    program = Program(tensors={"w": spec, "x": TensorSpec("x", "int8", (1, 7), kind="input"),
                               "y": TensorSpec("y", "int8", (1, 5), kind="output")},
                      constants={"w": weights}, calls=[KernelCall("fc", "QFullyConnected", ("x", "w"), ("y",))],
                      inputs=["x"], outputs=["y"], arena=ArenaPlan({}, 0, 0, 64))
    program.save(tmp_path)
    entry = json.loads((tmp_path / "program.json").read_text())["constants"]["w"]
    assert entry["nbytes"] == -(-35 * bits // 8) and entry["packing"] == ("int4" if bits == 4 else "int2")
    loaded = Program.load(tmp_path)
    np.testing.assert_array_equal(loaded.constants["w"], weights)
    assert loaded == program
