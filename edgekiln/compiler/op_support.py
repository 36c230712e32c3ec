"""Which ONNX nodes each backend can lower, read from `backends/<backend>/supported_ops.toml`.

The op lists are data.  A backend's file names the ONNX ops (default domain) it lowers, each
with optional constraints, plus requirements on every node and known-unsupported ops with a
hint.  This module only interprets the constraint vocabulary below; adding an op or tightening
a limit is an edit to the TOML file.

    backend = "edgetpu"
    precisions = ["int8"]
    [requirements]                   # every node
    max_rank = 4                     # no tensor of higher rank
    innermost_dims = 3               # only the innermost 3 dims may exceed 1
    [ops.Softmax]                    # one table per supported op
    axis_last = true
    note = "..."                     # free text: note, lowered_as, source
    [unsupported]                    # op -> why / what to do instead
    LeakyRelu = "..."

Constraints (a node violating any is unsupported, with the reason):

    rank = [3, 4]            rank of input 0 is one of these
    max_rank = 4             every tensor the node reads or writes has rank <= 4
    const_inputs = [1, 2]    these inputs, when present, are compile-time constants
    attrs = {mode = [...]}   attribute value (its ONNX default when absent) is one of these
    axis_last = true         the `axis` attribute is the last axis of input 0
    max_axis_size = 16000    the normalized axis (Softmax/LayerNorm span) holds <= N elements
    leading_ones = true      every dim of input 0 but the last is 1 (an effectively 1-D tensor)
    no_batch_axis = true     the reduced/split/concatenated/padded axes exclude axis 0 (rank >= 2)
    spatial_only = true      input 0 is 4-D NCHW and only H and W are reduced/padded/resized
    unit_steps = true        Slice steps are all 1
    squeeze_leading = true   Squeeze removes only leading size-1 dims (no relayout)
    zero_pad_concat = true   a constant Concat input must be all zeros, with 2 inputs in all
    static_input = true      input 0 has a fully known shape (Shape that can fold)
    dense_or_depthwise = true  Conv group is 1 or the input channel count

Nodes that never reach lowering are not judged: Constant (lifted to an initializer by the
frontend), Identity and Dropout (removed by cleanup), and nodes whose inputs are all constant
or static shapes (`foldable_nodes`: constant folding replaces them).  edgekiln's own fused
nodes (domain "edgekiln", e.g. FusedConvAddRelu) are supported when the backend supports the
base op (Conv / Gemm / MatMul, with its constraints) and every epilogue step (`EPILOGUE_NEEDS`:
SiLU needs Sigmoid and Mul, Gelu needs Gelu or Erf, ...).  Nodes in any other non-default
domain (com.microsoft, ...) are unsupported by every backend.  Shape-dependent constraints are
checked where shapes are known; pin dynamic input dims (`--input-shape`) for a complete check.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.model_stats import dims, is_constant_tensor
from edgekiln.errors import UnknownTargetError

BACKENDS = ("arm_cpu", "mobile_gpu", "edgetpu", "fpga_hls")

# Ops the pipeline removes before lowering, so no backend needs a kernel for them.
REMOVED_BEFORE_LOWERING = {
    "Constant": "lifted to an initializer by the frontend",
    "Identity": "removed by cleanup",
    "Dropout": "an inference no-op, removed by cleanup",
}

# Nodes whose outputs differ run to run even with constant inputs: never folded.
_NOT_FOLDABLE = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"})

_INFO_KEYS = frozenset({"note", "lowered_as", "source"})

# edgekiln's fused ops (compiler/fused_ops.py): the default-domain ops a backend must support for
# each epilogue step, as alternatives (any one suffices).  The epilogue's parameters are node
# attributes, so the activation ops' own constraints (Clip's constant bounds) always hold.
EPILOGUE_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    fused_ops.RESIDUAL: (("Add",),),
    "Relu": (("Relu",),),
    "Clip": (("Clip",),),
    "LeakyRelu": (("LeakyRelu",),),
    "HardSigmoid": (("HardSigmoid",),),
    "HardSwish": (("HardSwish",),),
    "Sigmoid": (("Sigmoid",),),
    "Tanh": (("Tanh",),),
    "SiLU": (("Sigmoid", "Mul"),),
    "Gelu": (("Gelu",), ("Erf",)),  # the exact GELU is 0.5·x·(1 + erf(x/√2))
    "GeluTanh": (("Tanh",),),
}


@dataclass(frozen=True)
class UnsupportedNode:
    """A node a backend cannot lower, and why."""

    node_name: str
    op_type: str
    domain: str
    reason: str


@dataclass(frozen=True)
class OpRule:
    """One supported op: its constraints and the free-text notes from the TOML file."""

    op_type: str
    constraints: Mapping[str, Any]
    note: str = ""
    lowered_as: str = ""


@dataclass(frozen=True)
class BackendOps:
    """A backend's `supported_ops.toml`, parsed."""

    backend: str
    summary: str
    precisions: tuple[str, ...]
    requirements: Mapping[str, Any]
    ops: Mapping[str, OpRule]
    unsupported: Mapping[str, str] = field(default_factory=dict)


