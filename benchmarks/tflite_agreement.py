"""edgekiln's int8 .tflite (edgetpu target) run in LiteRT vs the integer reference, per model.

For each zoo CNN and the PP-OCR classifier / detector: compile for `edgetpu` with int8
quantization (4 calibration samples), write the .tflite, then

* per op (isolated): every Program call as a one-op .tflite on the reference's own inputs;
  share of output elements exactly equal and max |diff| in LSB, for LiteRT's reference
  kernels (BUILTIN_REF, what edgekiln pins) and for the default resolver (AUTO: optimized
  kernels + XNNPACK);
* chained: the whole model from the same int8 input, graph outputs compared;
* top-1: the artifact's class (litert runner) vs the integer reference on 10 inputs.

Run from the repository root:  PYTHONPATH=. python benchmarks/tflite_agreement.py
Writes benchmarks/results/tflite_agreement.json.  No timings: agreement only.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

from edgekiln.backends.edgetpu.tflite_reader import builtin_op_names, read_tflite
from edgekiln.backends.edgetpu.tflite_verify import verify_tflite
from edgekiln.backends.edgetpu.tflite_writer import convert_program
from edgekiln.backends.reference.interpreter import run_program
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.quant_options import QuantOptions
from tests.zoo import input_shapes, model_path, sample_input

MODELS = ["lenet_mnist", "digits_cnn", "inverted_residual", "resnet_basic", "repvgg", "mobileone", "se_hardswish",
          "ppocr_cls", "ppocr_det"]


def measure(name: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compile_model(model_path(name), "edgetpu", input_shapes=input_shapes(name), progress=False,
                               quantization=QuantOptions(quant="int8",
                                                         calib=[sample_input(name, seed=s) for s in range(1, 5)]))
    program = result.program
    conversion = convert_program(program)
    ops = builtin_op_names(read_tflite(conversion.data))
    feeds = sample_input(name, seed=7)
    ref = verify_tflite(program, feeds, conversion=conversion, resolver="BUILTIN_REF")
    auto = verify_tflite(program, feeds, conversion=conversion, resolver="AUTO")
    row = {"model": name, "ops": len(ops), "transpose": ops.count("TRANSPOSE"), "dequantize": ops.count("DEQUANTIZE"),
           "bytes": len(conversion.data), "per_op_equal_ref": ref.per_op_equal_share,
           "per_op_max_diff_ref": ref.per_op_max_diff, "per_op_equal_xnnpack": auto.per_op_equal_share,
           "per_op_max_diff_xnnpack": auto.per_op_max_diff, "output_equal_ref": ref.output_equal_share,
           "output_max_diff_ref": ref.output_max_diff}
    if name != "ppocr_det":
        output, agree = program.outputs[0], 0
        for seed in range(10, 20):
            x = sample_input(name, seed=seed)
            agree += int(np.argmax(result.artifact.run(x)[output]) == np.argmax(run_program(program, x)[output]))
        row["top1_agree"] = f"{agree}/10"
    return row


def main() -> None:
    rows = [measure(n) for n in (sys.argv[1:] or MODELS)]
    head = (f"{'model':<18}{'ops':>5}{'T/DQ':>6}{'KiB':>8}  {'per-op REF':>16}  {'per-op XNNPACK':>16}"
            f"  {'outputs REF':>15}  {'top-1':>6}")
    print(head)
    for r in rows:
        print(f"{r['model']:<18}{r['ops']:>5}{r['transpose']:>3}/{r['dequantize']:<2}{r['bytes'] / 1024:>8.1f}  "
              f"{r['per_op_equal_ref']:>9.2%} ±{r['per_op_max_diff_ref']:<4}  "
              f"{r['per_op_equal_xnnpack']:>9.2%} ±{r['per_op_max_diff_xnnpack']:<4}  "
              f"{r['output_equal_ref']:>8.2%} ±{r['output_max_diff_ref']:<4}  {r.get('top1_agree', '-'):>6}")
    out = Path("benchmarks/results/tflite_agreement.json")
    if out.parent.is_dir():
        out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
