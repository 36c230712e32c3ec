"""The cost model that decides, per layer and target, whether a sparse kernel beats the dense one.

Per output pixel (a pixel of a 1x1 convolution, a row of a fully connected input):

    dense  = dense_mac · O·K   + overhead · (O + K)
    sparse = entry[B] · E      + overhead · (O + K)

E is the number of stored entries (B x 1 blocks, or O·K/M·N for N:M, which runs the B = 1
kernel); `overhead` covers staging the input (the sparse kernel's int16 copy or transpose,
the dense one's im2col copy) and the requantization / epilogue of every output, which both
kernels pay alike, so small layers (few MACs per output) are not biased toward either.  The numbers are
fitted by `python -m benchmarks.sparse_kernels` (its "fit" table) from exact guest
instruction counts under qemu-aarch64 (cortex-a53: dense NEON GEMM; cortex-a76: dense
dotprod GEMM; the sparse kernels are the NEON ones on both) and from host latency for the
AVX2 kernels (nanoseconds instead of instructions: only the ratio matters).  A sparse kernel
is chosen only when the model says it is at least MARGIN faster, so model error near the
break-even point keeps the dense kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

MARGIN = 0.9  # sparse must model at most 90 % of the dense cost


@dataclass(frozen=True)
class KernelCosts:
    dense_mac: float
    entry: dict[int, float]   # by block size B (N:M uses B = 1)
    overhead: float


# Fitted by `python -m benchmarks.sparse_kernels` (1x1 conv 256 -> 256 at 14x14, random masks
# at 50 / 70 / 90 %; its "fit" table): the slopes for B = 1 and 4 and the shared intercept from
# three densities, B = 2 and 8 from 70 / 90 % at that intercept.  Units: guest instructions
# (neon = cortex-a53, dotprod = cortex-a76; exact, the same on every run) or nanoseconds (avx2,
# the host: timings on a shared machine vary run to run, so these rows come from the run whose
# fit was physically consistent, entry cost growing with B; the host only serves local tests).
def _costs(dense_mac: float, e1: float, e2: float, e4: float, e8: float, overhead: float) -> KernelCosts:
    return KernelCosts(dense_mac, {1: e1, 2: e2, 4: e4, 8: e8}, overhead)


COSTS: dict[tuple[str, str], KernelCosts] = {
    ("neon", "int8"): _costs(0.3342, 0.6887, 1.0043, 3.0510, 5.0056, 12.8598),
    ("dotprod", "int8"): _costs(0.1469, 0.6887, 1.0045, 3.0510, 5.0054, 12.8600),
    ("avx2", "int8"): _costs(0.0302, 0.0458, 0.0881, 0.1851, 0.3465, 0.9780),
    ("neon", "fp32"): _costs(0.3444, 1.0357, 1.9905, 4.0203, 6.8068, 3.8401),
    ("dotprod", "fp32"): _costs(0.3444, 1.0357, 1.9904, 4.0206, 6.8069, 3.8379),
    ("avx2", "fp32"): _costs(0.0472, 0.0770, 0.1575, 0.3356, 0.5163, 0.1515),
}


def isa_class(target) -> str:
    """Which row of COSTS describes `target`: the host's AVX2, or an ARM core with or without sdot."""
    if getattr(target, "kind", "") == "x86_cpu":
        return "avx2"
    features = set(getattr(target, "features", ()))
    return "dotprod" if features & {"dotprod", "i8mm"} else "neon"


def dense_cost(costs: KernelCosts, o: int, k: int) -> float:
    return costs.dense_mac * o * k + costs.overhead * (o + k)


def sparse_cost(costs: KernelCosts, entries: int, block: int, o: int, k: int) -> float:
    return costs.entry[block] * entries + costs.overhead * (o + k)