# -- loading ---------------------------------------------------------------------------


@functools.cache
def load_backend_ops(backend: str) -> BackendOps:
    """Parse and validate `edgekiln/backends/<backend>/supported_ops.toml` (cached)."""
    if backend not in BACKENDS:
        raise UnknownTargetError(f"unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    resource = importlib.resources.files("edgekiln.backends") / backend / "supported_ops.toml"
    data = tomllib.loads(resource.read_text(encoding="utf-8"))
    where = f"edgekiln/backends/{backend}/supported_ops.toml"
    if data.get("backend") != backend:
        raise ValueError(f"{where}: backend = {data.get('backend')!r}, expected {backend!r}")
    requirements = dict(data.get("requirements", {}))
    _check_keys(requirements, where, "[requirements]")
    ops = {}
    for op_type, table in data.get("ops", {}).items():
        constraints = {k: v for k, v in table.items() if k not in _INFO_KEYS}
        _check_keys(constraints, where, f"[ops.{op_type}]")
        ops[op_type] = OpRule(op_type, constraints, table.get("note", ""), table.get("lowered_as", ""))
    unsupported = dict(data.get("unsupported", {}))
    if overlap := sorted(set(ops) & set(unsupported)):
        raise ValueError(f"{where}: ops listed as both supported and unsupported: {overlap}")
    return BackendOps(
        backend=backend,
        summary=data.get("summary", ""),
        precisions=tuple(data.get("precisions", ())),
        requirements=requirements,
        ops=ops,
        unsupported=unsupported,
    )


def _check_keys(table: Mapping[str, Any], where: str, section: str) -> None:
    # A typo in a constraint name would silently accept everything; refuse it instead.
    if unknown := sorted(set(table) - set(_CHECKS)):
        raise ValueError(f"{where} {section}: unknown constraint(s) {unknown}; known: {sorted(_CHECKS)}")


def supported_op_types(backend: str) -> frozenset[str]:
    """The ONNX op types (default domain) the backend can lower, constraints aside."""
    return frozenset(load_backend_ops(backend).ops)


# -- constants and folding -------------------------------------------------------------


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The contents of an initializer or of a Constant node's output; None otherwise."""
    if value is None:
        return None
    if value.const_value is not None and not value.is_graph_input():
        return value.const_value.numpy()
    producer = value.producer()
    if producer is None or producer.op_type != "Constant":
        return None
    for name, attr in producer.attributes.items():
        if name == "value":
            return attr.value.numpy()
        if name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.asarray(attr.value)
    return None


def foldable_nodes(graph: Graph) -> set[str]:
    """Names of nodes that constant folding removes: every input is constant or derived from
    constants, or the node reads only a static shape (Shape/Size of a fully known tensor)."""
    known: set[int] = set()
    folded: set[str] = set()
    for node in graph.main:
        if node.op_type == "Constant":
            known.update(id(v) for v in node.outputs)
            continue
        inputs = [v for v in node.inputs if v is not None]
        reads_static_shape = node.op_type in ("Shape", "Size") and inputs and _static_dims(inputs[0])
        all_constant = inputs and all(id(v) in known or _is_initializer(v) for v in inputs)
        has_subgraph = any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())
        if (reads_static_shape or all_constant) and node.op_type not in _NOT_FOLDABLE and not has_subgraph:
            folded.add(node.name or "")
            known.update(id(v) for v in node.outputs)
    return folded


def _is_initializer(value: ir.Value) -> bool:
    return value.const_value is not None and not value.is_graph_input()


def _static_dims(value: ir.Value | None) -> tuple[int, ...] | None:
    shape = dims(value)
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return shape  # type: ignore[return-value]


# -- the check ---------------------------------------------------------------------------


