"""FuseEpiloguePass: Conv / Gemm / MatMul plus the elementwise ops after it become one fused node.

A backend computes a conv or a matrix product into an accumulator and can apply a short
epilogue to it before the result leaves registers, so

    Y = act(Conv(X, W, B) + R)           ->   FusedConv<Add,act>(X, W, B, R)
    Y = act(Gemm(A, B, C))               ->   FusedGemm<act>(A, B, C)
    Y = act(MatMul(A, B) + bias)         ->   FusedMatMul<act>(A, B, bias)

is one kernel call.  The fused node is an `edgekiln`-domain function (see
`compiler/fused_ops.py`) whose body is exactly the ops it replaces, so onnxruntime computes
the same numbers.  The epilogue keeps the graph's order: relu(conv + skip) is (Add, Relu)
(ResNet), conv + skip alone is (Add,) and relu6(conv) is (Clip,) (MobileNetV2).

Case 1: the base op.  A Conv / Gemm without bias gets a zero bias initializer, so every
        fused node of a kind has the same signature.
Case 2: MatMul + a constant Add whose shape broadcasts along the last axis only: a bias,
        part of the base (FusedMatMul's third input).  A constant Add after a Conv / Gemm is
        not fused: it is a bias that constant folding merges into the weights.
Case 3: a residual Add of a non-constant tensor with exactly the output's shape (no
        broadcasting: the kernel adds element by element).  When both operands come from
        fusible ops (ResNet's conv2 + downsample conv), the Add goes to the larger one (more
        weights), leaving the cheap 1x1 downsample as the residual input.
Case 4: one activation: Relu, Clip (constant bounds -> act_min/act_max; Relu6 is Clip 0..6),
        LeakyRelu (act_alpha), HardSigmoid (act_alpha, act_beta), HardSwish, Sigmoid, Tanh,
        Gelu (ONNX at opset >= 20, approximate "tanh" -> GeluTanh; or the edgekiln Gelu /
        GeluTanh functions from pattern recognition).
Case 5: SiLU, x * sigmoid(x): a Sigmoid and a Mul that both read x, the Mul also reading the
        Sigmoid's output and nothing else reading it.

The walk stops (fusing what it has) at a value that another node also reads, a graph output,
a second activation, a second Add, a node in another block, or an op it does not know; when
nothing can be fused the reason is reported.  The fused node takes the base node's name and
metadata and the last fused node's output value, so graph output names are unchanged.

A quantized pipeline runs `FuseEpiloguePass(activations=frozenset({"Relu", "Clip"}),
residual=False)`: in integer kernels Relu / Relu6 / Clip are the clamp bounds of the
requantized output, while every other activation is a separate int8 -> int8 lookup-table op
with its own output scale and an Add requantizes both of its inputs, so those steps are
refused with that reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label

BASE_OPS = {"Conv": "FusedConv", "Gemm": "FusedGemm", "MatMul": "FusedMatMul"}
_DEFAULT = ("", "ai.onnx")
# ONNX activation -> fused step name (Gelu is handled apart: it depends on opset and attribute)
_ACTIVATIONS = {"Relu": "Relu", "Clip": "Clip", "LeakyRelu": "LeakyRelu", "HardSigmoid": "HardSigmoid",
                "HardSwish": "HardSwish", "Sigmoid": "Sigmoid", "Tanh": "Tanh"}
_BLOCK_KEY = "edgekiln.block"


@dataclass
class _Candidate:
    """A base node, and (once `check` accepted it) the chain to fuse."""

    base: ir.Node
    chain: _Chain | None = None

    @property
    def name(self) -> str:
        return node_label(self.base)


@dataclass
class _Chain:
    base: ir.Node
    output: ir.Value
    nodes: list[ir.Node] = field(default_factory=list)  # replaced nodes, base first, dependency order
    bias: ir.Value | None = None  # MatMul's constant bias (Case 2)
    residual: ir.Value | None = None
    steps: list[str] = field(default_factory=list)
    act_attrs: dict[str, float] = field(default_factory=dict)
    stopped: str | None = None  # why the walk stopped early, when it is worth saying


@dataclass
class _Step:
    kind: str
    nodes: list[ir.Node]
    output: ir.Value
    residual: ir.Value | None = None
    act_attrs: dict[str, float] = field(default_factory=dict)


class FuseEpiloguePass(RewritePass[_Candidate]):
    """`activations`: the activation steps (fused_ops names) that may be fused, None for all;
    `residual`: whether a residual Add may be fused (Case 3)."""

    name = "fuse-epilogue"

    def __init__(self, activations: frozenset[str] | None = None, residual: bool = True) -> None:
        if activations is not None and (unknown := set(activations) - set(fused_ops.ACTIVATIONS)):
            raise ValueError(f"unknown epilogue activations {sorted(unknown)}; "
                             f"choose from {', '.join(fused_ops.ACTIVATIONS)}")
        self.activations = activations
        self.residual = residual

    def match(self, graph: Graph) -> Iterable[_Candidate]:
        # Only bases followed by something that looks fusible: a conv feeding a pool is not news.
        return [_Candidate(n) for n in graph.main
                if n.op_type in BASE_OPS and n.domain in _DEFAULT and self._next_looks_fusible(graph, n)]

    def check(self, graph: Graph, candidate: _Candidate) -> str | None:
        chain, reason = self._walk(graph, candidate.base)
        # A MatMul's bias alone is worth fusing: it becomes the kernel's int32 bias.
        if chain is None or not (chain.steps or chain.bias is not None):
            return reason or "nothing after it can be fused"
        if graph.opset("") < fused_ops.BODY_OPSET:
            return (f"the model imports ONNX opset {graph.opset('')}, older than the fused ops' "
                    f"{fused_ops.BODY_OPSET} (the frontend converts models to {fused_ops.BODY_OPSET})")
        needs_zero_bias = chain.bias is None and (len(chain.base.inputs) < 3 or chain.base.inputs[2] is None)
        if needs_zero_bias and _bias_size(chain.base) is None:
            return "its output shape is not static, so the zero bias it needs has no known size"
        candidate.chain = chain
        return None

    def rewrite(self, graph: Graph, candidate: _Candidate) -> str:
        chain = candidate.chain
        assert chain is not None
        base = chain.base
        kind = BASE_OPS[base.op_type]
        op_type = fused_ops.ensure_fused_function(graph.model, kind, chain.steps)
        inputs = [base.inputs[0], base.inputs[1], _bias(graph, chain)]
        if chain.residual is not None:
            inputs.append(chain.residual)
        attributes: dict[str, object] = dict(base.attributes)
        attributes.update(chain.act_attrs)
        fused = ir.node(op_type, inputs, attributes, domain=fused_ops.DOMAIN, name=base.name,
                        metadata_props=dict(base.metadata_props))
        graph.main.insert_before(chain.nodes[-1], fused)
        old, new = chain.output, fused.outputs[0]
        new.shape, new.type = old.shape, old.type
        name = old.name
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        graph.main.remove(chain.nodes, safe=True)
        new.name = name  # the fused node owns the last value's name (graph outputs keep theirs)
        fused_labels = " + ".join(node_label(n) for n in chain.nodes)
        message = f"fused {fused_labels} into {node_label(fused)}"
        if chain.stopped:
            message += f"; stopped there: {chain.stopped}"
        return message

    # -- the walk ------------------------------------------------------------------------
    def _next_looks_fusible(self, graph: Graph, base: ir.Node) -> bool:
        value = base.outputs[0]
        users = _unique(Graph.consumers(value))
        if base.op_type == "MatMul" and len(users) == 1 and _constant_operand(users[0], value) is not None:
            return True  # the bias alone is worth fusing (Case 2)
        return any(self._fusible_kind(graph, u) for u in users)

    def _walk(self, graph: Graph, base: ir.Node) -> tuple[_Chain | None, str | None]:
        chain = _Chain(base, base.outputs[0], [base])
        if base.op_type == "MatMul":  # Case 2
            users = _unique(Graph.consumers(chain.output))
            bias = _constant_operand(users[0], chain.output) if len(users) == 1 else None
            if bias is not None and not chain.output.is_graph_output():
                if (problem := _bias_problem(bias, chain.output, users[0])) is not None:
                    return None, problem
                chain.bias, chain.output = bias, users[0].outputs[0]
                chain.nodes.append(users[0])
        while True:
            reason, step = self._next_step(graph, chain)
            if step is None:
                if chain.steps:
                    chain.stopped = reason
                    return chain, None
                return chain, reason
            chain.nodes.extend(step.nodes)
            chain.steps.append(step.kind)
            chain.output = step.output
            chain.act_attrs.update(step.act_attrs)
            if step.residual is not None:
                chain.residual = step.residual

    def _next_step(self, graph: Graph, chain: _Chain) -> tuple[str | None, _Step | None]:
        """The next epilogue step after `chain.output`, or (why not, None); why is None when
        the next node is simply not an epilogue op."""
        value = chain.output
        producer = value.producer()
        what = f"{producer.op_type.lower()} output" if producer is not None else f"value {value.name!r}"
        users = Graph.consumers(value)
        distinct = _unique(users)
        fusible = [u for u in distinct if self._fusible_kind(graph, u)]
        if not fusible:
            # An earlier rewrite of this run may have taken the Add this output fed (Case 3).
            fused = next((u for u in distinct if u.domain == fused_ops.DOMAIN), None)
            if fused is not None and not chain.steps:
                return f"its output is an input of the fused node {node_label(fused)}", None
            return None, None
        if value.is_graph_output():
            return f"{what} {value.name!r} is a graph output", None
        silu = _silu(value, distinct)
        if silu is not None:
            return self._checked(chain, "SiLU", silu, silu[-1].outputs[0])
        if len(distinct) > 1:
            other = next(u for u in distinct if u is not fusible[0])
            return f"{what} is also read by node {node_label(other)}", None
        user = distinct[0]
        if len(users) > 1:
            return f"node {node_label(user)} reads the {what} twice", None
        kind = self._fusible_kind(graph, user)
        if kind == fused_ops.RESIDUAL:
            return self._residual(chain, user, value, what)
        act_attrs, problem = _activation_attrs(kind, user)
        if act_attrs is None:
            return problem, None
        return self._checked(chain, kind, [user], user.outputs[0], act_attrs)

    def _checked(self, chain: _Chain, kind: str, nodes: list[ir.Node], output: ir.Value,
                 act_attrs: dict[str, float] | None = None) -> tuple[str | None, _Step | None]:
        """An activation step, unless the chain has one already, it is not allowed, or it crosses a block."""
        if self.activations is not None and kind not in self.activations:
            return f"{kind} is not fused in a quantized pipeline (int8 lookup table op)", None
        if any(s != fused_ops.RESIDUAL for s in chain.steps):
            return f"a second activation ({node_label(nodes[-1])})", None
        if (problem := _block_problem(chain.base, nodes)) is not None:
            return problem, None
        return None, _Step(kind, nodes, output, act_attrs=act_attrs or {})

    def _residual(self, chain: _Chain, add: ir.Node, value: ir.Value, what: str) -> tuple[str | None, _Step | None]:
        """Case 3."""
        other = add.inputs[1] if add.inputs[0] is value else add.inputs[0]
        if not self.residual:
            return (f"the residual {node_label(add)} is not fused in a quantized pipeline "
                    f"(an integer Add requantizes both of its inputs)"), None
        if fused_ops.RESIDUAL in chain.steps:
            return f"a second Add ({node_label(add)})", None
        if Graph.constant(other) is not None:
            return (f"{node_label(add)} adds the constant {other.name!r}: a bias, not a residual "
                    f"(fold-affine-into-conv merges it into the {chain.base.op_type})"), None
        want, got = Graph.static_shape(value), Graph.static_shape(other)
        if want is None or got is None:
            return f"the shape of {other.name!r} or of the {what} is not static", None
        if want != got:
            return (f"residual {other.name!r} of shape {list(got)} broadcasts to the "
                    f"{what} shape {list(want)}"), None
        if other.dtype != value.dtype:
            return f"residual {other.name!r} has another element type", None
        if (rival := self._larger_rival(chain.base, other, add)) is not None:
            return f"the residual Add goes to {node_label(rival)}, the larger operand", None
        if (problem := _block_problem(chain.base, [add])) is not None:
            return problem, None
        return None, _Step(fused_ops.RESIDUAL, [add], add.outputs[0], residual=other)

    @staticmethod
    def _larger_rival(base: ir.Node, other: ir.Value, add: ir.Node) -> ir.Node | None:
        """The base op producing `other`, when it could take the Add itself and has more weights."""
        rival = other.producer()
        if rival is None or rival.op_type not in BASE_OPS or rival.domain not in _DEFAULT:
            return None
        if other.is_graph_output() or _unique(Graph.consumers(other)) != [add]:
            return None
        return rival if _weight_size(rival) > _weight_size(base) else None

    def _fusible_kind(self, graph: Graph, node: ir.Node) -> str | None:
        """The epilogue step `node` would be, judged on its op alone."""
        if node.domain == fused_ops.DOMAIN and node.op_type in ("Gelu", "GeluTanh"):
            return node.op_type
        if node.domain not in _DEFAULT:
            return None
        if node.op_type == "Add" and len(node.inputs) == 2:
            return fused_ops.RESIDUAL
        if node.op_type == "Gelu" and graph.opset("") >= 20:
            approximate = node.attributes.get("approximate")
            return "GeluTanh" if approximate is not None and approximate.value == "tanh" else "Gelu"
        return _ACTIVATIONS.get(node.op_type)


# -- helpers -------------------------------------------------------------------------------
def _unique(nodes: list[ir.Node]) -> list[ir.Node]:
    return list({id(n): n for n in nodes}.values())


def _constant_operand(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The constant other operand of a two-input default-domain Add reading `value`."""
    if node.op_type != "Add" or node.domain not in _DEFAULT or len(node.inputs) != 2:
        return None
    other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
    return other if other is not value and Graph.constant(other) is not None else None


