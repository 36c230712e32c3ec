"""benchmarks/arm_runtime_vs_peers.py on digits_cnn with minimal settings, so the script cannot rot:
every engine builds, the ORT int8 engine really runs the quantized model (not the float one),
the edgekiln engines run a host SIMD path (whichever the CPU has), and the interleaved measurement returns a latency
for each engine."""

from __future__ import annotations

import pytest

from benchmarks import arm_runtime_vs_peers as peers

pytestmark = pytest.mark.slow


def test_engines_build_and_measure(tmp_path):
    engines, skipped = peers.prepare("digits_cnn", tmp_path, tvm_trials=0, use_tvm=False)
    names = [e.name for e in engines]
    assert names == [*peers.EDGEKILN_PRECISIONS, "ORT fp32", "ORT int8"], skipped
    notes = {e.name: e.note for e in engines}
    assert "QuantizeLinear nodes" in notes["ORT int8"] and not notes["ORT int8"].endswith("; 0 QuantizeLinear nodes")
    assert all(notes[n] in ("isa avx512vnni", "isa avxvnni", "isa avx2", "isa c") for n in peers.EDGEKILN_PRECISIONS)
    latency = peers.measure(engines, threads=1, rounds=1, runs=2)
    assert set(latency) == set(names) and all(v > 0 for v in latency.values())
