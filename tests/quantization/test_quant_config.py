"""QuantConfig: precision strings, rules by glob / op type / weight name, YAML, first/last guard, errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgekiln.errors import OptionError
from edgekiln.quantization import QuantConfig, parse_precision
from tests.support.graphs import build_graph


def _graph():
    """/stem/Conv -> Relu -> /blocks/blocks.0/Conv -> Flatten -> /head/Gemm (torch-style names)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in (
        ("stem.weight", (4, 3, 3, 3)), ("blocks.0.weight", (4, 4, 3, 3)), ("head.weight", (10, 256)))]
    nodes = [
        helper.make_node("Conv", ["x", "stem.weight"], ["a"], "/stem/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], "/stem/Relu"),
        helper.make_node("Conv", ["b", "blocks.0.weight"], ["c"], "/blocks/blocks.0/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["d"], "/head/Flatten"),
        helper.make_node("Gemm", ["d", "head.weight"], ["y"], "/head/Gemm", transB=1),
    ]
    return build_graph(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 10])], inits)


@pytest.mark.parametrize("text, expected", [
    ("int8", "int8"), ("INT4:g64", "int4:g64"), ("int4", "int4"), ("ternary", "ternary"),
    ("ternary:g32", "ternary:g32"), ("w4a16:g128", "w4a16:g128"), ("w4a16", "w4a16:g64"), ("fp32", "fp32")])
def test_precision_strings(text, expected):
    assert parse_precision(text) == expected


@pytest.mark.parametrize("text, message", [
    ("int3", "unknown precision"), ("int4:g48", "group size 48"), ("int8:g64", "int8 takes no group size"),
    ("int4:64", "unknown precision")])
def test_bad_precision_names_the_option_and_the_syntax(text, message):
    with pytest.raises(OptionError, match=message) as error:
        parse_precision(text, "--quant")
    assert "--quant" in str(error.value) and "int4:g<32|64|128>" in str(error.value)


def test_rules_by_glob_on_weight_name_op_type_and_keep_float():
    graph = _graph()
    config = QuantConfig.from_options("int8", weights=["blocks.*:int4:g64", "op:Gemm:ternary"],
                                      keep_float=["/head/*"])
    assert config.assign(graph) == {
        "/stem/Conv": "int8", "/stem/Relu": "int8", "/blocks/blocks.0/Conv": "int4:g64",
        "/head/Flatten": "fp32", "/head/Gemm": "fp32"}  # --keep-float comes last and wins


def test_glob_on_the_node_name_without_its_leading_slash_and_last_rule_wins():
    config = QuantConfig.from_options("int8", weights=["stem/*:int4", "stem/Conv:ternary"])
    assert config.assign(_graph())["/stem/Conv"] == "ternary"


def test_fused_nodes_answer_to_their_base_op():
    from edgekiln.passes.fuse_epilogue import FuseEpiloguePass

    graph = _graph()
    FuseEpiloguePass().run(graph)
    assert graph.node("/stem/Conv").op_type == "FusedConvRelu"
    assert QuantConfig.from_options("int8", weights=["op:Conv:int4"]).assign(graph)["/stem/Conv"] == "int4"


def test_first_and_last_weighted_layers_stay_int8_below_8_bits():
    graph = _graph()
    low = QuantConfig("int4:g32").assign(graph)
    assert (low["/stem/Conv"], low["/blocks/blocks.0/Conv"], low["/head/Gemm"]) == ("int8", "int4:g32", "int8")
    off = QuantConfig("ternary", keep_first_last_int8=False).assign(graph)
    assert off["/stem/Conv"] == off["/head/Gemm"] == "ternary"
    explicit = QuantConfig.from_options("ternary", weights=["op:Gemm:ternary"]).assign(graph)
    assert explicit["/head/Gemm"] == "ternary" and explicit["/stem/Conv"] == "int8"  # a rule beats the guard
    assert QuantConfig("w4a16:g64").assign(graph)["/stem/Conv"] == "w4a16:g64"


def test_yaml_file_and_text_give_the_same_config(tmp_path):
    text = ("quant: int4:g64\nmethod: mse\nkeep_first_last_int8: false\n"
            "weights:\n  blocks.*: int8\nkeep_float: [op:Gemm]\n")
    path = tmp_path / "quant.yaml"
    path.write_text(text)
    for config in (QuantConfig.from_yaml(path), QuantConfig.from_yaml(text)):
        assert (config.default, config.method, config.keep_first_last_int8) == ("int4:g64", "mse", False)
        assert config.assign(_graph()) == {
            "/stem/Conv": "int4:g64", "/stem/Relu": "int4:g64", "/blocks/blocks.0/Conv": "int8",
            "/head/Flatten": "int4:g64", "/head/Gemm": "fp32"}
    listed = QuantConfig.from_yaml("weights: ['blocks.*:int8']\nquant: ternary\n")
    assert listed.assign(_graph())["/blocks/blocks.0/Conv"] == "int8"


@pytest.mark.parametrize("text, message", [
    ("quant: int8\nbogus: 1\n", "unknown key.*bogus"),
    ("- a\n- b\n", "expected a mapping"),
    ("weights: ['blocks.*']\n", "no precision after the pattern"),
    ("quant: int2\n", "--quant 'int2'"),
    ("keep_first_last_int8: maybe\n", "true or false"),
    ("quant: [int8\n", "not valid YAML"),
])
def test_yaml_errors(text, message):
    with pytest.raises(OptionError, match=message):
        QuantConfig.from_yaml(text + "\n")


def test_rule_syntax_errors_show_the_expected_syntax():
    with pytest.raises(OptionError, match=r"--weights 'blocks\.\*': no precision.*PATTERN:PRECISION"):
        QuantConfig.from_options(weights=["blocks.*"])
    with pytest.raises(OptionError, match=r"--weights 'blocks\.\*:int5'.*unknown precision"):
        QuantConfig.from_options(weights=["blocks.*:int5"])
    with pytest.raises(OptionError, match="empty pattern"):
        QuantConfig.from_options(weights=[":int8"])
    with pytest.raises(OptionError, match="method"):
        QuantConfig(method="kl")


def test_a_rule_that_matches_nothing_names_itself_and_shows_node_names():
    config = QuantConfig.from_options(keep_float=["backbone.*"])
    with pytest.raises(OptionError, match=r"--keep-float backbone\.\*:fp32 matches no node.*'/stem/Conv'.*"
                                          r"'stem\.weight'"):
        config.assign(_graph())
    lenient = QuantConfig.from_options(keep_float=["backbone.*"], strict=False)
    with pytest.warns(UserWarning, match="matches no node"):
        assert lenient.assign(_graph())["/stem/Conv"] == "int8"
