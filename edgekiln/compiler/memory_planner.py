"""Activation memory planning: one arena, an offset per intermediate tensor.

Which tensors live in the arena
    Only *intermediate* tensors (written by one call, read by later ones).  Graph inputs
    and outputs live outside it: the caller owns those buffers, so a runtime can read
    and write user memory directly without copies.  Constants live in the constants
    blob.

Lifetimes
    Calls run in order 0..n-1.  An intermediate is live from the call that writes it
    (`first`) to the last call that reads it (`last`), both inclusive: a kernel's
    inputs and outputs are live at the same time, so no call ever writes over a tensor
    it is still reading.  A tensor nobody reads (an unused second output) is live
    during its producing call only.

Offsets: greedy by size (TFLite's arena planner; Pisarchyk & Lee, "Efficient Memory
Management for Deep Neural Net Inference", 2020)
    Sort tensors by size, largest first.  Place each one by looking at the tensors
    already placed whose lifetimes overlap its own, sorted by offset: among the gaps
    between them that are big enough, take the smallest (best fit); if none fits, go
    above the highest of them.  Big tensors decide the arena size and are the hardest
    to fit, so they go first; small ones then fill the holes between them.

    Finding the smallest arena is NP-hard (dynamic storage allocation).  Greedy by size
    lands at or near the lower bound (`peak_live_bytes`, the most bytes live during any
    one call) on real networks, and never above the naive one-buffer-per-tensor sum:
    each tensor goes at most at the top of what was placed before it.  It misses
    ping-pong, though: on a chain sized 10, 9, 8, 9 it puts the two 9s at different
    offsets and forces the 8 above both (27 bytes where 19 suffice); about one random
    chain in five comes out up to 1.5x too big.

A second plan: two-sided placement, and the smaller plan wins
    Walk tensors in the order they are written and aim for an arena of exactly the
    lower bound.  Each tensor may go at the bottom or the top of any free gap inside
    that bound; a spot flush with either edge of the arena is preferred, then the
    tightest gap.  On a chain this alternates bottom, top, bottom...: exact ping-pong,
    so the arena is the largest pair of neighbours.  A tensor that fits nowhere inside
    the bound goes above its neighbours, as in greedy by size.  Both plans are cheap;
    `plan_buffers` keeps the smaller, greedy by size on a tie.

Every size is rounded up to `alignment`, so every offset is a multiple of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgekiln.compiler.program import ArenaPlan, KernelCall, Program, TensorSpec


@dataclass(frozen=True)
class Buffer:
    """One arena tensor: its size in bytes and the call indices it is live over."""

    name: str
    size: int
    first: int
    last: int

    def live_with(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def buffer_lifetimes(tensors: Mapping[str, TensorSpec],
                     calls: Sequence[KernelCall]) -> list[Buffer]:
    """The arena buffers of a program: every intermediate tensor with its lifetime."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, call in enumerate(calls):
        for name in call.inputs:
            if name in first:
                last[name] = index
            elif name and tensors.get(name) is not None and tensors[name].kind == "intermediate":
                raise ValueError(f"call {call.name!r} reads intermediate {name!r} "
                                 "before any call writes it")
        for name in call.outputs:
            spec = tensors.get(name) if name else None
            if spec is not None and spec.kind == "intermediate":
                if name in first:
                    raise ValueError(f"intermediate {name!r} is written twice "
                                     f"(second time by call {call.name!r})")
                first[name] = last[name] = index
    missing = [s.name for s in tensors.values() if s.kind == "intermediate" and s.name not in first]
    if missing:
        raise ValueError(f"intermediate tensors no call writes: {missing}")
    return [Buffer(name, tensors[name].nbytes, first[name], last[name]) for name in first]


def plan_arena(program_or_tensors: Program | Mapping[str, TensorSpec],
               calls: Sequence[KernelCall] | None = None, *, alignment: int = 64) -> ArenaPlan:
    """Plan the arena of a Program, or of its pieces (`tensors`, `calls`) while lowering."""
    if isinstance(program_or_tensors, Program):
        tensors, calls = program_or_tensors.tensors, program_or_tensors.calls
    else:
        if calls is None:
            raise TypeError("plan_arena(tensors, calls): calls are required with a tensor dict")
        tensors = program_or_tensors
    return plan_buffers(buffer_lifetimes(tensors, calls), alignment)


def plan_buffers(buffers: Sequence[Buffer], alignment: int = 64) -> ArenaPlan:
    """Offsets for `buffers`: the smaller of the two plans in the module docstring."""
    if alignment <= 0:
        raise ValueError(f"alignment must be positive, got {alignment}")
    sizes = {b.name: _align(b.size, alignment) for b in buffers}
    lower_bound = peak_live_bytes(buffers, alignment)
    plans = [_greedy_by_size(buffers, sizes), _two_sided(buffers, sizes, lower_bound)]
    offsets, arena = min(plans, key=lambda plan: plan[1])  # min() keeps the first on ties
    for buf in buffers:  # an empty tensor needs no memory; any offset will do
        offsets.setdefault(buf.name, 0)
    return ArenaPlan(
        offsets=dict(sorted(offsets.items())),
        arena_bytes=arena,
        naive_bytes=sum(sizes.values()),
        alignment=alignment,
        peak_live_bytes=lower_bound,
    )


