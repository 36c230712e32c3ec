"""The C99 runtime for ARM CPUs (issue 5). Not a Python package of code; the backend builds it."""
