"""Hardware-aware search over per-layer precision and sparsity. Empty until the profiler exists."""
