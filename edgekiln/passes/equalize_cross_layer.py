"""EqualizeCrossLayerPass: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization").

For two convolutions in a row, conv1 -> [act] -> conv2, where act is positive homogeneous
(act(x / s) = act(x) / s for s > 0: Relu, or no activation), channel i of conv1's output can
be divided by any s_i > 0 if conv2's input channel i is multiplied by s_i:

    W1[i] /= s_i,  b1[i] /= s_i,  W2[:, i] *= s_i          (the function is unchanged)

With r1_i = max|W1[i]| (output channel i of conv1) and r2_i = max|W2[:, i]| (input channel i
of conv2), s_i = sqrt(r1_i / r2_i) makes both ranges sqrt(r1_i · r2_i): every channel gets
the same share of the quantization grid instead of a few wide channels (typical after folding
BatchNorm into a depthwise conv, the MobileNet case) swamping the rest.  conv2 may be grouped
(depthwise included): channel i is then column i mod (C/g) of the rows of its group.  A
channel with a zero range keeps s_i = 1.

In a chain (expand -> depthwise -> project) one conv belongs to two pairs, so equalizing one
pair perturbs the next; the pass sweeps over all pairs until every s_i is within 1e-4 of 1
(at most `max_sweeps`), working in float64 and writing float32 once.  A pair whose scales are
all within `tolerance` (5 %) of 1 is already equalized: this is what makes a second run a no-op.

Not rewritten (reason reported): an activation that is not positive homogeneous
(HardSwish, Sigmoid, LeakyRelu has alpha·x on both sides so it would be but is left out,
Clip with a lower bound other than 0, and Clip with a finite upper bound: Relu6(x / s) !=
Relu6(x) / s), conv1's output or the activation's output read by another node or a graph
output, non-constant weights, a channel-count mismatch.

`relu6_as_relu=True` does what the paper did for MobileNetV2: a Clip(0, 6) between the pair
is replaced by Relu before equalizing.  This CHANGES the model wherever an activation exceeded
6; the applied message says so.  Off by default.

Runs on the float graph BEFORE fusion (the simplify stage of a quantized compile), after
BatchNorm folding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import Pass, PassResult, node_label
from edgekiln.passes.graph_edits import drop_if_unused, int_attr, set_constant_input

_DEFAULT = ("", "ai.onnx")


@dataclass
class _Pair:
    conv1: ir.Node
    conv2: ir.Node
    activation: ir.Node | None
    relu6: bool = False  # the activation is Clip(0, 6) and will become Relu


class EqualizeCrossLayerPass(Pass):
    name = "equalize-cross-layer"

    def __init__(self, relu6_as_relu: bool = False, tolerance: float = 0.05, max_sweeps: int = 100) -> None:
        self.relu6_as_relu = relu6_as_relu
        self.tolerance = tolerance
        self.max_sweeps = max_sweeps

    def run(self, graph: Graph) -> PassResult:
        result = PassResult(graph, changed=False)
        pairs = []
        for conv1 in graph.main:
            if not _is_conv(conv1):
                continue
            pair, reason = self._pair(conv1)
            if pair is None:
                if reason is not None:
                    result.not_applied.append(f"{node_label(conv1)}: {reason}")
                continue
            pairs.append(pair)
        if not pairs:
            return result
        weights = {id(n): Graph.constant(n.inputs[1]).astype(np.float64) for p in pairs for n in (p.conv1, p.conv2)}
        biases = {id(p.conv1): Graph.constant(p.conv1.inputs[2]).astype(np.float64)
                  for p in pairs if len(p.conv1.inputs) > 2 and p.conv1.inputs[2] is not None}
        # Pairs in a chain share convs, so either all pairs are swept together or none is.
        worst_first = max(float(np.max(np.abs(self._scales(weights, p) - 1))) for p in pairs)
        if worst_first <= self.tolerance:
            result.not_applied += [f"{node_label(p.conv1)} -> {node_label(p.conv2)}: already equalized "
                                   f"(every |s - 1| <= {self.tolerance})" for p in pairs]
            return result
        todo = pairs
        gain = {id(p.conv1): _spread(weights[id(p.conv1)]) for p in todo}
        for _ in range(self.max_sweeps):
            worst = 0.0
            for pair in todo:
                s = self._scales(weights, pair)
                worst = max(worst, float(np.max(np.abs(s - 1))))
                weights[id(pair.conv1)] /= s.reshape(-1, *[1] * (weights[id(pair.conv1)].ndim - 1))
                if id(pair.conv1) in biases:
                    biases[id(pair.conv1)] /= s
                weights[id(pair.conv2)] *= _input_channel_map(pair.conv2, weights[id(pair.conv2)], s)
            if worst < 1e-4:
                break
        touched = {id(n): n for p in todo for n in (p.conv1, p.conv2)}
        for key, node in touched.items():
            set_constant_input(graph, node, 1, weights[key].astype(np.float32), f"{node.inputs[1].name}_equalized")
            if key in biases:
                set_constant_input(graph, node, 2, biases[key].astype(np.float32), f"{node.inputs[2].name}_equalized")
        for pair in todo:
            message = (f"equalized {node_label(pair.conv1)} -> {node_label(pair.conv2)}: output channel weight "
                       f"range spread (max/min) {gain[id(pair.conv1)]:.3g} -> {_spread(weights[id(pair.conv1)]):.3g}")
            if pair.relu6:
                _relu6_to_relu(graph, pair.activation)
                message += (f"; replaced Relu6 {node_label(pair.activation)} by Relu (relu6_as_relu: outputs "
                            f"change where it exceeded 6)")
            result.applied.append(message)
        result.changed = True
        return result

    # -- matching -----------------------------------------------------------------------
    def _pair(self, conv1: ir.Node) -> tuple[_Pair | None, str | None]:
        """conv1 -> [act] -> conv2, or (None, reason); reason None when conv1 simply feeds no conv."""
        value = conv1.outputs[0]
        readers = _readers(value)
        activation = None
        relu6 = False
        if len(readers) == 1 and readers[0].op_type in ("Relu", "Clip") and readers[0].domain in _DEFAULT:
            activation = readers[0]
            problem, relu6 = self._activation_problem(activation)
            if problem is not None:
                return None, problem
            if value.is_graph_output():
                return None, f"its output {value.name!r} is a graph output"
            value = activation.outputs[0]
            readers = _readers(value)
        convs = [r for r in readers if _is_conv(r) and r.inputs[0] is value]
        if not convs:
            if len(readers) == 1 and readers[0].op_type in ("HardSwish", "Sigmoid", "Tanh", "LeakyRelu",
                                                            "HardSigmoid"):
                return None, f"{node_label(readers[0])} is not positive homogeneous: act(x/s) != act(x)/s"
            return None, None
        if len(readers) > 1 or value.is_graph_output():
            other = next((r for r in readers if r is not convs[0]), None)
            where = f"also read by {node_label(other)}" if other is not None else "a graph output"
            return None, f"the value {value.name!r} it feeds to {node_label(convs[0])} is {where}"
        conv2 = convs[0]
        w1, w2 = Graph.constant(conv1.inputs[1]), Graph.constant(conv2.inputs[1])
        if w1 is None or w2 is None:
            return None, f"a weight of {node_label(conv1)} or {node_label(conv2)} is not a constant"
        if len(conv1.inputs) > 2 and conv1.inputs[2] is not None and Graph.constant(conv1.inputs[2]) is None:
            return None, "its bias is not a constant"
        if w2.shape[1] * int_attr(conv2, "group", 1) != w1.shape[0]:
            return None, (f"{node_label(conv2)} reads {w2.shape[1] * int_attr(conv2, 'group', 1)} channels, "
                          f"{node_label(conv1)} writes {w1.shape[0]}")
        return _Pair(conv1, conv2, activation, relu6), None

    def _activation_problem(self, node: ir.Node) -> tuple[str | None, bool]:
        if node.op_type == "Relu":
            return None, False
        bounds = []
        for index in (1, 2):
            value = node.inputs[index] if len(node.inputs) > index else None
            array = Graph.constant(value) if value is not None else None
            if value is not None and (array is None or array.size != 1):
                return f"{node_label(node)} has a bound that is not a constant scalar", False
            bounds.append(float(array.reshape(())) if array is not None else None)
        low, high = bounds
        if low is not None and low != 0.0:
            return f"{node_label(node)} clips below at {low}, not 0: not positive homogeneous", False
        if high is None or not np.isfinite(high) or high >= float(np.finfo(np.float32).max):
            return None, False
        if self.relu6_as_relu and low == 0.0 and high == 6.0:
            return None, True
        return (f"{node_label(node)} clips at {high}: Clip(x/s) != Clip(x)/s for a finite upper bound "
                f"(relu6_as_relu=True replaces Relu6 by Relu, as the paper does, changing the model)"), False

    @staticmethod
    def _scales(weights: dict[int, np.ndarray], pair: _Pair) -> np.ndarray:
        w1, w2 = weights[id(pair.conv1)], weights[id(pair.conv2)]
        r1 = np.max(np.abs(w1.reshape(w1.shape[0], -1)), axis=1)
        r2 = _input_channel_ranges(pair.conv2, w2)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.sqrt(r1 / r2)
        return np.where((r1 > 0) & (r2 > 0) & np.isfinite(s), s, 1.0)


# -- helpers -----------------------------------------------------------------------------
def _is_conv(node: ir.Node) -> bool:
    return node.op_type == "Conv" and node.domain in _DEFAULT and len(node.inputs) > 1


def _readers(value: ir.Value) -> list[ir.Node]:
    return list(dict.fromkeys(user for user, _ in value.uses()))


def _input_channel_index(conv: ir.Node, w: np.ndarray) -> np.ndarray:
    """For each (output row, column) of `w`, the global input channel it reads: shape w.shape[:2]."""
    groups = int_attr(conv, "group", 1)
    out_per_group, in_per_group = w.shape[0] // groups, w.shape[1]
    group_of_row = np.arange(w.shape[0]) // out_per_group
    return group_of_row[:, None] * in_per_group + np.arange(in_per_group)[None, :]


def _input_channel_ranges(conv: ir.Node, w: np.ndarray) -> np.ndarray:
    """r2_i = max|W2| over every weight that reads input channel i."""
    index = _input_channel_index(conv, w)
    peaks = np.max(np.abs(w.reshape(w.shape[0], w.shape[1], -1)), axis=2)
    ranges = np.zeros(int(index.max()) + 1)
    np.maximum.at(ranges, index.reshape(-1), peaks.reshape(-1))
    return ranges


def _input_channel_map(conv: ir.Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """s spread onto w's (row, column) grid, broadcastable against w."""
    return s[_input_channel_index(conv, w)].reshape(*w.shape[:2], *[1] * (w.ndim - 2))


def _spread(w: np.ndarray) -> float:
    """max / min of the per-output-channel weight ranges (1 is perfectly even)."""
    r = np.max(np.abs(w.reshape(w.shape[0], -1)), axis=1)
    r = r[r > 0]
    return float(r.max() / r.min()) if r.size else 1.0


def _relu6_to_relu(graph: Graph, clip: ir.Node) -> None:
    """Drop the Clip's upper bound: Clip(x, 0) is Relu (kept a Clip so names and readers stay put)."""
    bound = clip.inputs[2]
    clip.replace_input_with(2, None)
    clip.resize_inputs(2)
    drop_if_unused(graph, bound)