def _greedy_by_size(buffers: Sequence[Buffer], sizes: dict[str, int]) -> tuple[dict[str, int], int]:
    # Ties go to the earlier tensor, then the name, so plans are reproducible.
    order = sorted(buffers, key=lambda b: (-sizes[b.name], b.first, b.name))
    offsets: dict[str, int] = {}
    for buf, placed in _placement_order(order, sizes):
        size = sizes[buf.name]
        busy = _busy(buf, placed, offsets, sizes)
        fits = [(end - start, start) for start, end in _gaps(busy) if end - start >= size]
        offsets[buf.name] = min(fits)[1] if fits else _top(busy)
    return offsets, _arena_bytes(offsets, sizes)


def _two_sided(buffers: Sequence[Buffer], sizes: dict[str, int],
               bound: int) -> tuple[dict[str, int], int]:
    order = sorted(buffers, key=lambda b: (b.first, -sizes[b.name], b.name))
    offsets: dict[str, int] = {}
    for buf, placed in _placement_order(order, sizes):
        size = sizes[buf.name]
        busy = _busy(buf, placed, offsets, sizes)
        # (not flush with an arena edge, gap size, offset): the smallest tuple wins.
        spots = []
        for start, end in _gaps(busy, bound):
            if end - start >= size:
                spots.append((start != 0, end - start, start))
                spots.append((end != bound, end - start, end - size))
        offsets[buf.name] = min(spots)[2] if spots else _top(busy)
    return offsets, _arena_bytes(offsets, sizes)


def _placement_order(order: list[Buffer], sizes: dict[str, int]):
    """Yield (buffer, buffers placed before it); empty tensors need no memory, skip them."""
    placed: list[Buffer] = []
    for buf in order:
        if sizes[buf.name] == 0:
            continue
        yield buf, placed
        placed.append(buf)


def _busy(buf: Buffer, placed: list[Buffer], offsets: dict[str, int],
          sizes: dict[str, int]) -> list[tuple[int, int]]:
    """Byte ranges taken by placed tensors live at the same time as `buf`, by offset."""
    return sorted((offsets[p.name], offsets[p.name] + sizes[p.name])
                  for p in placed if p.live_with(buf))


def _gaps(busy: list[tuple[int, int]], limit: int | None = None):
    """Free (start, end) ranges between busy ranges, below `limit` when one is given."""
    top = 0
    for start, end in busy:
        if limit is not None and start >= limit:
            break
        if start > top:
            yield top, start
        top = max(top, end)  # busy ranges may overlap each other in space
    if limit is not None and limit > top:
        yield top, limit


def _top(busy: list[tuple[int, int]]) -> int:
    return max((end for _, end in busy), default=0)


def _arena_bytes(offsets: dict[str, int], sizes: dict[str, int]) -> int:
    return max((offset + sizes[name] for name, offset in offsets.items()), default=0)


def peak_live_bytes(buffers: Sequence[Buffer], alignment: int = 64) -> int:
    """The most (aligned) bytes live during any one call: no arena can be smaller."""
    if not buffers:
        return 0
    steps = max(b.last for b in buffers) + 2
    delta = [0] * steps
    for b in buffers:
        delta[b.first] += _align(b.size, alignment)
        delta[b.last + 1] -= _align(b.size, alignment)
    peak = live = 0
    for change in delta:
        live += change
        peak = max(peak, live)
    return peak


def verify_plan(plan: ArenaPlan, buffers: Sequence[Buffer]) -> list[str]:
    """Every way `plan` is wrong for `buffers`; an empty list means it is valid.

    Valid: every buffer has an aligned offset, fits inside `arena_bytes`, and no two
    buffers that are live at the same time share a byte.
    """
    problems: list[str] = []
    for b in buffers:
        if b.name not in plan.offsets:
            problems.append(f"{b.name}: no offset")
            continue
        offset = plan.offsets[b.name]
        if offset < 0 or offset % plan.alignment:
            problems.append(f"{b.name}: offset {offset} not a non-negative multiple "
                            f"of {plan.alignment}")
        if b.size and offset + b.size > plan.arena_bytes:
            problems.append(f"{b.name}: [{offset}, {offset + b.size}) outside the "
                            f"{plan.arena_bytes}-byte arena")
    placed = [b for b in buffers if b.name in plan.offsets and b.size > 0]
    # Sweep by offset so only neighbours in space are compared against each other.
    placed.sort(key=lambda b: plan.offsets[b.name])
    for i, a in enumerate(placed):
        a_end = plan.offsets[a.name] + a.size
        for b in placed[i + 1:]:
            if plan.offsets[b.name] >= a_end:
                break
            if a.live_with(b):
                problems.append(
                    f"{a.name} [{plan.offsets[a.name]}, {a_end}) live {a.first}..{a.last} "
                    f"overlaps {b.name} at {plan.offsets[b.name]} live {b.first}..{b.last}")
    return problems


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment
