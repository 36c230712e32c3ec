"""From a Program's calls to the runtime's calls: one encoder per Program op.

`encode_program` walks the calls in order and asks the op's encoder (integer kernels,
float kernels, data movement) for the `BlobCall`s it becomes; an op without an encoder is
refused here, at compile time, with the call named.  It also makes sure every graph output
is written by a call into the caller's buffer: an output that is a graph input or a constant
gets a copy.
"""

from __future__ import annotations

from edgekiln.backends.arm_cpu import (
    encode_float,
    encode_integer,
    encode_movement,
    encode_sparse,
    op_codes,
)
from edgekiln.backends.arm_cpu.encode_context import BlobCall, EncodeContext
from edgekiln.compiler.program import Program
from edgekiln.errors import UnsupportedOpError

# encode_sparse wraps the dense conv / FC encoders: calls in the sparse plan become sparse ones.
ENCODERS = {**encode_float.ENCODERS, **encode_movement.ENCODERS, **encode_integer.ENCODERS, **encode_sparse.ENCODERS}

# Keys of graph outputs that need their own tensor entry (the name is also an input or constant).
OUTPUT_ALIAS_PREFIX = "\0output:"


def supported_ops() -> list[str]:
    return sorted(ENCODERS)


def encode_program(program: Program, sparse_plan: dict[str, dict] | None = None,
                   features: tuple[str, ...] = (), weight_layout: str = "fast") -> tuple[list[BlobCall], EncodeContext]:
    ctx = EncodeContext(program, sparse_plan, features, weight_layout)
    calls: list[BlobCall] = []
    for call in program.calls:
        encoder = ENCODERS.get(call.op)
        if encoder is None:
            raise UnsupportedOpError(
                f"call {call.name!r}: op {call.op!r} has no kernel in the arm_cpu runtime (it runs "
                f"{', '.join(supported_ops())}); replace the node in the exported model or choose another target")
        calls.extend(encoder(ctx, call))
    for name in program.outputs:
        if name in program.inputs or name in program.constants:
            calls.append(BlobCall(f"output {name}", op_codes.OP["COPY"], [name], [OUTPUT_ALIAS_PREFIX + name]))
    return calls, ctx
