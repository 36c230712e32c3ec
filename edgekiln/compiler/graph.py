"""`Graph`: the in-memory model every pass works on.

A thin layer over an `onnx_ir.Model`.  Passes mutate the IR in place through it; protobuf
only appears at the boundary (`to_proto`, `save`).  The helpers here are the questions
every rewrite asks: who produces this value, who reads it, is it a constant, what is its
static shape.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir


class Graph:
    """An ONNX model held as onnx-ir, with lookup helpers for passes."""

    def __init__(self, model: ir.Model, source: Path | None = None) -> None:
        self.model = model
        self.source = source

    # -- construction and boundary -------------------------------------------------
    @classmethod
    def from_proto(cls, proto: onnx.ModelProto, source: Path | None = None) -> Graph:
        return cls(ir.serde.deserialize_model(proto), source)

    def to_proto(self) -> onnx.ModelProto:
        return ir.serde.serialize_model(self.model)

    def to_bytes(self) -> bytes:
        return self.to_proto().SerializeToString(deterministic=True)

    def clone(self) -> Graph:
        """A deep, independent copy (the IR has back-references, so go through protobuf)."""
        return Graph.from_proto(copy.deepcopy(self.to_proto()), self.source)

    # -- views -----------------------------------------------------------------------
    @property
    def main(self) -> ir.Graph:
        return self.model.graph

    @property
    def nodes(self) -> list[ir.Node]:
        return list(self.model.graph)

    @property
    def inputs(self) -> list[ir.Value]:
        return list(self.model.graph.inputs)

    @property
    def outputs(self) -> list[ir.Value]:
        return list(self.model.graph.outputs)

    def opset(self, domain: str = "") -> int:
        return self.model.opset_imports.get(domain, 0)

    def node(self, name: str) -> ir.Node:
        for node in self.model.graph:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r}")

    def count_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.model.graph:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return dict(sorted(counts.items()))

    # -- questions rewrites ask --------------------------------------------------------
    @staticmethod
    def producer(value: ir.Value) -> ir.Node | None:
        return value.producer()

    @staticmethod
    def consumers(value: ir.Value) -> list[ir.Node]:
        return [user for user, _ in value.uses()]

    def is_graph_output(self, value: ir.Value) -> bool:
        return value.is_graph_output()

    @staticmethod
    def constant(value: ir.Value | None) -> np.ndarray | None:
        """The value's contents if it is a constant initializer (not a graph input)."""
        if value is None or value.const_value is None or value.is_graph_input():
            return None
        return value.const_value.numpy()

    @staticmethod
    def static_shape(value: ir.Value) -> tuple[int, ...] | None:
        """The shape as ints, or None when it is unknown or has a symbolic dimension."""
        if value.shape is None:
            return None
        dims = tuple(value.shape)
        # Some exporters (Paddle) write -1 as a dim_value for "unknown".
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            return None
        return dims

    def walk_subgraph_nodes(self) -> Iterator[ir.Node]:
        """Every node including those inside If/Loop/Scan bodies."""
        yield from ir.traversal.RecursiveGraphIterator(self.model.graph)

    def __repr__(self) -> str:
        return f"Graph({self.model.graph.name!r}, {len(self.model.graph)} nodes)"
