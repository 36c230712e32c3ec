"""Which layout an int4 / ternary GEMM weight takes in the blob: read in place, or unpacked per task.

The runtime runs a low-bit QConv2D / QFullyConnected one of two ways (runtime_arm/src/kernels/qconv.c):

* in place: the weights are K-blocked (weight_packing.py) and the low-bit GEMM decodes them in
  registers, once per micro-tile;
* unpacked: a block of weight rows is decoded to int8 in scratch once per task and the int8 GEMM
  runs on it.  Any layout can be unpacked, so here the blob stores the fewest bytes: int4 flat
  (two per byte, no row padding), ternary base-3 (five per byte, ternary_base3.py).

`--weight-layout compact` always unpacks.  The default `fast` reads in place except where
unpacking is measured to be faster (`python -m benchmarks.weight_layout`):

* a group-scaled layer whose K groups do not start on a 32 (int4) / 64 (ternary) block: the
  kernel cannot read such rows in place and unpacks them anyway, and K-blocked rows are the
  slowest to unpack (one field at a time): lenet int4:g64 (groups of 50 and 60) ran 2.7x the
  cortex-a53 instructions of the flat layout, resnet_basic int4:g64 1.3x;
* x86 targets: the unpacked block runs the int8 GEMM with AVX-512 VNNI / AVX-VNNI where the CPU
  has it, and no low-bit VNNI kernel exists; the AVX2 low-bit kernels are 1.3-4.3x slower there
  (host latency, auto ISA) and no faster on an AVX2-only CPU (unpacked: 0.32-1.07x the latency
  forced to --isa avx2).

On ARM cores the in-place kernels stay: per-channel int4 / ternary on cortex-a53 take 4-9% fewer
instructions in place (lenet, resnet_basic); with dotprod (cortex-a76) the two are within 6% either
way, so the layout that needs no scratch copy stays.
"""

from __future__ import annotations

from edgekiln.backends.arm_cpu import weight_packing
from edgekiln.compiler.program import TensorSpec

WEIGHT_LAYOUTS = ("fast", "compact")


def unpacking_is_faster(features: tuple[str, ...]) -> bool:
    """x86 targets (their features name AVX2, not NEON): the int8 GEMM beats the low-bit kernels."""
    return "avx2" in features and "neon" not in features


def groups_split_blocks(spec: TensorSpec, grouped: bool, group_size: int) -> bool:
    """A group-scaled weight whose K groups start inside a K block: the kernel unpacks it (qconv.c lowbit_in_place)."""
    return grouped and group_size % weight_packing.weights_per_block(spec.quant.bits) != 0


def reads_in_place(weight_layout: str, features: tuple[str, ...], spec: TensorSpec, grouped: bool,
                   group_size: int) -> bool:
    """Whether a low-bit GEMM weight is written K-blocked for the in-register kernels (module docstring)."""
    return (weight_layout == "fast" and not unpacking_is_faster(features)
            and not groups_split_blocks(spec, grouped, group_size))


__all__ = ["WEIGHT_LAYOUTS", "groups_split_blocks", "reads_in_place", "unpacking_is_faster"]