def _bias_problem(bias: ir.Value, product: ir.Value, add: ir.Node) -> str | None:
    """Case 2: a MatMul bias must be one number per output column."""
    shape, out = Graph.constant(bias).shape, Graph.static_shape(product)
    if out is None:
        return "the MatMul output shape is not static"
    per_column = len(shape) <= len(out) and all(d == 1 for d in shape[:-1]) and \
        (not shape or shape[-1] in (1, out[-1]))
    if not per_column or bias.dtype != product.dtype:
        return f"{node_label(add)} adds a constant of shape {list(shape)}, not a per-column bias"
    return None


def _activation_attrs(kind: str, node: ir.Node) -> tuple[dict[str, float] | None, str | None]:
    """Case 4: the act_* attributes of an activation node, or why it cannot be fused."""
    if kind == "Clip":
        bounds = {}
        # An absent bound is no bound; float32's extremes keep the attribute finite.
        limit = float(np.finfo(np.float32).max)
        for index, key, default in ((1, "act_min", -limit), (2, "act_max", limit)):
            value = node.inputs[index] if len(node.inputs) > index else None
            if value is None:
                bounds[key] = default
                continue
            array = Graph.constant(value)
            if array is None or array.size != 1:
                return None, f"{node_label(node)} has a {key[4:]} bound that is not a constant scalar"
            bounds[key] = float(array.reshape(()))
        return bounds, None
    if kind == "LeakyRelu":
        return {"act_alpha": _float_attr(node, "alpha", 0.01)}, None
    if kind == "HardSigmoid":
        return {"act_alpha": _float_attr(node, "alpha", 0.2), "act_beta": _float_attr(node, "beta", 0.5)}, None
    return {}, None


