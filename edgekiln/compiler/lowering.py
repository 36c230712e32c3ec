"""Lowering: from a canonical float `Graph` to a `Program`.

The graph is already static and topologically sorted (the frontend inferred shapes and
pinned dynamic dims), so lowering is a one-to-one translation:

* every node becomes a `KernelCall` (op = ONNX op type; only the attributes present on
  the node are kept, as JSON-able values, tensors as nested lists: defaults are the
  kernel's business, and keeping them out keeps the Program as small as the model);
* every initializer a node or graph output reads becomes a constant (a numpy array);
  a leftover `Constant` node becomes a constant too, not a call;
* every other value becomes a `TensorSpec` with its static shape and dtype; the layout
  is guessed from the rank (4-D "NCHW", 2-D "NC", else "any") since ONNX activations
  are NCHW; constants keep "any" (a 4-D Conv weight is OIHW, not NCHW).

Then `plan_arena` places the intermediates.  What lowering refuses, each with an error
naming the node: a value without a static shape (`DynamicShapeError`), an op outside
the default ONNX domain other than edgekiln's own fused ops, and control flow (If/Loop/Scan
carry subgraphs) (`UnsupportedOpError`).

edgekiln's fused ops (`compiler/fused_ops.py`, domain "edgekiln") lower to one call each:
`FusedConvAddRelu` becomes op "FusedConv" with `attrs["epilogue"] = ["Add", "Relu"]` next
to the node's own attributes (conv attributes, act_min/act_max/act_alpha/act_beta); the
standalone `Gelu` / `GeluTanh` keep their op type.  A node that a block pass grouped
(`metadata_props["edgekiln.block"]`, e.g. "inverted_residual_0") carries that id in
`KernelCall.block`.

Old exports list initializers among the graph inputs too (overridable defaults); for a
deployed model the weights are fixed, so those become constants, not inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.memory_planner import plan_arena
from edgekiln.compiler.program import KernelCall, Program, TensorSpec
from edgekiln.errors import DynamicShapeError, UnsupportedOpError

DEFAULT_DOMAINS = ("", "ai.onnx")
BLOCK_KEY = "edgekiln.block"  # node metadata a block-partition pass sets
STANDALONE_EDGEKILN_OPS = ("Gelu", "GeluTanh")
_LAYOUT_BY_RANK = {4: "NCHW", 2: "NC"}


def lower_graph(graph: Graph, *, alignment: int = 64) -> Program:
    """Lower a static float graph to a Program with a planned arena."""
    return GraphLowering(graph).run(alignment)


class GraphLowering:
    """The state of one lowering: names given so far, tensors and constants collected."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.tensors: dict[str, TensorSpec] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.calls: list[KernelCall] = []
        self.value_names: dict[int, str] = {}  # id(ir.Value) -> tensor name
        self.taken_names: set[str] = set()
        self.call_names: set[str] = set()

    def run(self, alignment: int) -> Program:
        main = self.graph.main
        inputs = []
        for value in main.inputs:
            if value.const_value is not None:  # an initializer listed as an input
                self._constant(value)
                continue
            inputs.append(self._activation(value, "input", node=None))
        for index, node in enumerate(main):
            self._lower_node(node, index)
        outputs = [self._output_name(value) for value in main.outputs]
        arena = plan_arena(self.tensors, self.calls, alignment=alignment)
        program = Program(tensors=self.tensors, constants=self.constants, calls=self.calls,
                          inputs=inputs, outputs=outputs, arena=arena)
        program.validate()
        return program

    # -- nodes ---------------------------------------------------------------------
    def _lower_node(self, node: ir.Node, index: int) -> None:
        name = self._call_name(node, index)
        _check_supported(node, name)
        if node.op_type == "Constant":
            self._constant(node.outputs[0], _constant_node_value(node, name))
            return
        call_inputs = tuple(self._input_name(value) for value in node.inputs)
        call_outputs = tuple(self._node_output(value, node, name) for value in node.outputs)
        attrs = {key: _json_attr(attr, node, name) for key, attr in node.attributes.items()}
        op = node.op_type
        if node.domain == fused_ops.DOMAIN and (fused := fused_ops.parse_fused_op_type(op)) is not None:
            op, attrs = fused[0], {"epilogue": list(fused[1]), **attrs}
        self.calls.append(KernelCall(name=name, op=op, inputs=call_inputs, outputs=call_outputs,
                                     attrs=attrs, block=node.metadata_props.get(BLOCK_KEY)))

    def _call_name(self, node: ir.Node, index: int) -> str:
        # Backends use call names as symbols and in reports, so they must be unique and
        # non-empty even when the model's node names are not.
        return claim_unique(node.name or f"{node.op_type}_{index}", self.call_names)

    def _input_name(self, value: ir.Value | None) -> str:
        if value is None:
            return ""  # an absent optional input
        if id(value) in self.value_names:
            return self.value_names[id(value)]
        if value.const_value is not None:
            return self._constant(value)
        # Graph inputs and node outputs were named when first seen; anything else is a
        # value nobody produces, which the ONNX checker would have refused.
        raise UnsupportedOpError(f"value {value.name!r} is read but neither a graph input, "
                                 "an initializer nor a node output; run the ONNX checker")

    def _node_output(self, value: ir.Value, node: ir.Node, call_name: str) -> str:
        if not value.name and not value.uses() and not value.is_graph_output():
            return ""  # an optional output the model does not ask for
        kind = "output" if value.is_graph_output() else "intermediate"
        return self._activation(value, kind, node=node, call_name=call_name)

    def _output_name(self, value: ir.Value) -> str:
        if id(value) not in self.value_names:  # a graph output that is an initializer
            return self._constant(value)
        return self.value_names[id(value)]

    # -- tensors -------------------------------------------------------------------
    def _activation(self, value: ir.Value, kind: str, node: ir.Node | None,
                    call_name: str = "") -> str:
        name = self._name(value, call_name)
        shape = _static_shape(value, name, node, call_name, self.graph)
        dtype = _dtype_name(value, name, node, call_name)
        layout = _LAYOUT_BY_RANK.get(len(shape), "any")
        self.tensors[name] = TensorSpec(name=name, dtype=dtype, shape=shape, layout=layout, kind=kind)
        return name

    def _constant(self, value: ir.Value, array: np.ndarray | None = None) -> str:
        if id(value) in self.value_names:
            return self.value_names[id(value)]
        name = self._name(value, "const")
        if array is None:
            array = value.const_value.numpy()
        array = np.asarray(array, order="C")  # (ascontiguousarray would make scalars 1-D)
        if array.dtype.kind in "OSU":
            raise UnsupportedOpError(f"constant {name!r} holds strings; edgekiln lowers numeric "
                                     "tensors only: remove the string processing from the model")
        self.constants[name] = array
        self.tensors[name] = TensorSpec(name=name, dtype=array.dtype.name,
                                        shape=tuple(array.shape), layout="any", kind="constant")
        return name

    def _name(self, value: ir.Value, hint: str) -> str:
        """The tensor name of `value`: its own when it has one, else a fresh one."""
        name = claim_unique(value.name or f"{hint}_out{value.index() or 0}", self.taken_names)
        self.value_names[id(value)] = name
        return name


