"""Per-target backends: each lowers a Program to its artifact files; no imports between backends."""
