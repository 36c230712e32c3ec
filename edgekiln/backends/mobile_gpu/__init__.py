"""Mobile GPU backend: lowers a Program to OpenCL C 1.2 kernels and a host-side execution plan."""
