"""Compare a .tflite model run in LiteRT with the integer reference, tensor by tensor.

Two comparisons, each giving the share of elements exactly equal and the largest
|difference| in LSB:

* per op, isolated (`per_op`): each Program call is written as a one-op .tflite and run on
  the reference's own int8 inputs of that call, so a difference is that op's alone;
* chained (`tensors`, `outputs`): the whole model, both sides from the same int8 graph
  inputs (the Program's Quantize of the float feeds), every Program tensor read back from
  LiteRT (all tensors preserved) and converted from NHWC to the Program's layout.  Here a
  1-LSB difference early on propagates and can grow through later layers.

The integer reference is the definition of correct; TFLite's reference kernels may differ
by 1 LSB per op where they round differently (see `tflite_program_converter.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgekiln.backends.edgetpu.litert_interpreter import RESOLVER, make_interpreter
from edgekiln.backends.edgetpu.tflite_program_converter import (
    ProgramConverter,
    TfliteConversion,
)
from edgekiln.backends.edgetpu.tflite_writer import convert_program
from edgekiln.backends.reference.interpreter import run_program
from edgekiln.compiler.program import ArenaPlan, KernelCall, Program


@dataclass(frozen=True)
class TensorComparison:
    tensor: str
    op: str              # the Program op that writes it
    elements: int
    equal: int
    max_diff: int

    @property
    def equal_share(self) -> float:
        return self.equal / self.elements if self.elements else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "op": self.op, "elements": self.elements,
                "equal_share": self.equal_share, "max_diff": self.max_diff}


@dataclass
class VerificationReport:
    resolver: str
    tensors: list[TensorComparison] = field(default_factory=list)
    outputs: list[TensorComparison] = field(default_factory=list)
    per_op: list[TensorComparison] = field(default_factory=list)

    @property
    def max_diff(self) -> int:
        return max((c.max_diff for c in self.tensors), default=0)

    @property
    def per_op_max_diff(self) -> int:
        return max((c.max_diff for c in self.per_op), default=0)

    @property
    def per_op_equal_share(self) -> float:
        total = sum(c.elements for c in self.per_op)
        return sum(c.equal for c in self.per_op) / total if total else 1.0

    @property
    def output_max_diff(self) -> int:
        return max((c.max_diff for c in self.outputs), default=0)

    @property
    def output_equal_share(self) -> float:
        total = sum(c.elements for c in self.outputs)
        return sum(c.equal for c in self.outputs) / total if total else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"resolver": self.resolver, "max_diff": self.max_diff, "output_max_diff": self.output_max_diff,
                "output_equal_share": self.output_equal_share, "per_op_max_diff": self.per_op_max_diff,
                "per_op_equal_share": self.per_op_equal_share, "tensors": [c.to_json() for c in self.tensors],
                "outputs": [c.to_json() for c in self.outputs], "per_op": [c.to_json() for c in self.per_op]}

    def to_text(self) -> str:
        lines = [f"LiteRT ({self.resolver}) vs integer reference",
                 f"  per op (isolated): {self.per_op_equal_share:.2%} equal, max diff {self.per_op_max_diff} LSB",
                 f"  model outputs (chained): {self.output_equal_share:.2%} equal, max diff {self.output_max_diff} LSB",
                 "  op                   tensor                                    isolated          chained"]
        chained = {c.tensor: c for c in self.tensors}
        for c in self.per_op:
            whole = chained.get(c.tensor)
            tail = f"{whole.equal_share:8.2%} ±{whole.max_diff}" if whole else ""
            lines.append(f"  {c.op:<20} {c.tensor[-40:]:<40} {c.equal_share:8.2%} ±{c.max_diff}   {tail}")
        return "\n".join(lines)


def _reference_values(program: Program, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every int8 tensor a call writes, from the integer reference."""
    written = [n for c in program.calls for n in c.outputs if n and program.tensors[n].dtype == "int8"]
    everything = Program(tensors=program.tensors, constants=program.constants, calls=program.calls,
                         inputs=program.inputs, outputs=list(dict.fromkeys(written + list(program.outputs))),
                         arena=program.arena)
    return run_program(everything, feeds)


