"""ARM CPU backend: lowers a Program to a weight blob and kernel plan for the C99 runtime (NEON/dotprod/i8mm; AVX2 on the host target)."""
