"""Float kernel calls (and the ONNX data movement ops on int8): one-node ONNX models run by
`onnx.reference.ReferenceEvaluator`, the ONNX specification's own executable semantics.

A call's op is the ONNX op type (`lowering.py`); edgekiln's fused ops ("FusedConv" with
`attrs["epilogue"]`, "Gelu", "GeluTanh") are rebuilt as the model-local functions of
`compiler/fused_ops.py`.  The Program does not record the model's opset: the canonical
opset 17 is used unless the op's schema there cannot take the call's attributes or inputs,
then the nearest opset that can.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx.inliner
import onnx_ir as ir
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgekiln.compiler import fused_ops
from edgekiln.compiler.program import KernelCall, Program
from edgekiln.errors import UnsupportedOpError

CANONICAL_OPSET = 17
_OPSET_CANDIDATES = (17, 18, 19, 20, 21, 16, 15, 14, 13)
_STANDALONE = {"Gelu": "none", "GeluTanh": "tanh"}
_A = onnx.AttributeProto


def build_evaluator(program: Program, call: KernelCall) -> ReferenceEvaluator:
    """A ReferenceEvaluator of `call` alone; feeds are named i0, i1, ... after its inputs."""
    inputs = [f"i{k}" if name else "" for k, name in enumerate(call.inputs)]
    outputs = [f"o{k}" if name else "" for k, name in enumerate(call.outputs)]
    value_infos = [helper.make_tensor_value_info(f"i{k}", _elem_type(program, name), None)
                   for k, name in enumerate(call.inputs) if name]
    out_infos = [helper.make_tensor_value_info(f"o{k}", _elem_type(program, name), None)
                 for k, name in enumerate(call.outputs) if name]
    attrs = dict(call.attrs)
    epilogue = attrs.pop("epilogue", None)
    if epilogue is not None or call.op in _STANDALONE:
        op_type = fused_ops.fused_op_type(call.op, epilogue) if epilogue is not None else call.op
        types = _fused_attr_types(call.op, epilogue or ())
        node = helper.make_node(op_type, inputs, outputs, domain=fused_ops.DOMAIN,
                                **{k: _convert(v, types.get(k), program, call) for k, v in attrs.items()})
        opset = CANONICAL_OPSET
    else:
        opset, types = _pick_opset(call)
        node = helper.make_node(call.op, inputs, outputs,
                                **{k: _convert(v, types.get(k), program, call) for k, v in attrs.items()})
    graph = helper.make_graph([node], call.name, value_infos, out_infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if node.domain == fused_ops.DOMAIN:
        model_ir = ir.serde.deserialize_model(model)
        if call.op in _STANDALONE:
            fused_ops.ensure_gelu_function(model_ir, _STANDALONE[call.op])
        else:
            fused_ops.ensure_fused_function(model_ir, call.op, epilogue)
        # ReferenceEvaluator cannot run a function whose body references an attribute the
        # node leaves out (Conv's auto_pad); the inliner drops such references.
        model = onnx.inliner.inline_local_functions(ir.serde.serialize_model(model_ir))
    return ReferenceEvaluator(model)


def run_float_call(evaluator: ReferenceEvaluator, call: KernelCall, args: list[Any]) -> list[np.ndarray | None]:
    feeds = {f"i{k}": value for k, value in enumerate(args) if call.inputs[k]}
    results = evaluator.run(None, feeds)
    produced = iter(results)
    return [np.asarray(next(produced)) if name else None for name in call.outputs]


def _elem_type(program: Program, name: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(program.tensors[name].dtype))


def _pick_opset(call: KernelCall) -> tuple[int, dict[str, int]]:
    for opset in _OPSET_CANDIDATES:
        try:
            schema = onnx.defs.get_schema(call.op, opset, "")
        except onnx.defs.SchemaError:
            continue
        if not set(call.attrs) <= set(schema.attributes):
            continue
        if len(call.inputs) > len(schema.inputs) and not any(
                p.option == onnx.defs.OpSchema.FormalParameterOption.Variadic for p in schema.inputs):
            continue
        return opset, {k: int(a.type) for k, a in schema.attributes.items()}
    raise UnsupportedOpError(f"call {call.name!r}: op {call.op!r} with attributes {sorted(call.attrs)} is not an "
                             "ONNX operator the reference interpreter can run")


def _fused_attr_types(base: str, epilogue: Any) -> dict[str, int]:
    if base in _STANDALONE:
        return {}
    types = {name: kind for name, kind in fused_ops.BASES[base][1]}
    for step in epilogue:
        types.update({name: _A.FLOAT for name in fused_ops.ACTIVATIONS.get(step, ())})
    return types


def _convert(value: Any, kind: int | None, program: Program, call: KernelCall) -> Any:
    """A JSON attribute value back to what onnx.helper needs for the schema's type."""
    if kind == _A.FLOAT:
        return float(value)
    if kind == _A.INT:
        return int(value)
    if kind == _A.FLOATS:
        return [float(v) for v in value]
    if kind == _A.INTS:
        return [int(v) for v in value]
    if kind == _A.TENSOR:  # e.g. ConstantOfShape's value: the output's dtype
        dtype = np.dtype(program.tensors[call.outputs[0]].dtype)
        return numpy_helper.from_array(np.array(value, dtype=dtype))
    return value