def _float_attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return float(attr.value) if attr is not None else default


def _silu(value: ir.Value, users: list[ir.Node]) -> list[ir.Node] | None:
    """Case 5: [Sigmoid, Mul] when `value`'s readers are exactly Sigmoid(value) and Mul(value, that)."""
    if len(users) != 2:
        return None
    sigmoid = next((u for u in users if u.op_type == "Sigmoid" and u.domain in _DEFAULT), None)
    mul = next((u for u in users if u.op_type == "Mul" and u.domain in _DEFAULT), None)
    if sigmoid is None or mul is None:
        return None
    gate = sigmoid.outputs[0]
    if set(map(id, mul.inputs)) != {id(value), id(gate)} or len(mul.inputs) != 2:
        return None
    if gate.is_graph_output() or _unique(Graph.consumers(gate)) != [mul]:
        return None
    return [sigmoid, mul]


def _block_problem(base: ir.Node, nodes: list[ir.Node]) -> str | None:
    """Fusing across a block boundary (e.g. an attention unit) would break that block."""
    block = base.metadata_props.get(_BLOCK_KEY)
    for node in nodes:
        if node.metadata_props.get(_BLOCK_KEY) != block:
            where = node.metadata_props.get(_BLOCK_KEY) or "no block"
            return f"{node_label(node)} is in {where}, {node_label(base)} in {block or 'no block'}"
    return None