def unsupported_nodes(graph: Graph, backend: str) -> list[UnsupportedNode]:
    """Every node of the main graph that `backend` cannot lower, in graph order, with why."""
    spec = load_backend_ops(backend)
    folded = foldable_nodes(graph)
    constants = _ConstantView(folded)
    found: list[UnsupportedNode] = []
    for node in graph.main:
        reason = _why_unsupported(node, spec, graph, folded, constants)
        if reason is not None:
            found.append(UnsupportedNode(node.name or "", node.op_type, node.domain, reason))
    return found


def _why_unsupported(
    node: ir.Node, spec: BackendOps, graph: Graph, folded: set[str], constants: _ConstantView
) -> str | None:
    if node.domain == fused_ops.DOMAIN:
        return _why_fused_unsupported(node, spec, graph, constants)
    if node.domain not in ("", "ai.onnx"):
        return (
            f"op {node.op_type} is in the non-standard domain {node.domain!r}; no edgekiln backend "
            "lowers custom-domain ops (re-export the model with standard ONNX ops only)"
        )
    if node.op_type in REMOVED_BEFORE_LOWERING or (node.name or "") in folded:
        return None
    rule = spec.ops.get(node.op_type)
    if rule is None:
        hint = spec.unsupported.get(node.op_type)
        return f"{node.op_type} is not supported on {spec.backend}" + (f": {hint}" if hint else "")
    problem = _rule_problem(node, node.op_type, rule, spec, graph, constants)
    return None if problem is None else f"{node.op_type} on {spec.backend}: {problem}"


def _rule_problem(
    node: ir.Node, op_type: str, rule: OpRule, spec: BackendOps, graph: Graph, constants: _ConstantView
) -> str | None:
    """The first constraint of `rule` (then of the backend's requirements) `node` violates."""
    context = _Context(node, graph.opset(""), constants, op_type)
    # The op's own limits first: they carry its note and are the more specific reason.
    for key, limit in rule.constraints.items():
        if problem := _CHECKS[key](context, limit):
            return problem + (f" ({rule.note})" if rule.note else "")
    for key, limit in spec.requirements.items():
        if problem := _CHECKS[key](context, limit):
            return problem
    return None


def _why_fused_unsupported(node: ir.Node, spec: BackendOps, graph: Graph, constants: _ConstantView) -> str | None:
    """An edgekiln fused node is supported when its base op is (with that op's constraints, its
    inputs sitting where the base op's do) and every epilogue step's ops are (EPILOGUE_NEEDS)."""
    parsed = fused_ops.parse_fused_op_type(node.op_type)
    if parsed is not None:
        base_op, steps = parsed[0].removeprefix("Fused"), parsed[1]
    elif node.op_type in ("Gelu", "GeluTanh"):
        base_op, steps = None, (node.op_type,)
    else:
        return (f"op {node.op_type} is in the {fused_ops.DOMAIN!r} domain but is not one of edgekiln's "
                "fused ops; compile the original model")
    where = f"{node.op_type} on {spec.backend}"
    if base_op is not None:
        rule = spec.ops.get(base_op)
        if rule is None:
            hint = spec.unsupported.get(base_op)
            return f"{where}: {base_op} is not supported" + (f": {hint}" if hint else "")
        if (problem := _rule_problem(node, base_op, rule, spec, graph, constants)) is not None:
            return f"{where}: {problem}"
    for step in steps:
        options = EPILOGUE_NEEDS[step]
        if not any(all(op in spec.ops for op in option) for option in options):
            need = " or ".join("+".join(option) for option in options)
            hint = next((spec.unsupported[op] for option in options for op in option if op in spec.unsupported), "")
            return f"{where}: the {step} step needs {need}" + (f" ({hint})" if hint else "")
    return None


@dataclass
class _ConstantView:
    """Answers "is this input fixed at compile time" for the const_inputs constraint."""

    folded: set[str]

    def is_constant(self, value: ir.Value) -> bool:
        if is_constant_tensor(value):
            return True
        producer = value.producer()
        return producer is not None and (producer.name or "") in self.folded


