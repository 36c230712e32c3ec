"""Static batch 1 for the Edge TPU: pin a model input's dynamic leading (batch) dim to 1.

The Edge TPU needs every tensor size constant at compile time and maps tensors whose dims
beyond the innermost 3 are 1, so an exported model with a symbolic batch ('N', 'batch_size', -1)
is compiled for batch 1.  This runs before the frontend (which refuses dynamic dims), as the
default `--input-shape` of each such input: an input the user pinned is left alone, and an
input with other dynamic dims is left for the frontend to name.  Shape arithmetic that read
the batch (Shape -> Gather -> Reshape) folds once the dim is 1.
"""

from __future__ import annotations

import os

import onnx

from edgekiln.compiler.explain import ExplainTrace


def batch_one_shapes(model: str | os.PathLike | onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                     trace: ExplainTrace | None = None) -> dict[str, tuple[int, ...]]:
    """`shapes` plus [1, ...] for every input whose only dynamic dim is the leading one."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    pinned = dict(shapes)
    for value in proto.graph.input:
        if value.name in initializers or value.name in pinned or not value.type.HasField("tensor_type"):
            continue
        if not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        static = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if len(static) >= 1 and static[0] is None and all(d is not None for d in static[1:]):
            pinned[value.name] = (1, *static[1:])
            if trace is not None:
                label = dims[0].dim_param or "?"
                trace.note(f"static batch: input {value.name!r} batch dim {label!r} pinned to 1 "
                           "(the Edge TPU compiles static shapes only)")
    return pinned