def _weight_size(node: ir.Node) -> int:
    shape = Graph.static_shape(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    return int(np.prod(shape)) if shape is not None else 0


def _unique_initializer_name(graph: Graph, base: str) -> str:
    taken = set(graph.main.initializers)
    name, suffix = base, 1
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    return name


def _zero_bias(graph: Graph, chain: _Chain, size: int) -> ir.Value:
    """Case 1: a zero bias, so a fused node always has its bias input."""
    dtype = chain.base.outputs[0].dtype or ir.DataType.FLOAT
    array = np.zeros(size, dtype=dtype.numpy())
    name = _unique_initializer_name(graph, f"{chain.base.name or chain.base.op_type}_zero_bias")
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    value.shape, value.type = ir.Shape([size]), ir.TensorType(dtype)
    graph.main.register_initializer(value)
    return value


def _bias(graph: Graph, chain: _Chain) -> ir.Value:
    """The fused node's bias input: MatMul's constant Add, the Conv / Gemm bias, or zeros."""
    base = chain.base
    if chain.bias is not None:
        return chain.bias
    if base.op_type != "MatMul" and len(base.inputs) > 2 and base.inputs[2] is not None:
        return base.inputs[2]
    return _zero_bias(graph, chain, _bias_size(base))


def _bias_size(base: ir.Node) -> int | None:
    """Output channels (Conv) or columns (Gemm, MatMul): the length of a zero bias."""
    out = Graph.static_shape(base.outputs[0])
    if base.op_type == "Conv":
        weight = Graph.static_shape(base.inputs[1])
        return weight[0] if weight is not None else (out[1] if out is not None else None)
    return out[-1] if out is not None else None