@dataclass
class _Context:
    node: ir.Node
    opset: int
    constants: _ConstantView
    op_type: str = ""  # the op whose semantics apply: a fused node's base op; else the node's

    def __post_init__(self) -> None:
        self.op_type = self.op_type or self.node.op_type

    def input(self, index: int) -> ir.Value | None:
        return self.node.inputs[index] if index < len(self.node.inputs) else None

    def rank(self, index: int = 0) -> int | None:
        shape = dims(self.input(index))
        return None if shape is None else len(shape)

    def attr(self, name: str) -> Any:
        """The attribute's value, or its ONNX schema default (None when it has none)."""
        attr = self.node.attributes.get(name)
        if attr is not None:
            # TOML gives lists, onnx-ir gives tuples for INTS/FLOATS/STRINGS: compare as lists.
            return list(attr.value) if isinstance(attr.value, tuple) else attr.value
        return _schema_default(self.op_type, self.opset, name)

    def axis(self) -> int | None:
        """The node's `axis` attribute, normalized against input 0's rank."""
        rank, axis = self.rank(), self.attr("axis")
        if rank is None or axis is None:
            return None
        return axis + rank if axis < 0 else axis

    def axes(self) -> list[int] | None:
        """Axes a reduce/squeeze/split/concat acts on, normalized; None when unknown.
        Reduce* with no axes reduce over every axis."""
        rank = self.rank()
        if rank is None:
            return None
        op = self.op_type
        if op in ("Split", "Concat"):
            axis = self.axis()
            return None if axis is None else [axis]
        axes = self.attr("axes") if "axes" in self.node.attributes else None
        if axes is None and self.input(1) is not None:
            array = constant_array(self.input(1))
            axes = None if array is None else [int(a) for a in array.reshape(-1)]
            if axes is None:
                return None
        if axes is None:
            return list(range(rank)) if op.startswith("Reduce") else None
        return sorted(a + rank if a < 0 else a for a in axes)


@functools.cache
def _schema_default(op_type: str, opset: int, name: str) -> Any:
    try:
        schema = onnx.defs.get_schema(op_type, opset or onnx.defs.onnx_opset_version())
    except onnx.defs.SchemaError:
        return None
    attr = schema.attributes.get(name)
    if attr is None or not attr.default_value.name:
        return None
    value = onnx.helper.get_attribute_value(attr.default_value)
    return value.decode() if isinstance(value, bytes) else value


# -- constraint checks: each returns the problem, or None when the node complies -------


def _check_rank(c: _Context, allowed: list[int]) -> str | None:
    rank = c.rank()
    if rank is not None and rank not in allowed:
        return f"input rank {rank} not in {allowed}"
    return None


def _check_max_rank(c: _Context, limit: int) -> str | None:
    for value in (*c.node.inputs, *c.node.outputs):
        shape = dims(value)
        if shape is not None and len(shape) > limit:
            return f"tensor {value.name!r} has rank {len(shape)} > {limit}"
    return None


def _check_innermost_dims(c: _Context, count: int) -> str | None:
    for value in (*c.node.inputs, *c.node.outputs):
        shape = dims(value)
        if value is None or shape is None or c.constants.is_constant(value):
            continue
        outer = [d for d in shape[: max(len(shape) - count, 0)] if isinstance(d, int)]
        if any(d > 1 for d in outer):
            return f"tensor {value.name!r} {list(shape)}: only the innermost {count} dims may exceed 1"
    return None


def _check_const_inputs(c: _Context, indices: list[int]) -> str | None:
    for index in indices:
        value = c.input(index)
        if value is not None and not c.constants.is_constant(value):
            return f"input {index} ({value.name!r}) must be a compile-time constant"
    return None


def _check_attrs(c: _Context, allowed: Mapping[str, list[Any]]) -> str | None:
    for name, values in allowed.items():
        value = c.attr(name)
        if isinstance(value, bytes):
            value = value.decode()
        if value is not None and value not in values:
            return f"{name}={value!r} not in {values}"
    return None


def _check_axis_last(c: _Context, required: bool) -> str | None:
    axis, rank = c.axis(), c.rank()
    if required and axis is not None and rank is not None and axis != rank - 1:
        return f"axis {axis} is not the last axis of a rank-{rank} input"
    return None


def _check_max_axis_size(c: _Context, limit: int) -> str | None:
    axis, shape = c.axis(), _static_dims(c.input(0))
    if axis is None or shape is None:
        return None
    # Softmax before opset 13 and LayerNormalization normalize over axis..end, not one axis.
    spans = c.op_type == "LayerNormalization" or (c.op_type in ("Softmax", "LogSoftmax") and c.opset < 13)
    size = math.prod(shape[axis:]) if spans else shape[axis]
    return f"normalized size {size} > {limit}" if size > limit else None


