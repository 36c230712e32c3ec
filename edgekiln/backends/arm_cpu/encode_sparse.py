"""Encoders of the sparse kernels: a 1x1 conv / fully connected call named in the sparse plan
(`write_blob(program, sparse_plan)`) becomes a QSparseGemm (int8) or SparseGemm (float) call.

The plan, {call name: {"format": "block", "block": B} or {"format": "n:m", "n": N, "m": M}},
is made before the backend from a cost model (`edgekiln.pruning.sparsity_kernels`); it stays
outside the Program, which keeps its dense weight, so the reference
interpreter runs the dense math on the zero-filled weights and the runtime's sparse kernel
must agree with it bit for bit (int8).  Here the dense encoder runs first (it derives biases
and checks operands exactly as for a dense call), then its weight operand is swapped for the
sparse arrays of `pruning/sparsity_formats.py`:

    int8:  x, values, index, row_ptr, bias, multiplier, shift (int8)   (+ zero points, clamp)
    float: x, values, index, row_ptr, bias, residual            (+ epilogue)
    EK_ATTR_MODE = format, EK_ATTR_KERNEL = [B] or [N, M], EK_ATTR_TRANSPOSE = 1 for the
    fully connected layout (x [..., K]), 0 for a 1x1 convolution (x [N, K, H, W]).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgekiln.backends.arm_cpu import encode_float, encode_integer, op_codes
from edgekiln.backends.arm_cpu.encode_context import BlobCall, EncodeContext, align64
from edgekiln.compiler.program import KernelCall
from edgekiln.pruning.sparsity_formats import block_layout, n_m_layout

A, OP, SPARSE = op_codes.ATTR, op_codes.OP, op_codes.SPARSE
PIXELS = SPARSE["PIXELS"]
Encoder = Callable[[EncodeContext, KernelCall], list[BlobCall]]


def weight_matrix(call: KernelCall, weight: np.ndarray) -> np.ndarray:
    """The [O, K] matrix of a call's weight (row o = output o), whatever the op's own layout."""
    if call.op in ("MatMul", "FusedMatMul"):
        return weight.T
    if call.op in ("Gemm", "FusedGemm") and not call.attrs.get("transB", 0):
        return weight.T
    return weight.reshape(weight.shape[0], -1)


def _sparse_operands(ctx: EncodeContext, call: KernelCall, w: np.ndarray, choice: dict) -> tuple[list, dict]:
    if choice.get("format") == "block":
        block = int(choice["block"])
        values, index, row_ptr = block_layout(w, block)
        names = [ctx.derive(call, "sparse_values", values), ctx.derive(call, "sparse_index", index),
                 ctx.derive(call, "sparse_row_ptr", row_ptr)]
        return names, {A["MODE"]: SPARSE["FORMAT_BLOCK"], A["KERNEL"]: [block]}
    if choice.get("format") == "n:m":
        n, m = int(choice["n"]), int(choice["m"])
        try:
            values, meta = n_m_layout(w, n, m)
        except ValueError as exc:
            raise ctx.fail(call, f"sparse_kernel {n}:{m}: {exc}") from None
        names = [ctx.derive(call, "sparse_values", values), ctx.derive(call, "sparse_index", meta), None]
        return names, {A["MODE"]: SPARSE["FORMAT_NM"], A["KERNEL"]: [n, m]}
    raise ctx.fail(call, f"unknown sparse_kernel {choice!r}")


def _check_shape(ctx: EncodeContext, call: KernelCall, blob: BlobCall, weight: np.ndarray, fc: bool) -> None:
    """The sparse kernels compute a 1x1, stride-1, unpadded, ungrouped conv or a 2-D weight FC only."""
    if fc:
        if weight.ndim != 2:
            raise ctx.fail(call, f"sparse_kernel with a {weight.ndim}-D weight (a 2-D one only)")
        return
    a = blob.attrs
    if (weight.ndim not in (3, 4) or any(d != 1 for d in weight.shape[2:]) or a.get(A["GROUP"], 1) != 1
            or any(v != 1 for v in a.get(A["STRIDES"], [1])) or any(a.get(A["PADS"], [0]))):
        raise ctx.fail(call, "sparse_kernel on a convolution that is not 1x1, stride 1, unpadded and ungrouped")


def _scratch(k: int, pixels: int, int8: bool, fc: bool) -> int:
    pb = max(min(pixels, PIXELS), 1)
    if int8:
        ldx = -(-pb // 16) * 16
        return align64(k * ldx * 2) + align64(8 * ldx * 4)
    return (align64(k * pb * 4) if fc else 0) + align64(8 * pb * 4)


def _sparse(dense: Encoder, int8: bool, fc: bool) -> Encoder:
    def encode(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
        choice = ctx.sparse_plan.get(call.name)
        if not choice:
            return dense(ctx, call)
        [blob] = dense(ctx, call)
        weight = ctx.need_const(call, 1, "weight")
        _check_shape(ctx, call, blob, weight, fc)
        w = weight_matrix(call, weight)
        names, attrs = _sparse_operands(ctx, call, w, choice)
        k = w.shape[1]
        pixels = ctx.size(call.inputs[0]) // k if fc else int(np.prod(ctx.shape(call.inputs[0])[2:]))
        attrs[A["TRANSPOSE"]] = int(fc)
        if int8:
            # the sparse kernel subtracts zp_x itself: the layer's own bias, not the dense call's folded one
            x, _, _, mult, shift, ratio = blob.inputs
            bias = call.inputs[2]
            if ratio is not None:
                raise ctx.fail(call, "sparse_kernel with per-group weight scales")
            keep = (A["INPUT_ZP"], A["OUTPUT_ZP"], A["ACT_MIN"], A["ACT_MAX"])
            attrs.update({key: blob.attrs[key] for key in keep if key in blob.attrs})
            return [BlobCall(call.name, OP["QSPARSE_GEMM"], [x, *names, bias, mult, shift], blob.outputs, attrs,
                             _scratch(k, pixels, True, fc))]
        x, _, bias, residual = blob.inputs
        if any(key in blob.attrs and blob.attrs[key] not in (0, 1.0) for key in (A["TRANS_A"], A["TRANS_B"], A["ALPHA"])):
            raise ctx.fail(call, "sparse_kernel on a Gemm with transA, alpha or a non-constant B")
        keep = (A["EPILOGUE"], A["ACT_ALPHA"], A["ACT_BETA"], A["ACT_FMIN"], A["ACT_FMAX"])
        attrs.update({key: blob.attrs[key] for key in keep if key in blob.attrs})
        return [BlobCall(call.name, OP["SPARSE_GEMM"], [x, *names, bias, residual], blob.outputs, attrs,
                         _scratch(k, pixels, False, fc))]
    return encode


ENCODERS: dict[str, Encoder] = {
    "QConv2D": _sparse(encode_integer.qconv, int8=True, fc=False),
    "QFullyConnected": _sparse(encode_integer.qfully_connected, int8=True, fc=True),
    "Conv": _sparse(encode_float.conv, int8=False, fc=False),
    "FusedConv": _sparse(encode_float.conv, int8=False, fc=False),
    "MatMul": _sparse(encode_float.matmul, int8=False, fc=True),
    "FusedMatMul": _sparse(encode_float.matmul, int8=False, fc=True),
    "Gemm": _sparse(encode_float.gemm, int8=False, fc=True),
    "FusedGemm": _sparse(encode_float.gemm, int8=False, fc=True),
}