# -- checks --------------------------------------------------------------------------------
def _check_supported(node: ir.Node, call_name: str) -> None:
    where = f"node {call_name!r} ({_op_label(node)})"
    if node.domain == fused_ops.DOMAIN and (fused_ops.parse_fused_op_type(node.op_type) is None
                                            and node.op_type not in STANDALONE_EDGEKILN_OPS):
        raise UnsupportedOpError(
            f"{where}: {node.op_type!r} is not one of edgekiln's fused ops (FusedConv, FusedGemm, "
            "FusedMatMul with an epilogue, Gelu, GeluTanh); the model was edited by hand or by a "
            "newer edgekiln. Compile the original model.")
    if node.domain not in (*DEFAULT_DOMAINS, fused_ops.DOMAIN):
        raise UnsupportedOpError(
            f"{where}: operator domain {node.domain!r} is not supported; edgekiln lowers "
            "standard ONNX operators only. Export without custom or vendor ops (give the "
            "original model, not one optimized by onnxruntime), or rewrite the op with "
            "standard ONNX operators.")
    for key, attr in node.attributes.items():
        if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
            raise UnsupportedOpError(
                f"{where}: control flow (subgraph attribute {key!r}) is not supported; "
                "edgekiln compiles straight-line graphs. Export the model with the control "
                "flow resolved (trace it with fixed inputs, unroll the loop, or fold the "
                "If on a constant condition).")


def _op_label(node: ir.Node) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain else node.op_type


