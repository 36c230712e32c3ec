"""MergeConvBranchesPass: a sum of linear branches of one input becomes one convolution.

RepVGG and MobileOne train multi-branch blocks and deploy single convolutions.  A
convolution is linear in its weights, so branches that read the same x and share the
stride and group count add up exactly:

    Σ_i (W_i * x + b_i)  =  (Σ_i pad_to(K)(W_i)) * x  +  Σ_i b_i

where pad_to(K) zero-pads each kernel to the largest kernel size K, placed so that every
branch reads the same input pixels (the offset of W_i inside K is P − p_i, with P the
begin padding of the K-sized branches and p_i its own).  With "same" padding
(p = (k−1)/2) that is the centre; TF-style begin-aligned stride-2 paddings line up too.
Branches, recognized from the graph structure only:

Case 1: `Conv(x, W_i, b_i)`: after BN folding this is what a conv+BN branch became.
Case 2: `x` itself: the identity kernel, a 1 at the aligned centre linking channel c to
        itself (index c mod C/g inside its group for grouped and depthwise convs).
Case 3: `BatchNormalization(x)` (RepVGG's identity BN, MobileOne's skip BN): the identity
        kernel scaled by s = γ/√(σ²+ε), bias β − μ·s.
Case 4: MobileOne's k over-parameterized depthwise 3x3 branches + 1x1 depthwise scale
        branch + skip BN (and the pointwise stage's k 1x1 branches + skip BN) are cases
        1-3 summed by an Add chain; the whole Add/Sum tree ((a+b)+c)+d is one sum.

The sum must contain at least one Conv.  It is left alone, with the reason, when
branches differ in stride or groups, a dilation is not 1, paddings do not line up, a
branch output is read elsewhere, weights are shared or not constant, a branch is not
linear in x (anything but the three forms above), or an identity would change the
channel count.  Run it after FoldBatchNormPass and before epilogue fusion.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.fold_batch_norm import batch_norm_as_affine
from edgekiln.passes.graph_edits import add_initializer, drop_if_unused


def _is_sum(node: ir.Node | None) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and (
        (node.op_type == "Add" and len(node.inputs) == 2) or node.op_type == "Sum")


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


@dataclass
class _Branch:
    """One summed term: `kind` is "conv" (Case 1), "identity" (Case 2) or "bn" (Case 3)."""

    kind: str
    term: ir.Value
    node: ir.Node | None = None
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    begin_pads: tuple[int, ...] = ()
    end_pads: tuple[int, ...] = ()
    group: int | None = None  # None: the identity fits any group count
    affine: tuple[np.ndarray, np.ndarray] | None = None  # Case 3: BN(x) = s·x + t per channel

    def label(self) -> str:
        if self.kind == "identity":
            return "identity"
        if self.kind == "bn":
            return f"{node_label(self.node)} identity"
        return f"{node_label(self.node)} {'x'.join(map(str, self.kernel))}"


@dataclass
class BranchSum:
    """An Add/Sum tree `root` summing `terms`, each a candidate branch of `source`."""

    root: ir.Node
    adds: list[ir.Node]
    terms: list[ir.Value]
    source: ir.Value
    branches: list[_Branch] = field(default_factory=list)  # filled by `check`

    @property
    def name(self) -> str:
        return self.root.name or "<unnamed>"


class MergeConvBranchesPass(RewritePass[BranchSum]):
    name = "merge-conv-branches"

    # -- match -------------------------------------------------------------------------
    def match(self, graph: Graph) -> Iterable[BranchSum]:
        found = []
        for node in graph.main:
            if not _is_sum(node) or self._absorbed(node):
                continue
            adds, terms = self._collect(node)
            source = self._shared_input(terms)
            if source is None:
                continue
            # Only sums with a Conv branch are re-parameterization sites; x + BN(x) is not.
            if any(t.producer() is not None and t.producer().op_type == "Conv" and t.producer().inputs[0] is source
                   for t in terms):
                found.append(BranchSum(node, adds, terms, source))
        return found

    @staticmethod
    def _expandable(value: ir.Value, consumer: ir.Node) -> bool:
        """Whether `value` is an inner Add/Sum of the tree rooted above it (read only there)."""
        return (_is_sum(value.producer()) and len(value.uses()) == 1 and not value.is_graph_output()
                and value.shape is not None and value.shape == consumer.outputs[0].shape)

    def _absorbed(self, node: ir.Node) -> bool:
        out = node.outputs[0]
        users = Graph.consumers(out)
        return len(users) == 1 and _is_sum(users[0]) and self._expandable(out, users[0])

    def _collect(self, root: ir.Node) -> tuple[list[ir.Node], list[ir.Value]]:
        adds, terms, stack = [root], [], list(reversed(root.inputs))
        while stack:
            value = stack.pop()
            if value is None:
                continue
            consumer = value.uses()[0][0] if value.uses() else root
            if self._expandable(value, consumer):
                adds.append(value.producer())
                stack.extend(reversed(value.producer().inputs))
            else:
                terms.append(value)
        return adds, terms

    @staticmethod
    def _shared_input(terms: list[ir.Value]) -> ir.Value | None:
        """The value that the most terms are or directly read (at least two), else None."""
        counts: dict[int, tuple[int, ir.Value]] = {}
        for term in terms:
            reads = {id(term): term}
            producer = term.producer()
            if producer is not None and producer.inputs and producer.inputs[0] is not None:
                reads[id(producer.inputs[0])] = producer.inputs[0]
            for key, value in reads.items():
                counts[key] = (counts.get(key, (0, value))[0] + 1, value)
        best = max(counts.values(), key=lambda cv: cv[0], default=(0, None))
        return best[1] if best[0] >= 2 else None

    # -- check -------------------------------------------------------------------------
    def check(self, graph: Graph, match: BranchSum) -> str | None:
        # Collect again: an earlier rewrite in this run may have replaced the shared input.
        match.adds, match.terms = self._collect(match.root)
        source = self._shared_input(match.terms)
        if source is None:
            return "its terms no longer read a common input"
        match.source = source
        x, out = match.source, match.root.outputs[0]
        x_shape, out_shape = Graph.static_shape(x), Graph.static_shape(out)
        if x_shape is None or out_shape is None or len(x_shape) < 3:
            return "the input or the sum has no static N,C,spatial shape"
        tree = {id(n) for n in match.adds}
        branches = []
        for term in match.terms:
            branch = self._branch(graph, term, x, x_shape, out_shape, tree)
            if isinstance(branch, str):
                return branch
            branches.append(branch)
        convs = [b for b in branches if b.kind == "conv"]
        strides = {b.strides for b in branches if b.strides} | ({(1,) * (len(x_shape) - 2)}
                                                                if len(convs) < len(branches) else set())
        if len(strides) > 1:
            return f"branches have different strides: {' vs '.join(map(_fmt, sorted(strides)))}"
        groups = {b.group for b in convs}
        if len(groups) > 1:
            return f"branches have different groups: {' vs '.join(map(str, sorted(groups)))}"
        reason = self._padding_problem(branches)
        if reason is not None:
            return reason
        match.branches = branches
        return None

    def _branch(self, graph: Graph, term: ir.Value, x: ir.Value, x_shape: tuple[int, ...],
                out_shape: tuple[int, ...], tree: set[int]) -> _Branch | str:
        """The term as a branch of x (Cases 1-3), or why it is not one."""
        rank = len(x_shape) - 2
        if term is x or (term.producer() is not None and term.producer().op_type == "BatchNormalization"
                         and term.producer().inputs[0] is x):
            if x_shape[1] != out_shape[1]:
                return f"an identity branch needs Cin == Cout, but the input has {x_shape[1]} channels " \
                       f"and the sum {out_shape[1]}"
            if x_shape != out_shape:
                return f"identity branch shape {list(x_shape)} is broadcast to the sum's {list(out_shape)}"
        if term is x:
            return _Branch("identity", term, kernel=(1,) * rank, begin_pads=(0,) * rank, end_pads=(0,) * rank)
        node = term.producer()
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "BatchNormalization"):
            what = node_label(node) if node is not None else repr(term.name)
            return f"branch {what} is not a Conv, BatchNormalization or identity of {x.name} (not known to be linear)"
        if node.inputs[0] is not x:  # e.g. an unfolded BN(Conv(x)): FoldBatchNormPass runs first
            return f"branch {node_label(node)} reads {node.inputs[0].name}, not the shared input {x.name}"
        if Graph.static_shape(term) != out_shape:
            return f"branch {node_label(node)} is broadcast to the sum's shape"
        if term.is_graph_output() or any(id(user) not in tree for user, _ in term.uses()):
            return f"the output of branch {node_label(node)} is read elsewhere"
        params = [v for v in node.inputs[1:] if v is not None]
        if any(Graph.constant(v) is None for v in params):
            return f"the weights of branch {node_label(node)} are not constant initializers"
        if any(len(v.uses()) > 1 for v in params):
            return f"the weights of branch {node_label(node)} are shared with other nodes"
        if node.op_type == "BatchNormalization":
            affine = batch_norm_as_affine(graph, node)
            if isinstance(affine, str):
                return f"branch {node_label(node)}: {affine}"
            return _Branch("bn", term, node, kernel=(1,) * rank, begin_pads=(0,) * rank, end_pads=(0,) * rank,
                           affine=affine)
        # Case 1: a Conv; its geometry is checked against the other branches in `check`.
        weight = Graph.constant(node.inputs[1])
        kernel = tuple(weight.shape[2:])
        if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return f"branch {node_label(node)} uses auto_pad {_attr(node, 'auto_pad', '')}, not explicit pads"
        if any(d != 1 for d in _attr(node, "dilations", (1,) * rank)):
            return f"branch {node_label(node)} has dilation {_fmt(_attr(node, 'dilations', ()))}, not 1"
        pads = tuple(_attr(node, "pads", (0,) * 2 * rank)) if _attr(node, "auto_pad", "NOTSET") == "NOTSET" \
            else (0,) * 2 * rank
        return _Branch("conv", term, node, kernel=kernel, strides=tuple(_attr(node, "strides", (1,) * rank)),
                       begin_pads=pads[:rank], end_pads=pads[rank:], group=_attr(node, "group", 1))

    @staticmethod
    def _padding_problem(branches: list[_Branch]) -> str | None:
        """None when every kernel sits inside the largest one reading the same pixels."""
        for d in range(len(branches[0].kernel)):
            big = max(branches, key=lambda b: b.kernel[d])
            for b in branches:
                offset = big.begin_pads[d] - b.begin_pads[d]
                if not 0 <= offset <= big.kernel[d] - b.kernel[d]:
                    return (f"branch paddings do not line up: {b.label()} pads {b.begin_pads[d]} at the start "
                            f"of axis {d + 2}, {big.label()} pads {big.begin_pads[d]}")
        return None

    # -- rewrite -----------------------------------------------------------------------
    def rewrite(self, graph: Graph, match: BranchSum) -> str:
        branches, x, out = match.branches, match.source, match.root.outputs[0]
        convs = [b for b in branches if b.kind == "conv"]
        rank = len(convs[0].kernel)
        # Per axis, a branch with the largest kernel fixes the merged kernel size and padding.
        widest = [max(branches, key=lambda b, d=d: b.kernel[d]) for d in range(rank)]
        kernel = [widest[d].kernel[d] for d in range(rank)]
        begin = [widest[d].begin_pads[d] for d in range(rank)]
        end = [widest[d].end_pads[d] for d in range(rank)]
        anchor = max(convs, key=lambda b: np.prod(b.kernel))  # lends its name to the merged conv
        group, channels_out = convs[0].group, Graph.static_shape(out)[1]
        dtype = Graph.constant(convs[0].node.inputs[1]).dtype
        per_group_in = Graph.static_shape(x)[1] // group
        weight = np.zeros((channels_out, per_group_in, *kernel), np.float64)
        bias = np.zeros(channels_out, np.float64)
        for b in branches:
            # The branch kernel's offset inside the merged one: same input pixels (module docstring).
            at = tuple(slice(begin[d] - b.begin_pads[d], begin[d] - b.begin_pads[d] + b.kernel[d])
                       for d in range(rank))
            if b.kind == "conv":  # Case 1
                weight[(slice(None), slice(None), *at)] += Graph.constant(b.node.inputs[1])
                if len(b.node.inputs) > 2 and b.node.inputs[2] is not None:
                    bias += Graph.constant(b.node.inputs[2])
                continue
            # Case 3 scales the identity by BN's s and adds its t.
            scale, shift = b.affine if b.kind == "bn" else (np.ones(channels_out), np.zeros(channels_out))
            channel = np.arange(channels_out)
            # Case 2: output channel c reads input channel c, local index c mod (C/g) in its group.
            weight[(channel, channel % per_group_in, *(s.start for s in at))] += scale
            bias += shift

        base = anchor.node.inputs[1].name
        weight_value = add_initializer(graph, weight.astype(dtype), f"{base}_merged")
        bias_value = add_initializer(graph, bias.astype(dtype), f"{base}_merged_bias")
        merged = ir.node(
            "Conv", [x, weight_value, bias_value],
            {"kernel_shape": kernel, "strides": list(anchor.strides), "pads": [*begin, *end],
             "dilations": [1] * rank, "group": group},
            name=anchor.node.name,
        )
        result = merged.outputs[0]
        result.shape, result.type = out.shape, out.type
        graph.main.insert_before(match.root, merged)

        old_name = out.name
        out.replace_all_uses_with(result, replace_graph_outputs=True)
        producers = {id(b.node): b.node for b in branches if b.node is not None}
        params = [v for n in producers.values() for v in n.inputs[1:] if v is not None]
        graph.main.remove([*match.adds, *producers.values()], safe=True)
        result.name = old_name  # the sum's value name (maybe a graph output) is kept
        for value in params:  # the branches' own weights, now read by nobody
            drop_if_unused(graph, value)
        kinds = ", ".join(b.label() for b in branches)
        return (f"merged {len(branches)} branches of {x.name} ({kinds}) summed by "
                f"{len(match.adds)} {match.root.op_type} node(s) into {node_label(merged)} "
                f"{'x'.join(map(str, kernel))}")


def _fmt(values) -> str:
    values = tuple(values)
    return str(values[0]) if len(set(values)) == 1 else str(values)