def _check_leading_ones(c: _Context, required: bool) -> str | None:
    shape = dims(c.input(0))
    if required and shape is not None and any(d != 1 for d in shape[:-1] if isinstance(d, int)):
        return f"input {list(shape)} is not effectively 1-D (all dims but the last must be 1)"
    return None


def _touched_axes(c: _Context) -> list[int] | None:
    """Axes the node changes: padded axes for Pad, resized axes for Resize, else `axes()`."""
    op = c.op_type
    if op == "Pad":
        pads = c.attr("pads") if "pads" in c.node.attributes else constant_array(c.input(1))
        if pads is None:
            return None
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        half = len(pads) // 2
        return [i for i in range(half) if pads[i] or pads[i + half]]
    if op in ("Resize", "Upsample"):
        shape_in, shape_out = _static_dims(c.input(0)), _static_dims(c.node.outputs[0])
        if shape_in is None or shape_out is None:
            return None
        return [i for i, (a, b) in enumerate(zip(shape_in, shape_out)) if a != b]
    return c.axes()


def _check_no_batch_axis(c: _Context, required: bool) -> str | None:
    # A 1-D tensor (shape arithmetic, a bias) has no batch axis: its axis 0 is its only one.
    rank = c.rank()
    if not required or rank is None or rank < 2:
        return None
    axes = _touched_axes(c)
    if axes is not None and 0 in axes:
        return "operates on the batch axis (axis 0)"
    return None


def _check_spatial_only(c: _Context, required: bool) -> str | None:
    if not required:
        return None
    rank = c.rank()
    if rank is not None and rank != 4:
        return f"needs a 4-D NCHW input, got rank {rank}"
    axes = _touched_axes(c)
    if axes is not None and not set(axes) <= {2, 3}:
        return f"acts on axes {axes}; only the spatial axes (2, 3 of NCHW) are supported"
    return None


def _check_unit_steps(c: _Context, required: bool) -> str | None:
    steps = constant_array(c.input(4))
    if required and steps is not None and np.any(steps != 1):
        return f"steps {steps.tolist()} are not all 1"
    return None


def _check_squeeze_leading(c: _Context, required: bool) -> str | None:
    axes, shape = c.axes(), dims(c.input(0))
    if not required or axes is None or shape is None or not axes:
        return None
    if any(d != 1 for d in shape[: max(axes) + 1]):
        return f"squeezes axes {axes} of {list(shape)}, which needs a relayout (only leading 1s can go)"
    return None


def _check_zero_pad_concat(c: _Context, required: bool) -> str | None:
    inputs = [v for v in c.node.inputs if v is not None]
    const = [v for v in inputs if c.constants.is_constant(v)]
    if not required or not const:
        return None
    if len(inputs) != 2:
        return f"a constant input is allowed only with 2 inputs in all, got {len(inputs)}"
    array = constant_array(const[0])
    if array is not None and np.any(array != 0):
        return f"constant input {const[0].name!r} is not all zeros"
    return None


def _check_static_input(c: _Context, required: bool) -> str | None:
    if required and _static_dims(c.input(0)) is None:
        shape = dims(c.input(0))
        return (
            f"reads the dynamic shape {list(shape) if shape is not None else '?'}; "
            "pin dynamic input dims with --input-shape so it folds to a constant"
        )
    return None


def _check_dense_or_depthwise(c: _Context, required: bool) -> str | None:
    group, shape = c.attr("group") or 1, dims(c.input(0))
    if not required or group == 1 or shape is None or len(shape) < 2 or not isinstance(shape[1], int):
        return None
    if group != shape[1]:
        return f"grouped convolution (group={group}, {shape[1]} input channels) is neither dense nor depthwise"
    return None


_CHECKS: dict[str, Callable[[_Context, Any], str | None]] = {
    "rank": _check_rank,
    "max_rank": _check_max_rank,
    "innermost_dims": _check_innermost_dims,
    "const_inputs": _check_const_inputs,
    "attrs": _check_attrs,
    "axis_last": _check_axis_last,
    "max_axis_size": _check_max_axis_size,
    "leading_ones": _check_leading_ones,
    "no_batch_axis": _check_no_batch_axis,
    "spatial_only": _check_spatial_only,
    "unit_steps": _check_unit_steps,
    "squeeze_leading": _check_squeeze_leading,
    "zero_pad_concat": _check_zero_pad_concat,
    "static_input": _check_static_input,
    "dense_or_depthwise": _check_dense_or_depthwise,
}
