"""numpy kernels of the integer reference, one file per kernel family (see `compiler/integer_kernels.py`)."""
