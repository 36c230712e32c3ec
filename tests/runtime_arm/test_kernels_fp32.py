"""Every float kernel of the C runtime against the reference (onnx.reference for float calls),
within 1e-4 of each output's scale, on randomized shapes; data movement ops exactly.
A few of them also run under qemu-aarch64 -cpu cortex-a53."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime_arm.harness import (
    aarch64_runner,
    assert_close,
    one_call,
    qemu,
    run_program_blob,
)


def f32(rng, *shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, shape).astype(np.float32)


def _check(built, **run):
    program, feeds, expected = built
    assert_close(run_program_blob(program, feeds, **run), expected)


CONV_CASES = [
    # (C, H, W, O, kh, kw, strides, pads, dilations, group, bias)
    (3, 7, 9, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    (4, 8, 7, 6, 3, 2, (2, 1), (0, 1, 2, 0), (1, 1), 2, False),
    (6, 9, 9, 4, 3, 3, (2, 2), (1, 1, 1, 1), (2, 2), 2, True),
    (5, 6, 5, 7, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
    (8, 10, 9, 8, 5, 5, (2, 1), (2, 2, 2, 2), (1, 1), 8, True),   # depthwise 5x5
    (7, 13, 11, 70, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),  # more than one pixel / channel block
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv(case):
    c, h, w, o, kh, kw, strides, pads, dilations, group, bias = case
    rng = np.random.default_rng(len(CONV_CASES) + c * h)
    operands = [("x", f32(rng, 1, c, h, w), False), ("w", f32(rng, o, c // group, kh, kw), True)]
    if bias:
        operands.append(("b", f32(rng, o), True))
    attrs = {"kernel_shape": [kh, kw], "strides": list(strides), "pads": list(pads), "dilations": list(dilations),
             "group": group}
    _check(one_call("Conv", operands, attrs))


def test_conv_1d():
    rng = np.random.default_rng(1)
    attrs = {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "dilations": [1], "group": 1}
    _check(one_call("Conv", [("x", f32(rng, 2, 3, 11), False), ("w", f32(rng, 4, 3, 3), True),
                             ("b", f32(rng, 4), True)], attrs))


EPILOGUES = [(["Relu"], {}), (["Add", "Relu"], {}), (["Add"], {}), (["Clip"], {"act_min": 0.0, "act_max": 6.0}),
             (["HardSwish"], {}), (["HardSigmoid"], {"act_alpha": 0.1666667, "act_beta": 0.5}), (["SiLU"], {}),
             (["LeakyRelu"], {"act_alpha": 0.1}), (["Sigmoid"], {}), (["Tanh"], {}), (["Gelu"], {}),
             (["GeluTanh"], {})]


@pytest.mark.parametrize("epilogue,act", EPILOGUES, ids=["_".join(e) for e, _ in EPILOGUES])
def test_fused_conv_epilogues(epilogue, act):
    rng = np.random.default_rng(2)
    operands = [("x", f32(rng, 1, 4, 6, 5), False), ("w", f32(rng, 6, 4, 3, 3), True), ("b", f32(rng, 6), True)]
    if "Add" in epilogue:
        operands.append(("r", f32(rng, 1, 6, 6, 5), False))
    attrs = {"epilogue": epilogue, "kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1],
             "dilations": [1, 1], "group": 1, **act}
    _check(one_call("FusedConv", operands, attrs))


@pytest.mark.parametrize("strides,pads,out_pad,dilations,group", [
    ((2, 2), (0, 0, 0, 0), (0, 0), (1, 1), 1), ((2, 3), (1, 0, 1, 2), (1, 0), (1, 1), 1), ((1, 1), (1, 1, 1, 1), (0, 0), (2, 1), 1)])
def test_conv_transpose(strides, pads, out_pad, dilations, group):
    # (onnx.reference's ConvTranspose does not implement group > 1; the int8 tests cover groups)
    rng = np.random.default_rng(3)
    attrs = {"kernel_shape": [3, 2], "strides": list(strides), "pads": list(pads), "output_padding": list(out_pad),
             "dilations": list(dilations), "group": group}
    _check(one_call("ConvTranspose", [("x", f32(rng, 1, 4, 4, 5), False), ("w", f32(rng, 4, 3, 3, 2), True),
                                      ("b", f32(rng, 3 * group), True)], attrs))


@pytest.mark.parametrize("trans_a,trans_b,alpha,beta,c_shape,b_const", [
    (0, 1, 1.0, 1.0, (7,), True), (0, 0, 0.5, 2.0, (1, 7), True), (1, 1, 1.0, 1.0, (5, 7), True),
    (0, 1, 1.0, 1.0, (), True), (0, 0, 1.0, 1.0, None, False), (1, 1, 1.3, 1.0, (7,), False)])
def test_gemm(trans_a, trans_b, alpha, beta, c_shape, b_const):
    rng = np.random.default_rng(4)
    m, k, n = 5, 9, 7
    a = f32(rng, k, m) if trans_a else f32(rng, m, k)
    b = f32(rng, n, k) if trans_b else f32(rng, k, n)
    operands = [("a", a, False), ("b", b, b_const)]
    if c_shape is not None:
        operands.append(("c", f32(rng, *c_shape), True))
    _check(one_call("Gemm", operands, {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta}))


def test_fused_gemm_and_matmul_epilogues():
    rng = np.random.default_rng(5)
    _check(one_call("FusedGemm", [("a", f32(rng, 3, 20), False), ("b", f32(rng, 30, 20), True), ("c", f32(rng, 30), True)],
                    {"epilogue": ["Relu"], "alpha": 1.0, "beta": 1.0, "transB": 1}))
    _check(one_call("FusedMatMul", [("a", f32(rng, 2, 6, 20), False), ("b", f32(rng, 20, 9), True),
                                    ("bias", f32(rng, 9), True), ("r", f32(rng, 2, 6, 9), False)], {"epilogue": ["Add"]}))
    _check(one_call("FusedMatMul", [("a", f32(rng, 2, 6, 20), False), ("b", f32(rng, 20, 9), True),
                                    ("bias", f32(rng, 9), True)], {"epilogue": ["Gelu"]}))


@pytest.mark.parametrize("a_shape,b_shape,b_const", [((2, 1, 3, 5), (1, 4, 5, 6), False), ((70, 9), (9, 66), False),
                                                     ((3, 4, 8), (8, 5), True)])
def test_matmul_broadcast(a_shape, b_shape, b_const):
    rng = np.random.default_rng(6)
    _check(one_call("MatMul", [("a", f32(rng, *a_shape), False), ("b", f32(rng, *b_shape), b_const)]))


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"])
@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (1, 3, 1, 5)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((5,), ())])
def test_binary_broadcast(op, shapes):
    rng = np.random.default_rng(7)
    a, b = f32(rng, *shapes[0]), f32(rng, *shapes[1])
    if op == "Pow":
        a = np.abs(a) + 0.1
    if op == "Div":
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
    if op == "PRelu" and len(shapes[1]) > len(shapes[0]):
        pytest.skip("PRelu's slope broadcasts to X only")
    _check(one_call(op, [("a", a, False), ("b", b, op == "PRelu")]))


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater"])
def test_comparisons(op):
    rng = np.random.default_rng(8)
    a = rng.integers(-2, 3, (3, 4)).astype(np.float32)
    _check(one_call(op, [("a", a, False), ("b", rng.integers(-2, 3, (4,)).astype(np.float32), False)],
                    out_dtypes=("bool",)))


def test_logic_and_where():
    rng = np.random.default_rng(9)
    p, q = rng.integers(0, 2, (3, 4)).astype(bool), rng.integers(0, 2, (1, 4)).astype(bool)
    _check(one_call("And", [("p", p, False), ("q", q, False)], out_dtypes=("bool",)))
    _check(one_call("Or", [("p", p, False), ("q", q, False)], out_dtypes=("bool",)))
    _check(one_call("Not", [("p", p, False)], out_dtypes=("bool",)))
    _check(one_call("Where", [("c", p, False), ("a", f32(rng, 3, 4), False), ("b", f32(rng, 1, 4), False)]))


UNARY = {"Relu": {}, "Sigmoid": {}, "Tanh": {}, "Erf": {}, "HardSwish": {}, "HardSigmoid": {"alpha": 0.3, "beta": 0.4},
         "LeakyRelu": {"alpha": 0.05}, "Elu": {"alpha": 0.7}, "Selu": {}, "Softplus": {}, "Mish": {}, "Neg": {},
         "Abs": {}, "Exp": {}, "Floor": {}, "Ceil": {}, "Round": {}, "Sign": {}, "Sqrt": {}, "Log": {},
         "Reciprocal": {}, "Gelu": {}, "GeluTanh": {}}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    rng = np.random.default_rng(10)
    x = f32(rng, 2, 3, 7, low=-3, high=3)
    if op in ("Sqrt", "Log", "Reciprocal"):
        x = np.abs(x) + 0.25
    if op == "Round":
        x.flat[:4] = [0.5, 1.5, -0.5, 2.5]  # half to even
    _check(one_call(op, [("x", x, False)], UNARY[op]))


def test_clip_bounds_as_inputs():
    rng = np.random.default_rng(11)
    _check(one_call("Clip", [("x", f32(rng, 4, 5), False), ("lo", np.array(-0.5, np.float32), True),
                             ("hi", np.array(1.0, np.float32), True)]))
    _check(one_call("Clip", [("x", f32(rng, 4, 5), False), ("lo", np.array(0.0, np.float32), True)]))


@pytest.mark.parametrize("op,axis", [("Softmax", -1), ("Softmax", 1), ("LogSoftmax", -1), ("LogSoftmax", 0)])
def test_softmax(op, axis):
    _check(one_call(op, [("x", f32(np.random.default_rng(12), 2, 5, 7, low=-6, high=6), False)], {"axis": axis}))


@pytest.mark.parametrize("axis,bias", [(-1, True), (-2, False)])
def test_layer_norm(axis, bias):
    rng = np.random.default_rng(13)
    shape = (2, 5, 7)
    trailing = shape[axis:]
    operands = [("x", f32(rng, *shape), False), ("s", f32(rng, *trailing), True)]
    if bias:
        operands.append(("b", f32(rng, *trailing), True))
    _check(one_call("LayerNormalization", operands, {"axis": axis, "epsilon": 1e-5}))


def test_batch_instance_lp_norm():
    rng = np.random.default_rng(14)
    x = f32(rng, 2, 3, 4, 5)
    stats = [("s", f32(rng, 3), True), ("b", f32(rng, 3), True), ("m", f32(rng, 3), True),
             ("v", f32(rng, 3, low=0.5, high=2.0), True)]
    _check(one_call("BatchNormalization", [("x", x, False), *stats], {"epsilon": 1e-3}))
    _check(one_call("InstanceNormalization", [("x", x, False), *stats[:2]], {"epsilon": 1e-4}))
    _check(one_call("LpNormalization", [("x", x, False)], {"axis": 1, "p": 2}))
    # positive values: onnx.reference sums x^p, not |x|^p, for the L1 norm
    _check(one_call("LpNormalization", [("x", np.abs(x) + 0.1, False)], {"axis": -1, "p": 1}))


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 2]}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
])
def test_pools(op, attrs):
    _check(one_call(op, [("x", f32(np.random.default_rng(15), 1, 3, 7, 8), False)], attrs))


def test_pool_1d():
    _check(one_call("MaxPool", [("x", f32(np.random.default_rng(16), 2, 3, 9), False)],
                    {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}))


@pytest.mark.parametrize("op,attrs,axes_input", [
    ("GlobalAveragePool", {}, None), ("GlobalMaxPool", {}, None), ("ReduceMean", {"axes": [1], "keepdims": 0}, None),
    ("ReduceMax", {"axes": [0, 2], "keepdims": 1}, None), ("ReduceMin", {"axes": [-1], "keepdims": 0}, None),
    ("ReduceL2", {"axes": [1, 3]}, None), ("ReduceSum", {"keepdims": 0}, [1, 2]), ("ReduceMean", {}, None)])
def test_reductions(op, attrs, axes_input):
    rng = np.random.default_rng(17)
    operands = [("x", f32(rng, 2, 3, 4, 5), False)]
    if axes_input is not None:
        operands.append(("axes", np.array(axes_input, np.int64), True))
    _check(one_call(op, operands, attrs))


def test_argmax():
    rng = np.random.default_rng(18)
    x = rng.integers(0, 4, (3, 5, 4)).astype(np.float32)  # ties: first (or last) index wins
    _check(one_call("ArgMax", [("x", x, False)], {"axis": 1, "keepdims": 1}, out_dtypes=("int64",)))
    _check(one_call("ArgMax", [("x", x, False)], {"axis": -1, "keepdims": 0, "select_last_index": 1},
                    out_dtypes=("int64",)))


# -- data movement (exact) ------------------------------------------------------------------------
def test_copies_and_transposes():
    rng = np.random.default_rng(19)
    x = f32(rng, 2, 8, 3, 4)
    _check(one_call("Reshape", [("x", x, False), ("s", np.array([4, -1, 3], np.int64), True)]))
    _check(one_call("Flatten", [("x", x, False)], {"axis": 3}))
    _check(one_call("Unsqueeze", [("x", x, False), ("a", np.array([0, -1], np.int64), True)]))
    _check(one_call("Identity", [("x", x, False)]))
    _check(one_call("Transpose", [("x", x, False)], {"perm": [3, 1, 0, 2]}))
    _check(one_call("Transpose", [("x", f32(rng, 2, 3, 4, 5, 2, 3), False)], {"perm": [5, 0, 4, 1, 3, 2]}))
    _check(one_call("DepthToSpace", [("x", x, False)], {"blocksize": 2, "mode": "DCR"}))
    _check(one_call("DepthToSpace", [("x", x, False)], {"blocksize": 2, "mode": "CRD"}))
    _check(one_call("SpaceToDepth", [("x", f32(rng, 1, 3, 4, 6), False)], {"blocksize": 2}))


def test_concat_split_slice():
    rng = np.random.default_rng(20)
    _check(one_call("Concat", [("a", f32(rng, 2, 3, 4), False), ("b", f32(rng, 2, 1, 4), False),
                               ("c", f32(rng, 2, 2, 4), True)], {"axis": 1}))
    _check(one_call("Split", [("x", f32(rng, 2, 7, 3), False), ("s", np.array([2, 4, 1], np.int64), True)],
                    {"axis": 1}, n_outputs=3))
    x = f32(rng, 3, 8, 20, 15)
    for starts, ends, axes, steps in (([0, 1], [1, 2], [0, 1], [1, 1]), ([-1, 2], [-100, 20], [3, 2], [-2, 3]),
                                      ([1], [9223372036854775807], [1], [1])):
        _check(one_call("Slice", [("x", x, False), ("st", np.array(starts, np.int64), True),
                                  ("en", np.array(ends, np.int64), True), ("ax", np.array(axes, np.int64), True),
                                  ("sp", np.array(steps, np.int64), True)]))


@pytest.mark.parametrize("mode,pads", [("constant", [0, 1, 2, 0, 1, 0]), ("reflect", [0, 2, 1, 0, 1, 2]),
                                       ("edge", [1, 0, 3, 0, 2, 1])])
def test_pad(mode, pads):
    rng = np.random.default_rng(21)
    operands = [("x", f32(rng, 2, 4, 5), False), ("p", np.array(pads, np.int64), True)]
    if mode == "constant":
        operands.append(("v", np.array(1.5, np.float32), True))
    _check(one_call("Pad", operands, {"mode": mode}))


@pytest.mark.parametrize("mode,ctm,nearest,scales", [
    ("nearest", "asymmetric", "floor", [1, 1, 2, 2]), ("nearest", "half_pixel", "round_prefer_floor", [1, 1, 1.5, 0.5]),
    ("nearest", "align_corners", "ceil", [1, 1, 2.5, 3]), ("linear", "half_pixel", None, [1, 1, 2, 2]),
    ("linear", "align_corners", None, [1, 1, 1.7, 0.6]), ("linear", "asymmetric", None, [1, 1, 3, 2]),
    ("linear", "pytorch_half_pixel", None, [1, 1, 0.5, 2])])
def test_resize(mode, ctm, nearest, scales):
    rng = np.random.default_rng(22)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if nearest:
        attrs["nearest_mode"] = nearest
    _check(one_call("Resize", [("x", f32(rng, 1, 2, 5, 6), False), ("roi", np.zeros(0, np.float32), True),
                               ("scales", np.array(scales, np.float32), True)], attrs))


def test_resize_by_sizes():
    rng = np.random.default_rng(23)
    _check(one_call("Resize", [("x", f32(rng, 1, 2, 5, 6), False), ("roi", np.zeros(0, np.float32), True),
                               ("scales", np.zeros(0, np.float32), True), ("sizes", np.array([1, 2, 9, 4], np.int64), True)],
                    {"mode": "linear"}))


def test_tile_expand_gather_cast():
    rng = np.random.default_rng(24)
    x = f32(rng, 2, 1, 3)
    _check(one_call("Tile", [("x", x, False), ("r", np.array([2, 3, 1], np.int64), True)]))
    _check(one_call("Expand", [("x", x, False), ("s", np.array([4, 2, 5, 3], np.int64), True)]))
    data = f32(rng, 4, 5, 3)
    _check(one_call("Gather", [("d", data, False), ("i", np.array([[3, -1], [0, 0]], np.int64), True)], {"axis": 1}))
    _check(one_call("Gather", [("d", data, False), ("i", np.array(2, np.int64), True)], {"axis": 0}))
    _check(one_call("Gather", [("d", data, False), ("i", np.array([1, -4, 2], np.int64), False)], {"axis": 1}))
    _check(one_call("Cast", [("x", f32(rng, 3, 4, low=-200, high=200), False)], {"to": 6}, out_dtypes=("int32",)))


def test_gather_index_out_of_range_is_a_clean_error():
    from edgekiln.backends.arm_cpu.blob_writer import write_blob
    from tests.runtime_arm.harness import host_runner, run_blob

    rng = np.random.default_rng(25)
    program, feeds, _ = one_call("Gather", [("d", f32(rng, 4, 5), False), ("i", np.array([1, 2], np.int64), False)],
                                 {"axis": 0})
    feeds["i"] = np.array([1, 9], np.int64)
    _, proc = run_blob(write_blob(program), program, feeds, host_runner())
    assert proc.returncode == 4 and "index 9 outside [0, 4)" in proc.stderr


QEMU_CASES = {
    "conv": lambda rng: one_call("Conv", [("x", f32(rng, 1, 3, 6, 7), False), ("w", f32(rng, 4, 3, 3, 3), True)],
                                 {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 1]}),
    "depthwise": lambda rng: one_call("FusedConv", [("x", f32(rng, 1, 4, 6, 7), False), ("w", f32(rng, 4, 1, 3, 3), True),
                                                    ("b", f32(rng, 4), True)],
                                      {"epilogue": ["HardSwish"], "kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                       "strides": [1, 1], "dilations": [1, 1], "group": 4}),
    "gemm": lambda rng: one_call("Gemm", [("a", f32(rng, 3, 10), False), ("b", f32(rng, 8, 10), True),
                                          ("c", f32(rng, 8), True)], {"transB": 1}),
    "matmul": lambda rng: one_call("MatMul", [("a", f32(rng, 2, 3, 5), False), ("b", f32(rng, 2, 5, 4), False)]),
    "softmax": lambda rng: one_call("Softmax", [("x", f32(rng, 3, 9), False)], {"axis": -1}),
    "layer_norm": lambda rng: one_call("LayerNormalization", [("x", f32(rng, 2, 3, 8), False), ("s", f32(rng, 8), True),
                                                              ("b", f32(rng, 8), True)], {"axis": -1}),
    "resize": lambda rng: one_call("Resize", [("x", f32(rng, 1, 2, 4, 5), False), ("roi", np.zeros(0, np.float32), True),
                                              ("scales", np.array([1, 1, 2, 2], np.float32), True)], {"mode": "linear"}),
}


@pytest.mark.parametrize("name", sorted(QEMU_CASES))
def test_under_qemu_cortex_a53(name):
    runner = aarch64_runner()
    _check(QEMU_CASES[name](np.random.default_rng(len(name))), runner=runner, prefix=qemu("cortex-a53"))
