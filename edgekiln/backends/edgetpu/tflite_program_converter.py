"""Convert an int8 `Program` (integer_kernels.py) call by call into TFLite builtin operators.

Each Program call becomes one TFLite op (sometimes with a PAD before it or a QUANTIZE
requantization after it) over NHWC tensors (`tflite_layout.py`).  The integer constants of
the Program are not written: TFLite derives its fixed-point multipliers from the float
scales in the file (double(s_in)·double(s_w)/double(s_out) -> Q31 multiplier and shift, the
same frexp rounding as `requantize.quantize_multiplier`), so the writer stores the scales
the Program was lowered from and checks, channel by channel, that TFLite's derivation gives
back the Program's multiplier; a channel where it would not gets the weight scale that
does (`ConversionNotes.rescaled_channels`).

Where TFLite computes differently from the integer reference (within 1 LSB, measured by
`tflite_verify.py`):
* rounding: the reference rounds a rescale once, half toward +inf, in 64 bits; TFLite's
  MultiplyByQuantizedMultiplier rounds twice (SaturatingRoundingDoublingHighMul, then
  RoundingDivideByPOT, both half away from zero) unless built with TFLITE_SINGLE_ROUNDING;
* MUL computes s_a·s_b/s_out in float32 (the Program in float64): the multiplier can differ
  in its last bits;
* AVERAGE_POOL_2D averages the raw int8 values with a rounding division and needs equal
  input / output parameters: a SAME pool that changes parameters gets a QUANTIZE after it (two
  roundings); a VALID one is written as a depthwise conv with all-ones weights instead (the
  reference's formula, one rounding).  MEAN rescales then divides (two roundings);
* CONCATENATION needs every input at the output's parameters: inputs that differ are
  requantized by a QUANTIZE first (TFLite's int8 -> int8 requantization);
* SOFTMAX / LOGISTIC / TANH / HARD_SWISH use TFLite's own int8 algorithms; SOFTMAX and
  LOGISTIC write at scale 1/256, zero point −128, TANH at 1/128, 0 (a QUANTIZE follows
  when the Program's output parameters differ).  HARD_SWISH is no Edge TPU op: the edgetpu
  pipeline rewrites HardSwish to x·HardSigmoid(x) before quantization, so only a Program
  from another target's pipeline still carries a HardSwish table;
* RESIZE_BILINEAR rounds its source-coordinate step to 1/1024 of a pixel: it is written when its
  coordinates are QResizeBilinear's exactly (then bit-exact: the same 10-bit sum, rounded half
  away from zero) or within 1/1024 (`bilinear_options`), and refused otherwise;
* a leaky-ReLU table becomes PRELU with a constant α (`fit_prelu_alpha`), the EdgeTPU's
  spelling of LeakyRelu;
* other lookup tables that are an affine function with a clamp (HardSigmoid, Clip, scalar
  Add / Mul) become a 1x1 DEPTHWISE_CONV_2D with weight ±127 (the slope in its scale), the
  offset in its bias and the clamp as its fused activation (`fit_affine_table`); a table that
  neither this nor a TFLite activation reproduces within 1 LSB is refused.
XNNPACK's int8 kernels round once, ties up, like the reference; the writer does not rely on it
(verification pins TFLite's reference kernels, `litert_interpreter.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekiln.backends.edgetpu.tflite_builder import TensorQuant, TfliteModelBuilder
from edgekiln.backends.edgetpu.tflite_layout import (
    TensorLayout,
    conv_weight_ohwi,
    depthwise_weight_1hwc,
    fc_column_order,
    nhwc_axis,
    padding_mode,
)
from edgekiln.backends.edgetpu.tflite_op_versions import op_version
from edgekiln.compiler import bilinear_taps
from edgekiln.compiler.program import KernelCall, Program, TensorSpec
from edgekiln.compiler.requantize import quantize_multiplier, requantize
from edgekiln.errors import UnsupportedOpError

# Output parameters TFLite's int8 kernels require (activations.cc Prepare).
FIXED_OUTPUT_PARAMS = {"SOFTMAX": (1 / 256, -128), "LOGISTIC": (1 / 256, -128), "TANH": (1 / 128, 0)}
_TABLE_OPS = {"HardSwish": "HARD_SWISH", "Sigmoid": "LOGISTIC", "Tanh": "TANH"}
_FUSED = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
_RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


@dataclass
class ConversionNotes:
    """What the conversion had to approximate, for reports and tests."""

    rescaled_channels: int = 0          # weight channels whose scale was adjusted to keep the multiplier
    requantize_after: list[str] = field(default_factory=list)   # calls followed by a QUANTIZE
    pads_before: list[str] = field(default_factory=list)        # calls preceded by an explicit PAD
    table_ops: dict[str, str] = field(default_factory=dict)     # QLookupTable call -> TFLite op used


@dataclass
class TfliteConversion:
    data: bytes
    tensors: dict[str, tuple[int, TensorLayout]]   # Program tensor -> (TFLite tensor index, layout)
    notes: ConversionNotes


def tflite_round(x: float) -> int:
    """std::round: half away from zero (TfLiteRound)."""
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def tflite_multiplier(s_in: float, s_w: float, s_out: float) -> tuple[int, int]:
    """(m, shift) as TFLite derives them from float32 scales, in edgekiln's shift convention."""
    real = float(np.float32(s_in)) * float(np.float32(s_w)) / float(np.float32(s_out))
    return quantize_multiplier(real)


