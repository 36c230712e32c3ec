"""`PruneOptions.parse`: the strings --prune / --sparsity / --prune-exclude accept, and the errors for the rest."""

from __future__ import annotations

import pytest

from edgekiln.compiler.prune_options import PruneOptions, SparsitySpec
from edgekiln.errors import OptionError


def test_channels_ratio_method_and_overrides():
    options = PruneOptions.parse(["channels:0.3:bn", "stage2*=0.5", "op:Gemm=0"], exclude=["stem"])
    assert (options.channels, options.method) == (0.3, "bn")
    assert options.channel_ratio_for("stage2.conv1", "Conv") == 0.5
    assert options.channel_ratio_for("fc", "Gemm") == 0.0
    assert options.channel_ratio_for("stage3.conv", "Conv") == 0.3
    assert options.channel_ratio_for("stem", "Conv") == 0.0
    assert options.prunes_channels and not options.sparsifies


def test_sparsity_specs_and_per_layer_overrides():
    options = PruneOptions.parse(sparsity=["2:4", "fc*=0.9", "head=0"], exclude="op:Gemm")
    assert options.sparsity == SparsitySpec(n=2, m=4) and str(options.sparsity) == "2:4"
    assert options.sparsity_for("conv1", "Conv") == SparsitySpec(n=2, m=4)
    assert options.sparsity_for("fc1", "MatMul") == SparsitySpec(ratio=0.9)
    assert options.sparsity_for("head", "Conv") is None
    assert options.sparsity_for("fc1", "Gemm") is None  # excluded by op type
    assert PruneOptions.parse(sparsity=0.7).sparsity == SparsitySpec(ratio=0.7)
    assert options.sparsifies and not options.prunes_channels


def test_nothing_asked_is_none():
    assert PruneOptions.parse() is None
    assert PruneOptions.parse(refit=False) is None


@pytest.mark.parametrize("prune,sparsity,message", [
    ("channels:1.5", None, "in \\[0, 1\\)"),
    ("channels:0.3:magic", None, "unknown importance"),
    ("channels", None, "channels:RATIO"),
    ("half", None, "expected channels:RATIO"),
    ("conv=lots", None, "ratio like 0.5"),
    (None, "4:2", "0 < N < M"),
    (None, "2:x", "two integers"),
    (None, "dense", "N:M"),
])
def test_bad_values_name_the_flag_and_the_fix(prune, sparsity, message):
    with pytest.raises(OptionError, match=message):
        PruneOptions.parse(prune, sparsity)


def test_exclude_alone_is_refused():
    with pytest.raises(OptionError, match="need --prune"):
        PruneOptions.parse(exclude="conv1")


def test_manifest_record_is_plain_data():
    record = PruneOptions.parse("channels:0.3", "1:4", calib=[1, 2]).to_manifest()
    assert record["channels"] == 0.3 and record["sparsity"] == "1:4" and record["calib"] == "<list>"