def _static_shape(value: ir.Value, name: str, node: ir.Node | None, call_name: str,
                  graph: Graph) -> tuple[int, ...]:
    shape = Graph.static_shape(value)
    # Some exporters (Paddle) write -1 for "unknown" into value_info; that is not static.
    if shape is not None and all(d >= 0 for d in shape):
        return shape
    shown = "unknown" if value.shape is None else _shape_text(value)
    where = (f"graph input {name!r}" if node is None else
             f"value {name!r} produced by node {call_name!r} ({_op_label(node)})")
    dynamic_inputs = [f"{v.name}{_shape_text(v)}" for v in graph.inputs
                      if v.const_value is None and Graph.static_shape(v) is None]
    if dynamic_inputs or node is None:
        hint = ("pass --input-shape NAME=DIMS (e.g. x=1x3x224x224) for "
                + ", ".join(dynamic_inputs or [name]) + " so every shape can be inferred")
    else:
        hint = ("the graph inputs are static, so shape inference could not work this value "
                "out (a shape computed at run time, or a stale value_info entry with -1 "
                "dims); re-export the model with static shapes")
    raise DynamicShapeError(f"{where} has shape {shown}, not a static shape; edgekiln "
                            f"compiles for fixed shapes: {hint}.")


def _shape_text(value: ir.Value) -> str:
    """A shape as the user sees it: [N,3,?,?] (named dims by name, unknown ones as ?)."""
    if value.shape is None:
        return "[?]"
    return "[" + ",".join(str(d) if isinstance(d, int) else (str(d.value) if d.value else "?")
                          for d in value.shape) + "]"


def _dtype_name(value: ir.Value, name: str, node: ir.Node | None, call_name: str) -> str:
    where = f"graph input {name!r}" if node is None else \
        f"value {name!r} produced by node {call_name!r} ({_op_label(node)})"
    if value.dtype is None:
        raise DynamicShapeError(f"{where} has no inferred element type; run shape inference "
                                "(the frontend does) before lowering.")
    try:
        dtype = value.dtype.numpy()
    except TypeError:  # STRING and other types without a numpy equivalent
        dtype = None
    if dtype is None or dtype.kind in "OSU":
        raise UnsupportedOpError(f"{where} has element type {value.dtype.name}, which edgekiln "
                                 "cannot lower; only numeric tensors are supported.")
    return dtype.name


# -- attributes ------------------------------------------------------------------------------
def _json_attr(attr: ir.Attr, node: ir.Node, call_name: str) -> Any:
    """An attribute value as JSON: int, float, str, lists of them; tensors as nested lists."""
    kind, value = attr.type, attr.value
    if kind in (ir.AttributeType.INT, ir.AttributeType.FLOAT):
        return value
    if kind in (ir.AttributeType.INTS, ir.AttributeType.FLOATS):
        return list(value)
    if kind == ir.AttributeType.STRING:
        return value if isinstance(value, str) else value.decode("utf-8")
    if kind == ir.AttributeType.STRINGS:
        return [v if isinstance(v, str) else v.decode("utf-8") for v in value]
    if kind == ir.AttributeType.TENSOR:
        return value.numpy().tolist()
    if kind == ir.AttributeType.TENSORS:
        return [t.numpy().tolist() for t in value]
    raise UnsupportedOpError(f"node {call_name!r} ({_op_label(node)}): attribute {attr.name!r} "
                             f"of type {kind.name} cannot be lowered; re-export the model "
                             "without it.")


def _constant_node_value(node: ir.Node, call_name: str) -> np.ndarray:
    """The array a Constant node produces (one of its `value*` attributes)."""
    attrs = node.attributes
    if "value" in attrs:
        return attrs["value"].value.numpy()
    scalars = {"value_float": np.float32, "value_floats": np.float32,
               "value_int": np.int64, "value_ints": np.int64}
    for key, dtype in scalars.items():
        if key in attrs:
            return np.array(attrs[key].value, dtype=dtype)
    raise UnsupportedOpError(f"node {call_name!r} (Constant): only numeric dense values are "
                             f"supported, got {sorted(attrs)}; re-export with a dense tensor.")


def claim_unique(base: str, taken: set[str]) -> str:
    """`base`, or `base_1`, `base_2`, ... whichever is free first; recorded as taken."""
    name, suffix = base, 1
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    taken.add(name)
    return name