def activation_bounds(fused: str, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for int8 output."""
    def q(v: float) -> int:
        return zero_point + tflite_round(float(np.float32(v) / np.float32(scale)))

    lo, hi = -128, 127
    if fused == "RELU":
        lo = max(lo, q(0.0))
    elif fused == "RELU6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif fused == "RELU_N1_TO_1":
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi


class ProgramConverter:
    """One conversion of a Program; `convert()` returns the TfliteConversion."""

    def __init__(self, program: Program, *, float_io: bool = False, any_output_layout: bool = False) -> None:
        self.program = program
        self.float_io = float_io
        # Verification of a single call: a graph output may keep a flattened NHWC order (the
        # verifier converts it back); a real model's outputs are always in the default layout.
        self.any_output_layout = any_output_layout
        self.b = TfliteModelBuilder()
        self.fb = self.b.fb
        self.index: dict[str, int] = {}
        self.layouts: dict[str, TensorLayout] = {}
        self.notes = ConversionNotes()
        self.output_names: dict[str, str] = {}          # int8 tensor -> the graph output it is (int8 I/O)
        self.pending_dequantize: list[tuple[str, str]] = []  # (int8 tensor, float graph output) for --float-io
        self.deferred_requantize: tuple[int, str, TensorLayout] | None = None
        self.readers: dict[str, list[KernelCall]] = {}
        for call in program.calls:
            for name in call.inputs:
                if name:
                    self.readers.setdefault(name, []).append(call)

    # -- driver -------------------------------------------------------------------------
    def convert(self, description: str = "edgekiln int8 model") -> TfliteConversion:
        inputs, outputs = self._boundaries()
        for call in self.program.calls:
            if call.op in ("Quantize", "Dequantize") and self._is_boundary(call):
                continue
            handler = self._handlers().get(call.op)
            if handler is None:
                raise UnsupportedOpError(self._refusal(call))
            handler(call)
        data = self.b.finish([self.index[n] for n in inputs], [self.index[n] for n in outputs], description)
        tensors = {name: (i, self.layouts[name]) for name, i in self.index.items() if name in self.layouts}
        return TfliteConversion(data, tensors, self.notes)

    def _handlers(self) -> dict[str, Callable[[KernelCall], None]]:
        """Program op -> the method that writes it (every op the writer knows, in one place)."""
        return {
            "QConv2D": self._op_QConv2D, "QDepthwiseConv2D": self._op_QDepthwiseConv2D,
            "QConvTranspose2D": self._op_QConvTranspose2D, "QFullyConnected": self._op_QFullyConnected,
            "QAdd": self._op_QAdd, "QMul": self._op_QMul, "QRequantize": self._op_QRequantize,
            "QLookupTable": self._op_QLookupTable, "QMaxPool": self._op_QMaxPool,
            "QAveragePool": self._op_QAveragePool, "QGlobalAveragePool": self._op_QGlobalAveragePool,
            "QReduceMean": self._op_QReduceMean, "QSoftmax": self._op_QSoftmax, "QConcat": self._op_QConcat,
            "QPad": self._op_QPad, "QResizeNearest": self._op_QResizeNearest,
            "QResizeBilinear": self._op_QResizeBilinear,
            **dict.fromkeys(_RESHAPES, self._reshape),
        }

    def _refusal(self, call: KernelCall) -> str:
        written = [self.program.tensors[n].dtype for n in call.outputs if n]
        if call.op in ("Quantize", "Dequantize", "DequantizeWeight") or "int8" not in written:
            why = "it is a float operation inside the model (a float island); the TFLite model must be fully int8"
            fix = "quantize every node (no --keep-float, int8 weights) or replace the op in the exported model"
        elif call.op == "Transpose":
            why = "the writer emits no TRANSPOSE (layouts are converted at compile time; the EdgeTPU does not map it)"
            fix = "remove the transpose from the model or fold it into its neighbours"
        else:
            why = "edgekiln has no TFLite builtin for it"
            fix = "replace the op in the exported model or choose another target"
        return f"call {call.name!r} ({call.op}) cannot be written to TFLite: {why}; {fix}"

    # -- graph inputs and outputs -------------------------------------------------------------
    def _is_boundary(self, call: KernelCall) -> bool:
        if call.op == "Quantize":
            return call.inputs[0] in self.program.inputs
        return call.outputs[0] in self.program.outputs

    def _boundaries(self) -> tuple[list[str], list[str]]:
        """Create the TFLite graph inputs/outputs; returns the Program names that index them.

        int8 I/O: the TFLite input is the Quantize call's int8 output, named after the Program
        input (the caller quantizes with its parameters); likewise the output.  --float-io: a
        float tensor with QUANTIZE / DEQUANTIZE ops at the edges."""
        inputs, outputs = [], []
        for name in self.program.inputs:
            if self.program.tensors[name].dtype == "int8":  # already int8 (a one-op Program in verification)
                self._new(name, self.program.tensors[name])
                inputs.append(name)
                continue
            quantizers = [c for c in self.readers.get(name, []) if c.op == "Quantize"]
            if len(quantizers) != 1 or len(self.readers[name]) != 1:
                raise UnsupportedOpError(f"graph input {name!r} is not read by exactly one Quantize call: the "
                                         "TFLite model must be fully int8 from its input on")
            q_name = quantizers[0].outputs[0]
            if self.float_io:
                self._new(name, self.program.tensors[name], quant=None)
                self._new(q_name, self.program.tensors[q_name])
                self._emit("QUANTIZE", op_version("QUANTIZE"), [self.index[name]], [self.index[q_name]])
                inputs.append(name)
            else:
                self._new(q_name, self.program.tensors[q_name], tflite_name=name)
                inputs.append(q_name)
        for name in self.program.outputs:
            producer = next((c for c in self.program.calls if name in c.outputs), None)
            if producer is None or producer.op != "Dequantize":
                if self.program.tensors[name].dtype == "int8":
                    outputs.append(name)
                    continue
                if producer is not None:
                    raise UnsupportedOpError(self._refusal(producer))
                raise UnsupportedOpError(f"graph output {name!r} is not the Dequantize of an int8 tensor")
            source = producer.inputs[0]
            if self.float_io:
                self.pending_dequantize.append((source, name))
                outputs.append(name)
            else:
                self.output_names[source] = name
                outputs.append(source)
        return inputs, outputs

    # -- tensors --------------------------------------------------------------------------
    def _new(self, name: str, spec: TensorSpec, *, layout: TensorLayout | None = None, tflite_name: str | None = None,
             quant: Any = "spec") -> int:
        layout = layout or TensorLayout.for_shape(spec.shape)
        if quant == "spec":
            quant = None if spec.quant is None else TensorQuant((spec.quant.scale[0],), (spec.quant.zero_point[0],))
        index = self.b.tensor(tflite_name or self.output_names.get(name, name), layout.tflite_shape,
                              spec.dtype, quant)
        self.index[name], self.layouts[name] = index, layout
        return index

    def _out(self, name: str, layout: TensorLayout | None = None) -> int:
        """The TFLite tensor for a call's output (creating it), then any DEQUANTIZE reading it."""
        if name not in self.index:
            self._new(name, self.program.tensors[name], layout=layout)
        return self.index[name]

    def _after(self, name: str) -> None:
        """Emit the float-I/O DEQUANTIZE of `name` once it is written."""
        for source, output in self.pending_dequantize:
            if source == name:
                self._new(output, self.program.tensors[output], quant=None)
                self._emit("DEQUANTIZE", op_version("DEQUANTIZE"), [self.index[source]], [self.index[output]])

    def _in(self, name: str, rank: int | None = None) -> int:
        """The TFLite tensor of a call's input; a constant activation is written here."""
        if name in self.index:
            return self.index[name]
        spec = self.program.tensors[name]
        if name not in self.program.constants:
            raise UnsupportedOpError(f"tensor {name!r} is read before any TFLite op writes it")
        array = self.program.constants[name]
        if rank is not None and array.ndim < rank:  # numpy broadcasting: leading 1s
            array = array.reshape((1,) * (rank - array.ndim) + array.shape)
        layout = TensorLayout.for_shape(array.shape)
        quant = None if spec.quant is None else TensorQuant((spec.quant.scale[0],), (spec.quant.zero_point[0],))
        index = self.b.tensor(name, layout.tflite_shape, spec.dtype, quant, data=layout.to_tflite(array))
        self.index[name], self.layouts[name] = index, layout
        return index

    def _temp(self, name: str, shape: tuple[int, ...], scale: float, zero_point: int) -> int:
        return self.b.tensor(name, shape, "int8", TensorQuant((scale,), (zero_point,)))

    def _const(self, name: str, array: np.ndarray, quant: TensorQuant | None = None) -> int:
        return self.b.tensor(name, array.shape, array.dtype.name, quant, data=array)

    def _params(self, name: str) -> tuple[float, int]:
        q = self.program.tensors[name].quant
        return float(np.float32(q.scale[0])), int(q.zero_point[0])

    def _emit(self, op: str, version: int, inputs: list[int], outputs: list[int], options: Any = None,
              options_type: str | None = None) -> None:
        self.b.operator(op, version, inputs, outputs, options, options_type)

    def _finish(self, call: KernelCall) -> None:
        for name in call.outputs:
            if name:
                self._after(name)

    def _requantized_output(self, call: KernelCall, out: str, scale: float, zero_point: int,
                            layout: TensorLayout | None = None) -> int:
        """The tensor an op must write at (scale, zero_point): the Program output itself when its
        parameters are those, else a temporary followed by a QUANTIZE to the Program's."""
        s_out, zp_out = self._params(out)
        if (float(np.float32(scale)), zero_point) == (s_out, zp_out):
            return self._out(out, layout)
        layout = layout or TensorLayout.for_shape(self.program.tensors[out].shape)
        temp = self._temp(f"{out}_unscaled", layout.tflite_shape, scale, zero_point)
        self.deferred_requantize = (temp, out, layout)
        self.notes.requantize_after.append(call.name)
        return temp

    def _flush_requantize(self) -> None:
        if self.deferred_requantize is not None:
            temp, out, layout = self.deferred_requantize
            self._emit("QUANTIZE", op_version("QUANTIZE"), [temp], [self._out(out, layout)])
            self.deferred_requantize = None

    # -- shared pieces --------------------------------------------------------------------------
    def _fused_activation(self, call: KernelCall, out: str) -> str:
        scale, zero_point = self._params(out)
        wanted = (int(call.attrs.get("act_min", -128)), int(call.attrs.get("act_max", 127)))
        for fused in _FUSED:
            if activation_bounds(fused, scale, zero_point) == wanted:
                return fused
        raise UnsupportedOpError(f"call {call.name!r} ({call.op}): its output clamp [{wanted[0]}, {wanted[1]}] is "
                                 "none of TFLite's fused activations (NONE, RELU, RELU6, RELU_N1_TO_1)")

    def _padded_input(self, call: KernelCall, x: str, pads: list[int], hw: tuple[int, int], kernel: tuple[int, int],
                      strides: tuple[int, int], dilations: tuple[int, int], pad_value: int | None) -> tuple[int, str]:
        """(input tensor, padding mode), inserting a PAD / PADV2 when the pads are neither SAME nor VALID."""
        mode = padding_mode(pads, hw, kernel, strides, dilations)
        if mode is not None:
            return self._in(x), mode
        top, left, bottom, right = pads
        n, h, w, c = self.b.shape(self._in(x))
        scale, zero_point = self._params(x)
        padded = self._temp(f"{x}_padded", (n, h + top + bottom, w + left + right, c), scale, zero_point)
        paddings = self._const(f"{call.name}_paddings", np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32))
        if pad_value is None or pad_value == zero_point:
            self._emit("PAD", op_version("PAD"), [self._in(x), paddings], [padded],
                       self.fb.PadOptionsT(), "PadOptions")
        else:
            value = self._const(f"{call.name}_pad_value", np.array([pad_value], np.int8).reshape(()),
                                TensorQuant((scale,), (zero_point,)))
            self._emit("PADV2", op_version("PADV2"), [self._in(x), paddings, value], [padded],
                       self.fb.PadV2OptionsT(), "PadV2Options")
        self.notes.pads_before.append(call.name)
        return padded, "VALID"

    def _weight_scales(self, call: KernelCall, x: str, w: str, out: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel weight scales that make TFLite derive the Program's multipliers, and the bias scales."""
        if len(call.inputs) > 5 and call.inputs[5]:
            raise UnsupportedOpError(f"call {call.name!r} ({call.op}): group-quantized (int4) weights have no "
                                     "TFLite int8 form; compile the edgetpu target with --quant int8")
        s_x, _ = self._params(x)
        s_y, _ = self._params(out)
        scales = np.array(self.program.tensors[w].quant.scale, np.float64)
        multiplier = self.program.constants[call.inputs[3]]
        shift = self.program.constants[call.inputs[4]]
        written = np.empty(len(multiplier), np.float32)
        for o, (m, sh) in enumerate(zip(multiplier.tolist(), shift.tolist())):
            s_w = scales[o] if scales.size > 1 else scales[0]
            if tflite_multiplier(s_x, s_w, s_y) == (m, sh) or m == 0:
                written[o] = np.float32(s_w) if s_w > 0 else np.float32(1.0)
                continue
            exact = m * 2.0 ** -(31 + sh) * s_y / s_x
            written[o] = np.float32(exact)
            self.notes.rescaled_channels += 1
        bias_scales = (np.float64(s_x) * written.astype(np.float64)).astype(np.float32)
        return written, bias_scales

    def _bias(self, call: KernelCall, bias_scales: np.ndarray) -> int:
        bias = self.program.constants[call.inputs[2]].astype(np.int32)
        quant = TensorQuant(tuple(bias_scales.tolist()), (0,) * len(bias_scales), 0)
        return self._const(call.inputs[2], bias, quant)

    # -- weight ops ---------------------------------------------------------------------------
    def _conv_like(self, call: KernelCall, depthwise: bool) -> None:
        x, w, out = call.inputs[0], call.inputs[1], call.outputs[0]
        attrs = call.attrs
        if int(attrs.get("group", 1)) != 1 and not depthwise:
            raise UnsupportedOpError(f"call {call.name!r}: grouped convolution (group {attrs['group']}) has no "
                                     "EdgeTPU TFLite form; split it into convolutions per group")
        weight = self.program.constants[w]
        scales, bias_scales = self._weight_scales(call, x, w, out)
        kernel = tuple(weight.shape[2:])
        strides, dilations = tuple(attrs["strides"]), tuple(attrs["dilations"])
        hw = self.program.tensors[x].shape[2:]
        inp, padding = self._padded_input(call, x, list(attrs["pads"]), hw, kernel, strides, dilations, None)
        if depthwise:
            data, axis = depthwise_weight_1hwc(weight), 3
        else:
            data, axis = conv_weight_ohwi(weight), 0
        w_index = self._const(w, data, TensorQuant(tuple(scales.tolist()), (0,) * len(scales), axis))
        b_index = self._bias(call, bias_scales)
        fused = self._fused_activation(call, out)
        if depthwise:
            options = self.fb.DepthwiseConv2DOptionsT()
            options.depthMultiplier = 1
            op, options_type = "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions"
        else:
            options = self.fb.Conv2DOptionsT()
            op, options_type = "CONV_2D", "Conv2DOptions"
        options.padding = getattr(self.fb.Padding, padding)
        options.strideH, options.strideW = strides
        options.dilationHFactor, options.dilationWFactor = dilations
        options.fusedActivationFunction = getattr(self.fb.ActivationFunctionType, fused)
        self._emit(op, op_version(op), [inp, w_index, b_index], [self._out(out)], options, options_type)
        self._finish(call)

    def _op_QConv2D(self, call: KernelCall) -> None:
        self._conv_like(call, depthwise=False)

    def _op_QDepthwiseConv2D(self, call: KernelCall) -> None:
        self._conv_like(call, depthwise=True)

    def _op_QConvTranspose2D(self, call: KernelCall) -> None:
        """TRANSPOSE_CONV (inputs: output shape, weight OHWI, input, bias), VALID padding only."""
        x, w, out = call.inputs[0], call.inputs[1], call.outputs[0]
        attrs = call.attrs
        scales = np.asarray(self.program.tensors[w].quant.scale, np.float64)
        if (len(call.inputs) > 5 and call.inputs[5]) or not np.all(scales == scales[0]):
            raise UnsupportedOpError(f"call {call.name!r}: ConvTranspose weights with one scale per input channel "
                                     "have no TFLite form (TRANSPOSE_CONV scales run along output channels)")
        if int(attrs.get("group", 1)) != 1 or any(d != 1 for d in attrs["dilations"]) or any(attrs["pads"]) \
                or any(attrs.get("output_padding", [0, 0])):
            raise UnsupportedOpError(f"call {call.name!r}: only ConvTranspose with group 1, no dilation, no pads and "
                                     "no output_padding maps to TFLite's TRANSPOSE_CONV (VALID)")
        weight = self.program.constants[w]                        # [C, O, kh, kw]
        channels = weight.shape[1]
        s_x, _ = self._params(x)
        s_y, _ = self._params(out)
        m, sh = int(self.program.constants[call.inputs[3]][0]), int(self.program.constants[call.inputs[4]][0])
        s_w = float(scales[0])
        if tflite_multiplier(s_x, s_w, s_y) != (m, sh) and m != 0:
            s_w = float(np.float32(m * 2.0 ** -(31 + sh) * s_y / s_x))
            self.notes.rescaled_channels += channels
        w_scales = (float(np.float32(s_w)),) * channels
        w_index = self._const(w, np.ascontiguousarray(np.transpose(weight, (1, 2, 3, 0))),
                              TensorQuant(w_scales, (0,) * channels, 0))
        b_scale = float(np.float32(np.float64(s_x) * np.float32(s_w)))
        b_index = self._const(call.inputs[2], self.program.constants[call.inputs[2]].astype(np.int32),
                              TensorQuant((b_scale,) * channels, (0,) * channels, 0))
        out_index = self._out(out)
        shape = self._const(f"{call.name}_output_shape", np.array(self.b.shape(out_index), np.int32))
        options = self.fb.TransposeConvOptionsT()
        options.padding = self.fb.Padding.VALID
        options.strideH, options.strideW = attrs["strides"]
        fused = self._fused_activation(call, out)
        options.fusedActivationFunction = getattr(self.fb.ActivationFunctionType, fused)
        self._emit("TRANSPOSE_CONV", op_version("TRANSPOSE_CONV", fused_activation=fused != "NONE"),
                   [shape, w_index, self._in(x), b_index], [out_index], options, "TransposeConvOptions")
        self._finish(call)

    def _op_QFullyConnected(self, call: KernelCall) -> None:
        x, w, out = call.inputs[0], call.inputs[1], call.outputs[0]
        weight = self.program.constants[w]
        layout = self.layouts.get(x) or TensorLayout.for_shape(self.program.tensors[x].shape)
        if not layout.keeps_order:  # a flattened NCHW input: permute the columns instead of the data
            weight = weight[:, fc_column_order(layout)]
        scales, bias_scales = self._weight_scales(call, x, w, out)
        w_index = self._const(w, np.ascontiguousarray(weight), TensorQuant(tuple(scales.tolist()), (0,) * len(scales), 0))
        b_index = self._bias(call, bias_scales)
        options = self.fb.FullyConnectedOptionsT()
        options.fusedActivationFunction = getattr(self.fb.ActivationFunctionType, self._fused_activation(call, out))
        keep = len(self.program.tensors[out].shape) != 2
        options.keepNumDims = keep
        self._emit("FULLY_CONNECTED", op_version("FULLY_CONNECTED", fc_keep_num_dims=keep), [self._in(x), w_index, b_index],
                   [self._out(out)], options, "FullyConnectedOptions")
        self._finish(call)

    # -- elementwise ----------------------------------------------------------------------------
    def _binary_inputs(self, call: KernelCall) -> list[int]:
        rank = len(self.program.tensors[call.outputs[0]].shape)
        indices = []
        for name in call.inputs[:2]:
            if name not in self.program.constants and len(self.program.tensors[name].shape) != rank:
                raise UnsupportedOpError(f"call {call.name!r} ({call.op}): broadcasting activations of different "
                                         "ranks has no NHWC form without a TRANSPOSE")
            indices.append(self._in(name, rank))
        return indices

    def _op_QAdd(self, call: KernelCall) -> None:
        out = call.outputs[0]
        subtract = bool(call.attrs.get("subtract"))
        op = "SUB" if subtract else "ADD"
        options = self.fb.SubOptionsT() if subtract else self.fb.AddOptionsT()
        options.fusedActivationFunction = getattr(self.fb.ActivationFunctionType, self._fused_activation(call, out))
        self._emit(op, op_version(op), self._binary_inputs(call), [self._out(out)], options,
                   "SubOptions" if subtract else "AddOptions")
        self._finish(call)

    def _op_QMul(self, call: KernelCall) -> None:
        out = call.outputs[0]
        s_a, _ = self._params(call.inputs[0])
        s_b, _ = self._params(call.inputs[1])
        s_y, _ = self._params(out)
        options = self.fb.MulOptionsT()
        options.fusedActivationFunction = getattr(self.fb.ActivationFunctionType, self._fused_activation(call, out))
        at_least_one = float(np.float32(np.float32(s_a) * np.float32(s_b)) / np.float32(s_y)) >= 1.0
        self._emit("MUL", op_version("MUL", mul_multiplier_at_least_one=at_least_one), self._binary_inputs(call),
                   [self._out(out)], options, "MulOptions")
        self._finish(call)

    def _op_QRequantize(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        self._emit("QUANTIZE", op_version("QUANTIZE"), [self._in(x)], [self._out(out, self.layouts[x])])
        self._finish(call)

    def _op_QLookupTable(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        function = str(call.attrs.get("function", ""))
        table = self.program.constants[call.inputs[1]].astype(np.int32)
        if function == "Relu":
            self.notes.table_ops[call.name] = "RELU"
            self._emit("RELU", op_version("RELU"), [self._in(x)], [self._out(out, self.layouts[x])])
            return self._finish(call)
        op = _TABLE_OPS.get(function)
        if op is not None:
            self.notes.table_ops[call.name] = op
            fixed = FIXED_OUTPUT_PARAMS.get(op)
            target = self._requantized_output(call, out, *fixed, self.layouts[x]) if fixed else self._out(out, self.layouts[x])
            self._emit(op, op_version(op), [self._in(x)], [target])
            self._flush_requantize()
            return self._finish(call)
        if self._affine_table(call, x, out, table):
            self.notes.table_ops[call.name] = "DEPTHWISE_CONV_2D"
            return self._finish(call)
        if self._prelu_table(call, x, out, table):
            self.notes.table_ops[call.name] = "PRELU"
            return self._finish(call)
        raise UnsupportedOpError(f"call {call.name!r}: the lookup table of {function or 'a function'} has no TFLite "
                                 "int8 builtin (TFLite has no general int8 table op); keep it off the EdgeTPU "
                                 "model or rewrite it as HardSwish / Sigmoid / Tanh / Relu / an affine clamp")

    def _affine_table(self, call: KernelCall, x: str, out: str, table: np.ndarray) -> bool:
        """Write a table that is clamp(k·q + c) as a 1x1 depthwise conv; False when no fit is within 1 LSB.

        DEPTHWISE_CONV_2D reads NHWC tensors: a tensor of another rank goes through it reshaped
        to [1, 1, 1, N] (N channels, one weight each), with RESHAPEs around it."""
        s_x, zp_x = self._params(x)
        s_y, zp_y = self._params(out)
        fit = fit_affine_table(table, s_x, zp_x, s_y, zp_y)
        if fit is None:
            return False
        s_w, w, bias, fused = fit
        layout = self.layouts[x]
        four_d = len(layout.tflite_shape) == 4
        channels = layout.tflite_shape[-1] if four_d else int(np.prod(layout.tflite_shape))
        source = self._in(x) if four_d else self._reshaped(self._in(x), (1, 1, 1, channels), f"{x}_as_nhwc", x)
        # One scale for every channel: per-tensor quantization (a per-channel list would repeat it,
        # 24 bytes of scale and int64 zero point per channel, in weight and bias alike).
        weight = np.full((1, 1, 1, channels), w, np.int8)
        w_index = self._const(f"{call.name}_weight", weight, TensorQuant((float(np.float32(s_w)),), (0,)))
        b_scale = float(np.float32(np.float64(s_x) * np.float32(s_w)))
        b_index = self._const(f"{call.name}_bias", np.full(channels, bias, np.int32), TensorQuant((b_scale,), (0,)))
        options = self.fb.DepthwiseConv2DOptionsT()
        options.depthMultiplier, options.strideH, options.strideW = 1, 1, 1
        options.dilationHFactor, options.dilationWFactor = 1, 1
        options.padding = self.fb.Padding.VALID
        options.fusedActivationFunction = getattr(self.fb.ActivationFunctionType, fused)
        target = self._out(out, layout) if four_d else self._temp(f"{out}_nhwc", (1, 1, 1, channels), s_y, zp_y)
        self._emit("DEPTHWISE_CONV_2D", op_version("DEPTHWISE_CONV_2D"), [source, w_index, b_index], [target],
                   options, "DepthwiseConv2DOptions")
        if not four_d:
            shape = self._const(f"{call.name}_shape", np.array(layout.tflite_shape, np.int32))
            reshape = self.fb.ReshapeOptionsT()
            reshape.newShape = list(layout.tflite_shape)
            self._emit("RESHAPE", op_version("RESHAPE"), [target, shape], [self._out(out, layout)], reshape,
                       "ReshapeOptions")
        return True

    def _prelu_table(self, call: KernelCall, x: str, out: str, table: np.ndarray) -> bool:
        """Write a table that is a leaky ReLU (slope 1 above zero, α below) as PRELU with a constant α."""
        s_x, zp_x = self._params(x)
        s_y, zp_y = self._params(out)
        alpha = fit_prelu_alpha(table, s_x, zp_x, s_y, zp_y)
        if alpha is None:
            return False
        layout = self.layouts[x]
        channels = layout.tflite_shape[-1]
        shape = (1, 1, channels) if len(layout.tflite_shape) == 4 else (channels,)
        alpha_q = np.full(shape, PRELU_ALPHA_Q if alpha > 0 else -PRELU_ALPHA_Q, np.int8)
        a_index = self._const(f"{call.name}_alpha", alpha_q, TensorQuant((abs(alpha) / PRELU_ALPHA_Q,), (0,)))
        self._emit("PRELU", op_version("PRELU"), [self._in(x), a_index], [self._out(out, layout)])
        return True

    def _reshaped(self, index: int, shape: tuple[int, ...], name: str, like: str) -> int:
        """A RESHAPE of TFLite tensor `index` to `shape` (same parameters as Program tensor `like`)."""
        scale, zero_point = self._params(like)
        result = self._temp(name, shape, scale, zero_point)
        options = self.fb.ReshapeOptionsT()
        options.newShape = list(shape)
        self._emit("RESHAPE", op_version("RESHAPE"), [index, self._const(f"{name}_shape", np.array(shape, np.int32))],
                   [result], options, "ReshapeOptions")
        return result

    # -- pooling and reductions -------------------------------------------------------------------
    def _pool_options(self, kernel: list[int], strides: list[int], padding: str) -> Any:
        options = self.fb.Pool2DOptionsT()
        options.filterHeight, options.filterWidth = kernel
        options.strideH, options.strideW = strides
        options.padding = getattr(self.fb.Padding, padding)
        options.fusedActivationFunction = self.fb.ActivationFunctionType.NONE
        return options

    def _op_QMaxPool(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        attrs = call.attrs
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise UnsupportedOpError(f"call {call.name!r}: dilated MaxPool has no TFLite builtin")
        kernel, strides = list(attrs["kernel_shape"]), list(attrs["strides"])
        hw = self.program.tensors[x].shape[2:]
        inp, padding = self._padded_input(call, x, list(attrs["pads"]), hw, tuple(kernel), tuple(strides), (1, 1), -128)
        self._emit("MAX_POOL_2D", op_version("MAX_POOL_2D"), [inp], [self._out(out)],
                   self._pool_options(kernel, strides, padding), "Pool2DOptions")
        self._finish(call)

    def _op_QAveragePool(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        attrs = call.attrs
        kernel, strides = list(attrs["kernel_shape"]), list(attrs["strides"])
        hw = self.program.tensors[x].shape[2:]
        padding = padding_mode(list(attrs["pads"]), hw, tuple(kernel), tuple(strides))
        if padding is None or (padding == "SAME" and int(attrs.get("count_include_pad", 0))):
            raise UnsupportedOpError(f"call {call.name!r}: AveragePool pads {attrs['pads']} (count_include_pad "
                                     f"{attrs.get('count_include_pad', 0)}) are neither TFLite SAME nor VALID")
        if padding == "VALID" and self._params(x) != self._params(out):
            return self._average_as_depthwise(call, kernel, strides)
        target = self._requantized_output(call, out, *self._params(x))
        self._emit("AVERAGE_POOL_2D", op_version("AVERAGE_POOL_2D"), [self._in(x)], [target],
                   self._pool_options(kernel, strides, padding), "Pool2DOptions")
        self._flush_requantize()
        self._finish(call)

    def _average_as_depthwise(self, call: KernelCall, kernel: list[int], strides: list[int]) -> None:
        """A VALID average pool that changes parameters, as a depthwise conv with all-ones weights.

        TFLite's AVERAGE_POOL_2D keeps the input's parameters, so it would need a QUANTIZE after
        it: two roundings, up to 2 LSB from the reference.  Σ(x − zp_x)·1 rescaled by
        s_x·(1/count)/s_y is the reference's formula with one rounding (every window is full)."""
        x, out = call.inputs[0], call.outputs[0]
        channels = self.program.tensors[x].shape[1]
        count = kernel[0] * kernel[1]
        w_scale = float(np.float32(1.0 / count))
        weight = np.ones((1, *kernel, channels), np.int8)
        w_index = self._const(f"{call.name}_weight", weight, TensorQuant((w_scale,) * channels, (0,) * channels, 3))
        b_scale = float(np.float32(self._params(x)[0] * w_scale))
        b_index = self._const(f"{call.name}_bias", np.zeros(channels, np.int32),
                              TensorQuant((b_scale,) * channels, (0,) * channels, 0))
        options = self.fb.DepthwiseConv2DOptionsT()
        options.depthMultiplier, options.padding = 1, self.fb.Padding.VALID
        options.strideH, options.strideW = strides
        options.dilationHFactor, options.dilationWFactor = 1, 1
        options.fusedActivationFunction = self.fb.ActivationFunctionType.NONE
        self._emit("DEPTHWISE_CONV_2D", op_version("DEPTHWISE_CONV_2D"), [self._in(x), w_index, b_index],
                   [self._out(out)], options, "DepthwiseConv2DOptions")
        self.notes.table_ops[call.name] = "DEPTHWISE_CONV_2D"
        self._finish(call)

    def _mean(self, call: KernelCall, axes: list[int], keepdims: bool) -> None:
        x, out = call.inputs[0], call.outputs[0]
        rank = len(self.program.tensors[x].shape)
        layout = self.layouts[x]
        if not layout.is_nhwc and not (layout.keeps_order and rank != 4):
            raise UnsupportedOpError(f"call {call.name!r}: mean over a reshaped NCHW tensor")
        tflite_axes = sorted(nhwc_axis(a, rank) for a in axes)
        out_layout = None
        if not keepdims:
            kept = [a for a in range(rank) if a not in axes]
            out_shape = self.program.tensors[out].shape
            tflite_kept = [a for a in layout.perm if a in kept] if rank == 4 else kept
            nontrivial = [a for a in tflite_kept if self.program.tensors[x].shape[a] != 1]
            if nontrivial != sorted(nontrivial):
                raise UnsupportedOpError(f"call {call.name!r}: mean without keepdims would reorder axes")
            out_layout = TensorLayout(out_shape, out_shape, tuple(range(len(out_shape))),
                                      tuple(self.program.tensors[x].shape[a] for a in tflite_kept))
        axes_index = self._const(f"{call.name}_axes", np.array(tflite_axes, np.int32))
        options = self.fb.ReducerOptionsT()
        options.keepDims = keepdims
        self._emit("MEAN", op_version("MEAN"), [self._in(x), axes_index], [self._out(out, out_layout)],
                   options, "ReducerOptions")
        self._finish(call)

    def _op_QGlobalAveragePool(self, call: KernelCall) -> None:
        self._mean(call, [2, 3], True)

    def _op_QReduceMean(self, call: KernelCall) -> None:
        self._mean(call, list(call.attrs["axes"]), bool(int(call.attrs.get("keepdims", 1))))

    def _op_QSoftmax(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        layout = self.layouts[x]
        if len(layout.program_shape) == 4 or not layout.keeps_order:
            raise UnsupportedOpError(f"call {call.name!r}: softmax over the last NCHW axis is not TFLite's last "
                                     "(channel) axis; reshape to 2-D before the softmax")
        target = self._requantized_output(call, out, *FIXED_OUTPUT_PARAMS["SOFTMAX"], layout)
        options = self.fb.SoftmaxOptionsT()
        options.beta = 1.0
        self._emit("SOFTMAX", op_version("SOFTMAX"), [self._in(x)], [target], options, "SoftmaxOptions")
        self._flush_requantize()
        self._finish(call)

    # -- data movement --------------------------------------------------------------------------------
    def _op_QConcat(self, call: KernelCall) -> None:
        out = call.outputs[0]
        rank = len(self.program.tensors[out].shape)
        s_y, zp_y = self._params(out)
        inputs = []
        for name, rescale in zip(call.inputs, call.attrs["requantize"]):
            index = self._in(name)
            if rescale is not None:  # TFLite's int8 concat needs every input at the output's parameters
                temp = self._temp(f"{name}_to_{out}", self.b.shape(index), s_y, zp_y)
                self._emit("QUANTIZE", op_version("QUANTIZE"), [index], [temp])
                self.notes.requantize_after.append(f"{call.name}:{name}")
                index = temp
            inputs.append(index)
        options = self.fb.ConcatenationOptionsT()
        options.axis = nhwc_axis(int(call.attrs["axis"]), rank)
        options.fusedActivationFunction = self.fb.ActivationFunctionType.NONE
        self._emit("CONCATENATION", op_version("CONCATENATION"), inputs, [self._out(out)], options,
                   "ConcatenationOptions")
        self._finish(call)

    def _op_QPad(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        if call.attrs.get("mode", "constant") != "constant":
            raise UnsupportedOpError(f"call {call.name!r}: Pad mode {call.attrs['mode']!r} (only constant has an "
                                     "EdgeTPU TFLite form)")
        pads = list(call.attrs["pads"])
        rank = len(pads) // 2
        pairs = [[pads[a], pads[a + rank]] for a in range(rank)]
        layout = self.layouts[x]
        if rank == 4:
            pairs = [pairs[a] for a in layout.perm]
        paddings = self._const(f"{call.name}_paddings", np.array(pairs, np.int32))
        _, zero_point = self._params(x)
        pad_value = int(call.attrs.get("pad_value", zero_point))
        if pad_value == zero_point:
            self._emit("PAD", op_version("PAD"), [self._in(x), paddings], [self._out(out)],
                       self.fb.PadOptionsT(), "PadOptions")
        else:
            value = self._const(f"{call.name}_value", np.array(pad_value, np.int8),
                                TensorQuant(self._params(x)[:1], (zero_point,)))
            self._emit("PADV2", op_version("PADV2"), [self._in(x), paddings, value], [self._out(out)],
                       self.fb.PadV2OptionsT(), "PadV2Options")
        self._finish(call)

    def _op_QResizeNearest(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        index_h = self.program.constants[call.inputs[1]]
        index_w = self.program.constants[call.inputs[2]]
        h, w = self.program.tensors[x].shape[2:]
        for align_corners, half_pixel in ((False, False), (False, True), (True, False), (True, True)):
            if (np.array_equal(nearest_indices(h, len(index_h), align_corners, half_pixel), index_h)
                    and np.array_equal(nearest_indices(w, len(index_w), align_corners, half_pixel), index_w)):
                break
        else:
            raise UnsupportedOpError(f"call {call.name!r}: this nearest Resize picks source pixels that no "
                                     "RESIZE_NEAREST_NEIGHBOR (align_corners / half_pixel_centers) reproduces")
        size = self._const(f"{call.name}_size", np.array([len(index_h), len(index_w)], np.int32))
        options = self.fb.ResizeNearestNeighborOptionsT()
        options.alignCorners, options.halfPixelCenters = align_corners, half_pixel
        self._emit("RESIZE_NEAREST_NEIGHBOR", op_version("RESIZE_NEAREST_NEIGHBOR", half_pixel_centers=half_pixel,
                                                                align_corners=align_corners),
                   [self._in(x), size], [self._out(out)], options, "ResizeNearestNeighborOptions")
        self._finish(call)

    def _op_QResizeBilinear(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        taps_h = self.program.constants[call.inputs[1]]
        taps_w = self.program.constants[call.inputs[2]]
        h, w = self.program.tensors[x].shape[2:]
        found = bilinear_options(h, w, taps_h, taps_w)
        if found is None:
            raise UnsupportedOpError(
                f"call {call.name!r}: no RESIZE_BILINEAR (align_corners / half_pixel_centers) reads this bilinear "
                f"Resize's source coordinates within 1/1024 of a pixel (TFLite rounds its step to 1/1024, which "
                f"drifts along a {h}x{w} -> {len(taps_h)}x{len(taps_w)} resize); resize by a ratio whose step is "
                f"exact (2x, 4x, 1/2 ...) or choose another target")
        align_corners, half_pixel = found
        size = self._const(f"{call.name}_size", np.array([len(taps_h), len(taps_w)], np.int32))
        options = self.fb.ResizeBilinearOptionsT()
        options.alignCorners, options.halfPixelCenters = align_corners, half_pixel
        self._emit("RESIZE_BILINEAR", op_version("RESIZE_BILINEAR", half_pixel_centers=half_pixel),
                   [self._in(x), size], [self._out(out)], options, "ResizeBilinearOptions")
        self._finish(call)

    def _read_only_by_fully_connected(self, name: str) -> bool:
        """True when every reader of `name` is a fully-connected layer, through requantizations."""
        if name in self.program.outputs:
            return self.any_output_layout
        if not self.readers.get(name):
            return False
        for reader in self.readers[name]:
            if reader.op == "QRequantize":
                if not self._read_only_by_fully_connected(reader.outputs[0]):
                    return False
            elif reader.op != "QFullyConnected" or reader.inputs[0] != name:
                return False
        return True

    def _reshape(self, call: KernelCall) -> None:
        x, out = call.inputs[0], call.outputs[0]
        layout = self.layouts[x]
        out_shape = self.program.tensors[out].shape
        default = TensorLayout.for_shape(out_shape)
        if layout.keeps_order and default.keeps_order:
            out_layout = default
        elif (not layout.keeps_order and len(out_shape) == 2 and out_shape[0] == 1
              and self._read_only_by_fully_connected(out)):
            # Flatten of an NHWC tensor read only by fully-connected layers: keep NHWC order
            out_layout = TensorLayout(out_shape, layout.source_shape, layout.perm, out_shape)
        else:
            raise UnsupportedOpError(f"call {call.name!r} ({call.op}): this reshape changes the NHWC element "
                                     "order and its result is not read only by fully-connected layers; it would "
                                     "need a TRANSPOSE, which the EdgeTPU does not run")
        shape = self._const(f"{call.name}_shape", np.array(out_layout.tflite_shape, np.int32))
        options = self.fb.ReshapeOptionsT()
        options.newShape = list(out_layout.tflite_shape)
        self._emit("RESHAPE", op_version("RESHAPE"), [self._in(x), shape], [self._out(out, out_layout)], options,
                   "ReshapeOptions")
        self._finish(call)


AFFINE_WEIGHT = 127  # the depthwise weight of an affine table: the largest int8 gives the finest bias step


def fit_affine_table(table: np.ndarray, s_x: float, zp_x: int, s_y: float,
                     zp_y: int) -> tuple[float, int, int, str] | None:
    """(weight scale, int8 weight, int32 bias, fused activation) of a 1x1 depthwise conv reproducing
    `table` within 1 LSB, or None.

    The conv computes clamp(requantize((q − zp_x)·w + bias, M) + zp_y) with M = s_x·s_w/s_y
    (TFLite's derivation) and w = ±AFFINE_WEIGHT, so the bias moves the line in steps of M
    (1/127 of the slope).  The slope comes from a least-squares line through the table's
    unclamped entries; slope and bias are then refined on a small grid to the pair that
    reproduces the most entries exactly.
    """
    table = np.asarray(table, np.int64)
    q = np.arange(-128, 128)
    inside = (table > table.min()) & (table < table.max())
    factors = np.linspace(0.997, 1.003, 31)
    if inside.sum() < 2:
        # A steep line (a wide input range): the entries on either side of each step pin it, loosely
        # (a clamped entry is off the line), so the slope is searched over a wider grid.
        steps = np.flatnonzero(np.diff(table))
        if steps.size == 0:
            return None
        inside[steps] = inside[steps + 1] = True
        factors = np.geomspace(0.5, 2.0, 61)
    k, c = np.polyfit(q[inside], table[inside], 1)
    if k == 0:
        return None
    pivot = float(q[inside].mean())
    w = AFFINE_WEIGHT if k > 0 else -AFFINE_WEIGHT
    bounds = [(fused, *activation_bounds(fused, s_y, zp_y)) for fused in _FUSED]
    best: tuple[int, int, float, int, str] | None = None   # (max err, -exact, s_w, bias, fused)
    for factor in factors:
        s_w = float(np.float32(abs(k) * factor * s_y / (s_x * AFFINE_WEIGHT)))
        m, sh = tflite_multiplier(s_x, s_w, s_y)
        if m == 0:
            continue
        real = m * 2.0 ** -(31 + sh)
        # the line k·f·(q − pivot) + (k·pivot + c): a changed slope turns about the fitted points' centre
        slope = math.copysign(AFFINE_WEIGHT * real, k)
        offset = k * pivot + c - slope * pivot
        center = (offset - zp_y + slope * zp_x) / real
        biases = np.arange(math.floor(center - 1 / real) - 1, math.ceil(center + 1 / real) + 2)
        if np.abs(biases).max() >= 2**31:
            continue
        acc = (q - zp_x)[None, :] * w + biases[:, None]
        total = 31 + sh
        unclamped = ((acc * m + (1 << (total - 1))) >> total) + zp_y
        for fused, lo, hi in bounds:
            err = np.abs(np.clip(unclamped, lo, hi) - table[None, :])
            worst, exact = err.max(axis=1), (err == 0).sum(axis=1)
            i = int(np.lexsort((-exact, worst))[0])
            candidate = (int(worst[i]), -int(exact[i]), s_w, int(biases[i]), fused)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
    if best is None or best[0] > 1:
        return None
    return best[2], w, best[3], best[4]


PRELU_ALPHA_Q = 127  # α is written as ±127 at scale |α|/127: exact to float32


def fit_prelu_alpha(table: np.ndarray, s_x: float, zp_x: int, s_y: float, zp_y: int) -> float | None:
    """α of a leaky ReLU that TFLite's int8 PRELU reproduces `table` with (within 1 LSB), or None.

    PRELU computes, for d = q − zp_x: requantize(d, s_x/s_y) when d >= 0, else
    requantize(d·α_q, s_x·s_α/s_y), plus zp_y.  α is read off the table's negative side by
    least squares, then refined on a small grid around it."""
    table = np.asarray(table, np.int64)
    d = np.arange(-128, 128) - zp_x
    m1, sh1 = tflite_multiplier(s_x, 1.0, s_y)
    positive = requantize(np.maximum(d, 0), m1, sh1, zp_y).astype(np.int64)
    if np.abs(positive - table)[d >= 0].max(initial=0) > 1:
        return None  # not slope 1 above zero
    negative = (d < 0) & (table > -128) & (table < 127)
    if negative.sum() < 2:
        return None
    slope = np.polyfit(d[negative], table[negative] - zp_y, 1)[0] * s_y / s_x
    best: tuple[int, int, float] | None = None
    for alpha in slope * np.linspace(0.98, 1.02, 41):
        if alpha == 0:
            continue
        m2, sh2 = tflite_multiplier(s_x, abs(alpha) / PRELU_ALPHA_Q, s_y)
        below = requantize(d * PRELU_ALPHA_Q * np.sign(alpha), m2, sh2, zp_y).astype(np.int64)
        got = np.where(d >= 0, positive, below)
        err = np.abs(got - table)
        candidate = (int(err.max()), -int((err == 0).sum()), float(alpha))
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    return best[2] if best is not None and best[0] <= 1 else None


def bilinear_options(h: int, w: int, taps_h: np.ndarray, taps_w: np.ndarray) -> tuple[bool, bool] | None:
    """(align_corners, half_pixel_centers) of the RESIZE_BILINEAR that reads QResizeBilinear's
    coordinates: exactly when one does (then TFLite's integer kernel computes the same bits), else
    the closest within 1/1024 of a pixel per axis (each output then moves by at most
    2 · 255 / 1024 < 1 LSB before rounding); None when none is that close.  Lowest version first."""
    flags, distance, _, _ = bilinear_taps.closest_tflite_taps(h, w, taps_h, taps_w)
    return flags if distance <= bilinear_taps.TFLITE_TOLERANCE else None


def nearest_indices(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """Source index of each output pixel in TFLite's RESIZE_NEAREST_NEIGHBOR (float32 as its kernel)."""
    if align_corners and out_size > 1:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    offset = np.float32(0.5 if half_pixel else 0.0)
    values = (np.arange(out_size, dtype=np.float32) + offset) * scale
    if align_corners:
        index = np.array([tflite_round(float(v)) for v in values], np.int64)
    else:
        index = np.floor(values).astype(np.int64)
    index = np.minimum(index, in_size - 1)
    return np.maximum(index, 0) if half_pixel else index
