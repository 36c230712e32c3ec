"""Per-op profiling of compiled artifacts: the work of each kernel call, `edgekiln bench` and its report."""