def one_call_program(program: Program, call: KernelCall) -> Program:
    """`call` alone as a Program: its activation inputs become int8 graph inputs, its outputs graph outputs."""
    activations = [n for n in dict.fromkeys(call.inputs) if n and n not in program.constants]
    outputs = [n for n in call.outputs if n]
    tensors = {}
    for name in [*call.inputs, *outputs]:
        if not name:
            continue
        spec = program.tensors[name]
        kind = "input" if name in activations else "output" if name in outputs else "constant"
        tensors[name] = replace(spec, kind=kind)
    constants = {n: program.constants[n] for n in call.inputs if n in program.constants}
    return Program(tensors=tensors, constants=constants, calls=[call], inputs=activations, outputs=outputs,
                   arena=ArenaPlan(offsets={}, arena_bytes=0, naive_bytes=0, alignment=64))


def compare_call(program: Program, call: KernelCall, reference: dict[str, np.ndarray],
                 resolver: str = RESOLVER) -> list[TensorComparison]:
    """One call as a one-op .tflite on the reference's inputs vs the reference's outputs."""
    single = one_call_program(program, call)
    conversion = ProgramConverter(single, any_output_layout=True).convert()
    interpreter = make_interpreter(conversion.data, resolver=resolver)
    for name in single.inputs:
        index, layout = conversion.tensors[name]
        interpreter.set_tensor(index, np.ascontiguousarray(layout.to_tflite(reference[name]), np.int8))
    interpreter.invoke()
    results = []
    for name in single.outputs:
        index, layout = conversion.tensors[name]
        got = layout.from_tflite(interpreter.get_tensor(index)).astype(np.int32)
        diff = np.abs(got - reference[name].astype(np.int32))
        results.append(TensorComparison(name, call.op, int(diff.size), int((diff == 0).sum()),
                                        int(diff.max()) if diff.size else 0))
    return results


def verify_tflite(program: Program, feeds: dict[str, np.ndarray], *,
                  conversion: TfliteConversion | None = None, float_io: bool = False,
                  per_op: bool = True, resolver: str = RESOLVER) -> VerificationReport:
    """Run `program` in the reference and its .tflite in LiteRT on `feeds` (float, by input name)."""
    conversion = conversion or convert_program(program, float_io=float_io)
    reference = _reference_values(program, feeds)
    interpreter = make_interpreter(conversion.data, preserve_all_tensors=True, resolver=resolver)
    for detail in interpreter.get_input_details():
        name = next(n for n, (i, _) in conversion.tensors.items() if i == detail["index"])
        layout = conversion.tensors[name][1]
        value = reference[name] if name in reference else feeds[name]
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(layout.to_tflite(value), detail["dtype"]))
    interpreter.invoke()
    writers = {n: c.op for c in program.calls for n in c.outputs if n}
    final = {c.inputs[0] for c in program.calls if c.op == "Dequantize" and c.outputs[0] in program.outputs}
    final |= {n for n in program.outputs if program.tensors[n].dtype == "int8"}
    report = VerificationReport(resolver)
    for name, (index, layout) in conversion.tensors.items():
        if name not in reference or name in program.inputs or program.tensors[name].dtype != "int8":
            continue
        got = layout.from_tflite(interpreter.get_tensor(index)).astype(np.int32)
        want = reference[name].astype(np.int32)
        diff = np.abs(got - want)
        comparison = TensorComparison(name, writers.get(name, "input"), int(diff.size), int((diff == 0).sum()),
                                      int(diff.max()) if diff.size else 0)
        report.tensors.append(comparison)
        if name in final:
            report.outputs.append(comparison)
    if per_op:
        for call in program.calls:
            if call.op not in ("Quantize", "Dequantize"):
                report.per_op.extend(compare_call(program, call, reference, resolver))
    return report
