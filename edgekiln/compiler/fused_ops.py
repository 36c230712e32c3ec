"""edgekiln's fused operators, as model-local ONNX functions in the `edgekiln` domain.

A fused node is one node that a backend lowers to one kernel, yet the graph stays valid
ONNX that onnxruntime runs (it inlines model-local functions) and Netron opens:

    FusedConv<epilogue>(X, W, B[, R])    = epilogue(Conv(X, W, B))
    FusedGemm<epilogue>(A, B, C[, R])    = epilogue(Gemm(A, B, C))
    FusedMatMul<epilogue>(A, B, bias[, R]) = epilogue(MatMul(A, B) + bias)
    Gelu(X), GeluTanh(X)                 = the exact / tanh GELU (ONNX Gelu needs opset 20)

The epilogue is a short sequence of steps applied to the accumulator, in order:
"Add" adds the residual input R (same shape as the output), the others are one
activation each.  At most one "Add" and one activation: that is what one kernel's
epilogue does.  The op type spells the steps, e.g. `FusedConvAddRelu` = Relu(Conv + R).

One function is defined per op type; per-node numbers (Conv strides and pads, Clip bounds,
LeakyRelu alpha, ...) are node attributes that the function body references, so nodes with
the same epilogue share one definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx
import onnx_ir as ir
from onnx import helper

DOMAIN = "edgekiln"
DOMAIN_VERSION = 1
BODY_OPSET = 17

# activation -> the node attributes (float) its body references
ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "Relu": (),
    "Clip": ("act_min", "act_max"),
    "LeakyRelu": ("act_alpha",),
    "HardSigmoid": ("act_alpha", "act_beta"),
    "HardSwish": (),
    "Sigmoid": (),
    "Tanh": (),
    "SiLU": (),
    "Gelu": (),
    "GeluTanh": (),
}
RESIDUAL = "Add"

# base op -> (inputs before the residual, attributes passed through to the core node)
BASES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, int], ...]]] = {
    "FusedConv": (("X", "W", "B"), (("auto_pad", onnx.AttributeProto.STRING),
                                    ("dilations", onnx.AttributeProto.INTS),
                                    ("group", onnx.AttributeProto.INT),
                                    ("kernel_shape", onnx.AttributeProto.INTS),
                                    ("pads", onnx.AttributeProto.INTS),
                                    ("strides", onnx.AttributeProto.INTS))),
    "FusedGemm": (("A", "B", "C"), (("alpha", onnx.AttributeProto.FLOAT),
                                    ("beta", onnx.AttributeProto.FLOAT),
                                    ("transA", onnx.AttributeProto.INT),
                                    ("transB", onnx.AttributeProto.INT))),
    "FusedMatMul": (("A", "B", "bias"), ()),
}


def fused_op_type(base: str, epilogue: Sequence[str]) -> str:
    """`('FusedConv', ['Add', 'Relu'])` -> `'FusedConvAddRelu'` (after checking the epilogue)."""
    _check_epilogue(base, epilogue)
    return base + "".join(epilogue)


def parse_fused_op_type(op_type: str) -> tuple[str, tuple[str, ...]] | None:
    """The inverse of `fused_op_type`; None for anything that is not a fused op."""
    for base in sorted(BASES, key=len, reverse=True):
        if op_type.startswith(base):
            rest, steps = op_type[len(base):], []
            while rest:
                step = next((s for s in (RESIDUAL, *ACTIVATIONS) if rest.startswith(s)
                             and not (s == "Gelu" and rest.startswith("GeluTanh"))), None)
                if step is None:
                    return None
                steps.append(step)
                rest = rest[len(step):]
            return base, tuple(steps)
    return None


def _check_epilogue(base: str, epilogue: Sequence[str]) -> None:
    if base not in BASES:
        raise ValueError(f"unknown fused base op {base!r}")
    activations = [s for s in epilogue if s != RESIDUAL]
    if any(s not in ACTIVATIONS for s in activations):
        raise ValueError(f"unknown epilogue step in {list(epilogue)}")
    if len(activations) > 1 or list(epilogue).count(RESIDUAL) > 1:
        raise ValueError(f"an epilogue has at most one activation and one residual Add, got {list(epilogue)}")


def ensure_fused_function(model: ir.Model, base: str, epilogue: Sequence[str]) -> str:
    """Define the function for `base` + `epilogue` in `model` (once) and return its op type."""
    op_type = fused_op_type(base, epilogue)
    if (DOMAIN, op_type, "") not in model.functions:
        _add_function(model, _fused_function_proto(base, tuple(epilogue), op_type))
    return op_type


def ensure_gelu_function(model: ir.Model, approximate: str = "none") -> str:
    """Define the standalone `Gelu` (erf) or `GeluTanh` function and return its op type."""
    op_type = "Gelu" if approximate == "none" else "GeluTanh"
    if (DOMAIN, op_type, "") not in model.functions:
        nodes = _activation_nodes(op_type, "X", "Y")
        proto = helper.make_function(DOMAIN, op_type, ["X"], ["Y"], nodes,
                                     [helper.make_opsetid("", BODY_OPSET)], attributes=[])
        _add_function(model, proto)
    return op_type


def _add_function(model: ir.Model, proto: onnx.FunctionProto) -> None:
    # The checker wants a function to import the model's own default opset; the body ops
    # (Conv, Gemm, MatMul, Add, activations, Constant) mean the same from opset 17 to 22.
    model_opset = model.opset_imports.get("", BODY_OPSET)
    del proto.opset_import[:]
    proto.opset_import.append(helper.make_opsetid("", max(BODY_OPSET, model_opset)))
    function = ir.serde.deserialize_function(proto)
    model.functions[function.identifier()] = function
    model.opset_imports.setdefault(DOMAIN, DOMAIN_VERSION)
    model.ir_version = max(model.ir_version, 8)  # model-local functions need IR v8


def _ref(name: str, attr_type: int) -> onnx.AttributeProto:
    attribute = onnx.AttributeProto()
    attribute.name, attribute.ref_attr_name, attribute.type = name, name, attr_type
    return attribute


def _fused_function_proto(base: str, epilogue: tuple[str, ...], op_type: str) -> onnx.FunctionProto:
    core_inputs, passthrough = BASES[base]
    inputs = list(core_inputs) + (["R"] if RESIDUAL in epilogue else [])
    if base == "FusedMatMul":
        nodes = [helper.make_node("MatMul", ["A", "B"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["t0"])]
    else:
        core = helper.make_node(base.removeprefix("Fused"), list(core_inputs), ["t0"])
        core.attribute.extend(_ref(name, kind) for name, kind in passthrough)
        nodes = [core]
    current = "t0"
    for index, step in enumerate(epilogue, start=1):
        out = "Y" if index == len(epilogue) else f"t{index}"
        if step == RESIDUAL:
            nodes.append(helper.make_node("Add", [current, "R"], [out]))
        else:
            nodes.extend(_activation_nodes(step, current, out, prefix=f"s{index}_"))
        current = out
    if not epilogue:
        nodes.append(helper.make_node("Identity", [current], ["Y"]))
    attributes = [name for name, _ in passthrough]
    attributes += [a for step in epilogue for a in ACTIVATIONS.get(step, ())]
    return helper.make_function(DOMAIN, op_type, inputs, ["Y"], nodes, [helper.make_opsetid("", BODY_OPSET)],
                                attributes=attributes)


def _activation_nodes(kind: str, x: str, y: str, prefix: str = "") -> list[onnx.NodeProto]:
    """Body nodes computing `y = kind(x)`; parameters come from the fused node's attributes."""
    p = prefix
    if kind in ("Relu", "HardSwish", "Sigmoid", "Tanh"):
        return [helper.make_node(kind, [x], [y])]
    if kind == "Clip":
        low = helper.make_node("Constant", [], [p + "min"])
        low.attribute.append(_value_float_ref("act_min"))
        high = helper.make_node("Constant", [], [p + "max"])
        high.attribute.append(_value_float_ref("act_max"))
        return [low, high, helper.make_node("Clip", [x, p + "min", p + "max"], [y])]
    if kind == "LeakyRelu":
        node = helper.make_node("LeakyRelu", [x], [y])
        node.attribute.append(_ref_as("alpha", "act_alpha", onnx.AttributeProto.FLOAT))
        return [node]
    if kind == "HardSigmoid":
        node = helper.make_node("HardSigmoid", [x], [y])
        node.attribute.extend([_ref_as("alpha", "act_alpha", onnx.AttributeProto.FLOAT),
                               _ref_as("beta", "act_beta", onnx.AttributeProto.FLOAT)])
        return [node]
    if kind == "SiLU":
        return [helper.make_node("Sigmoid", [x], [p + "sig"]), helper.make_node("Mul", [x, p + "sig"], [y])]
    if kind == "Gelu":  # 0.5·x·(1 + erf(x/√2))
        return [
            _scalar(p + "inv_sqrt2", 1 / math.sqrt(2)), _scalar(p + "half", 0.5), _scalar(p + "one", 1.0),
            helper.make_node("Mul", [x, p + "inv_sqrt2"], [p + "scaled"]),
            helper.make_node("Erf", [p + "scaled"], [p + "erf"]),
            helper.make_node("Add", [p + "erf", p + "one"], [p + "shifted"]),
            helper.make_node("Mul", [x, p + "shifted"], [p + "prod"]),
            helper.make_node("Mul", [p + "prod", p + "half"], [y]),
        ]
    if kind == "GeluTanh":  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        return [
            _scalar(p + "k", math.sqrt(2 / math.pi)), _scalar(p + "c", 0.044715), _scalar(p + "half", 0.5),
            _scalar(p + "one", 1.0), _scalar(p + "three", 3.0),
            helper.make_node("Pow", [x, p + "three"], [p + "cube"]),
            helper.make_node("Mul", [p + "cube", p + "c"], [p + "cubic"]),
            helper.make_node("Add", [x, p + "cubic"], [p + "inner"]),
            helper.make_node("Mul", [p + "inner", p + "k"], [p + "arg"]),
            helper.make_node("Tanh", [p + "arg"], [p + "tanh"]),
            helper.make_node("Add", [p + "tanh", p + "one"], [p + "shifted"]),
            helper.make_node("Mul", [x, p + "shifted"], [p + "prod"]),
            helper.make_node("Mul", [p + "prod", p + "half"], [y]),
        ]
    raise ValueError(f"unknown activation {kind!r}")


def _ref_as(name: str, ref: str, attr_type: int) -> onnx.AttributeProto:
    attribute = _ref(name, attr_type)
    attribute.ref_attr_name = ref
    return attribute


def _value_float_ref(ref: str) -> onnx.AttributeProto:
    return _ref_as("value_float", ref, onnx.AttributeProto.FLOAT)


def _scalar(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value_float=value)
