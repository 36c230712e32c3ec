"""edgekiln's int8 .tflite (edgetpu target) run in LiteRT vs the integer reference, per model.

For each zoo CNN and the PP-OCR classifier / detector: compile for `edgetpu` with int8
quantization (4 calibration samples), write the .tflite, then

* per op (isolated): every Program call as a one-op .tflite on the reference's own inputs;
  share of output elements exactly equal and max |diff| in LSB, for LiteRT's reference
  kernels (BUILTIN_REF, what edgekiln pins) and for the default resolver (AUTO: optimized
  kernels + XNNPACK);
* chained: the whole model from the same int8 input, graph outputs compared;
* top-1: the artifact's class (litert runner) vs the integer reference on 10 inputs;
* SQNR vs the float model (onnxruntime) of the LiteRT output, over 16 evaluation inputs
  (benchmarks.quantization_data: held-out images for the trained models, 8 calibration
  inputs), with the edgetpu rewrites that change numbers (HardSwish -> x·HardSigmoid(x),
  Relu fused into the Add before it) and without them (the same compile with those two
  switched off), to show the TPU-friendly spelling costs no accuracy.

Run from the repository root:  PYTHONPATH=. python benchmarks/tflite_agreement.py
Writes benchmarks/results/tflite_agreement.json.  No timings: agreement only.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def without_numeric_rewrites():
    """Compile for edgetpu without hard-swish-to-hard-sigmoid-mul and fuse_relu_into_producers (the SQNR column)."""
    from edgekiln.compiler import fuse_relu_into_producer as fusion
    from edgekiln.compiler import pipelines

    friendly, fuse = pipelines.edgetpu_friendly, fusion.fuse_relu_into_producers

    def friendly_without(quantized: bool = False):
        stage = friendly(quantized)
        stage.passes = [p for p in stage.passes if p.name != "hard-swish-to-hard-sigmoid-mul"]
        return stage

    pipelines.edgetpu_friendly, fusion.fuse_relu_into_producers = friendly_without, lambda program, notes=None: program
    try:
        yield
    finally:
        pipelines.edgetpu_friendly, fusion.fuse_relu_into_producers = friendly, fuse


def litert_sqnr(name: str) -> float:
    """SQNR (dB) of the edgetpu artifact's LiteRT outputs against the float model's."""
    from benchmarks.quantization_data import (
        artifact_runner,
        calibration_feeds,
        evaluation_feeds,
        ort_runner,
        outputs,
        sqnr_db,
    )

    feeds = evaluation_feeds(name, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compile_model(model_path(name), "edgetpu", input_shapes=input_shapes(name), progress=False,
                               quantization=QuantOptions(quant="int8", calib=calibration_feeds(name, 8)))
    reference = outputs(ort_runner(Path(model_path(name)).read_bytes()), feeds)
    return sqnr_db(reference, outputs(artifact_runner(result.artifact, result.program.outputs), feeds))


def main() -> None:
    rows = [measure(n) for n in (sys.argv[1:] or MODELS)]
    for row in rows:
        row["sqnr_db"] = round(litert_sqnr(row["model"]), 2)
        with without_numeric_rewrites():
            row["sqnr_db_without_rewrites"] = round(litert_sqnr(row["model"]), 2)
    head = (f"{'model':<18}{'ops':>5}{'T/DQ':>6}{'KiB':>8}  {'per-op REF':>16}  {'per-op XNNPACK':>16}"
            f"  {'outputs REF':>15}  {'top-1':>6}  {'SQNR dB':>8}  {'(no rewr.)':>10}")
    print(head)
    for r in rows:
        print(f"{r['model']:<18}{r['ops']:>5}{r['transpose']:>3}/{r['dequantize']:<2}{r['bytes'] / 1024:>8.1f}  "
              f"{r['per_op_equal_ref']:>9.2%} ±{r['per_op_max_diff_ref']:<4}  "
              f"{r['per_op_equal_xnnpack']:>9.2%} ±{r['per_op_max_diff_xnnpack']:<4}  "
              f"{r['output_equal_ref']:>8.2%} ±{r['output_max_diff_ref']:<4}  {r.get('top1_agree', '-'):>6}  "
              f"{r['sqnr_db']:>8.2f}  {r['sqnr_db_without_rewrites']:>10.2f}")
    out = Path("benchmarks/results/tflite_agreement.json")
    if out.parent.is_dir():
        out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
