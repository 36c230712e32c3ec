"""The arena planner: plans are valid, never worse than naive, ping-pong on chains."""

from __future__ import annotations

import random

import pytest

from edgekiln.compiler import memory_planner
from edgekiln.compiler.memory_planner import (
    Buffer,
    buffer_lifetimes,
    peak_live_bytes,
    plan_arena,
    plan_buffers,
    verify_plan,
)
from edgekiln.compiler.program import ArenaPlan, KernelCall, TensorSpec


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def chain(sizes: list[int]) -> list[Buffer]:
    """t0 -> call 1 -> t1 -> call 2 -> ...: each tensor is live during two calls."""
    return [Buffer(f"t{i}", size, i, i + 1) for i, size in enumerate(sizes)]


def random_buffers(rng: random.Random) -> list[Buffer]:
    steps = rng.randint(1, 30)
    buffers = []
    for i in range(rng.randint(1, 40)):
        first = rng.randrange(steps)
        last = min(steps - 1, first + rng.choice([0, 1, 1, 2, 3, 8]))
        size = rng.choice([0, 1, 7, 64, 100, 4096, rng.randint(1, 20000)])
        buffers.append(Buffer(f"b{i}", size, first, last))
    return buffers


def test_random_lifetimes_give_valid_plans_between_bounds():
    rng = random.Random(20240601)
    for _ in range(500):
        buffers = random_buffers(rng)
        alignment = rng.choice([1, 16, 64])
        plan = plan_buffers(buffers, alignment)
        assert verify_plan(plan, buffers) == []
        assert plan.peak_live_bytes <= plan.arena_bytes <= plan.naive_bytes
        assert plan.naive_bytes == sum(_align(b.size, alignment) for b in buffers)


@pytest.mark.parametrize("strategy", ["greedy_by_size", "two_sided"])
def test_each_strategy_alone_is_valid(strategy):
    # plan_buffers keeps the smaller plan, which could hide a bug in the other one.
    rng = random.Random(7)
    for _ in range(300):
        buffers = random_buffers(rng)
        sizes = {b.name: _align(b.size, 64) for b in buffers}
        if strategy == "greedy_by_size":
            offsets, arena = memory_planner._greedy_by_size(buffers, sizes)
        else:
            offsets, arena = memory_planner._two_sided(buffers, sizes, peak_live_bytes(buffers))
        offsets = {b.name: offsets.get(b.name, 0) for b in buffers}
        plan = ArenaPlan(offsets, arena, sum(sizes.values()), 64)
        assert verify_plan(plan, buffers) == []
        if strategy == "greedy_by_size":
            # Each tensor lands at most on top of those placed before it.  (The two-sided
            # plan has no such bound: what overflows the target stacks above it.)
            assert arena <= plan.naive_bytes


def test_linear_chain_is_ping_pong():
    rng = random.Random(3)
    for _ in range(500):
        sizes = [rng.randint(1, 50000) for _ in range(rng.randint(2, 16))]
        alignment = rng.choice([1, 64])
        aligned = [_align(s, alignment) for s in sizes]
        plan = plan_buffers(chain(sizes), alignment)
        assert verify_plan(plan, chain(sizes)) == []
        assert plan.arena_bytes == max(a + b for a, b in zip(aligned, aligned[1:]))


def test_chain_that_greedy_by_size_alone_gets_wrong():
    # Greedy by size puts both 9s at 0 and 10 apart and pushes the 8 above them (27);
    # the two-sided plan alternates bottom/top and reaches the 10 + 9 lower bound.
    buffers = chain([10, 9, 8, 9])
    sizes = {b.name: b.size for b in buffers}
    assert memory_planner._greedy_by_size(buffers, sizes)[1] == 27
    plan = plan_buffers(buffers, alignment=1)
    assert plan.arena_bytes == plan.peak_live_bytes == 19
    assert plan.naive_bytes == 36


def test_greedy_by_size_fills_holes_with_small_tensors():
    # a (big) and c overlap; b lives only while a does and fits under c's gap.
    buffers = [Buffer("a", 1000, 0, 2), Buffer("c", 500, 2, 4), Buffer("b", 300, 3, 4),
               Buffer("d", 1000, 4, 5)]
    plan = plan_buffers(buffers, alignment=1)
    assert verify_plan(plan, buffers) == []
    assert plan.arena_bytes == plan.peak_live_bytes == 1800


def test_plans_are_deterministic():
    rng = random.Random(11)
    buffers = random_buffers(rng)
    assert plan_buffers(buffers) == plan_buffers(list(reversed(buffers)))


def test_verify_plan_reports_overlap_misalignment_and_overflow():
    buffers = [Buffer("a", 100, 0, 1), Buffer("b", 100, 1, 2), Buffer("c", 100, 5, 6)]
    overlapping = ArenaPlan({"a": 0, "b": 64, "c": 0}, 192, 384, 64)
    assert any("overlaps" in p for p in verify_plan(overlapping, buffers))
    misaligned = ArenaPlan({"a": 0, "b": 130, "c": 0}, 256, 384, 64)
    assert any("multiple" in p for p in verify_plan(misaligned, buffers))
    too_small = ArenaPlan({"a": 0, "b": 128, "c": 0}, 200, 384, 64)
    assert any("outside" in p for p in verify_plan(too_small, buffers))
    missing = ArenaPlan({"a": 0, "b": 128}, 256, 384, 64)
    assert verify_plan(missing, buffers) == ["c: no offset"]
    # Sharing bytes is fine when the lifetimes do not overlap.
    assert verify_plan(ArenaPlan({"a": 0, "b": 128, "c": 0}, 256, 384, 64), buffers) == []


def _spec(name: str, kind: str, n: int = 256) -> TensorSpec:
    return TensorSpec(name, "float32", (1, n), "NC", kind)


def test_plan_arena_places_intermediates_only():
    tensors = {s.name: s for s in [
        _spec("x", "input"), _spec("w", "constant"), _spec("a", "intermediate"),
        _spec("unused", "intermediate", 8), _spec("b", "intermediate"), _spec("y", "output"),
        _spec("empty", "intermediate", 0)]}
    calls = [
        KernelCall("mm", "MatMul", ("x", "w"), ("a",)),
        KernelCall("split", "Split", ("a",), ("b", "unused", "empty")),
        KernelCall("relu", "Relu", ("b",), ("y",)),
    ]
    buffers = {b.name: b for b in buffer_lifetimes(tensors, calls)}
    assert buffers["a"] == Buffer("a", 1024, 0, 1)
    assert buffers["unused"] == Buffer("unused", 32, 1, 1)  # live while its call writes it
    plan = plan_arena(tensors, calls)
    assert set(plan.offsets) == {"a", "b", "unused", "empty"}
    assert verify_plan(plan, list(buffers.values())) == []
    # a and b are live together in `split`; b's bytes are free again once relu ran.
    assert plan.arena_bytes == 1024 + 1024 + 64
    assert plan.naive_bytes == 1024 + 1024 + 64


def test_plan_arena_refuses_reads_before_writes():
    tensors = {s.name: s for s in [_spec("x", "input"), _spec("a", "intermediate"),
                                   _spec("y", "output")]}
    calls = [KernelCall("r", "Relu", ("a",), ("y",)), KernelCall("s", "Relu", ("x",), ("a",))]
    with pytest.raises(ValueError, match="before any call writes it"):
        plan_arena(tensors, calls)


def test_plan_arena_needs_calls_with_a_tensor_dict():
    with pytest.raises(TypeError):
        plan_arena({})
