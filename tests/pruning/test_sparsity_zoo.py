"""A zoo model end to end with weight sparsity on arm_cpu (slow), run under qemu -cpu cortex-a53:
`--sparsity 2:4 --quant int8` on inverted_residual (the cost model keeps the dense int8 kernels:
2:4 halves the MACs, not enough against the dense NEON GEMM) and `--sparsity 1:4 --quant int8`
on tiny_transformer (its fully connected layers go sparse), both bit-exact with the integer
reference; and the float model at 90 %
magnitude sparsity, where the sparse fp32 kernels run, against onnxruntime on the sparsified
model."""

from __future__ import annotations

import numpy as np
import pytest

from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
from edgekiln.backends.reference.runner import ReferenceRunner
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.passes.sparsify_n_m import holds_n_m
from tests.conftest import max_relative_error, run_ort
from tests.runtime_arm.harness import aarch64_runner
from tests.zoo import input_shapes, model_path, sample_input

pytestmark = pytest.mark.slow
NAME = "inverted_residual"


def _n_m_weights(program, n: int, m: int) -> int:
    """int8 weights (conv [O, C, kh, kw], FC [N, K], fused blocks' too) that hold N:M along axis 1:
    symmetric quantization keeps the zeros the pass wrote.  Counts them; fails on one that the
    pass should have reached (C a multiple of M, not depthwise) but does not hold the pattern."""
    count = 0
    for name, w in program.constants.items():
        if w.dtype == np.int8 and w.ndim in (2, 4) and w.shape[1] > 1 and w.shape[1] % m == 0 and w.size >= 64:
            assert holds_n_m(w, 1, n, m), name
            count += 1
    return count


@pytest.mark.parametrize("name,spec,goes_sparse", [("inverted_residual", "2:4", False), ("tiny_transformer", "1:4", True)])
def test_int8_on_cortex_a53_is_bit_exact(name, spec, goes_sparse):
    aarch64_runner()
    calib = [sample_input(name, seed=s) for s in range(1, 5)]
    result = compile_model(model_path(name), "cortex-a53", input_shapes=input_shapes(name), progress=False,
                           quantization=QuantOptions(quant="int8", calib=calib),
                           pruning=PruneOptions.parse(sparsity=spec))
    assert f"{spec} along the input channel" in result.trace.render()
    n, m = map(int, spec.split(":"))
    assert _n_m_weights(result.program, n, m) >= 3
    feeds = sample_input(name, seed=21)
    artifact = result.artifact
    got = ArmCpuRunner(artifact.files, artifact.manifest, qemu_cpu="cortex-a53").run(feeds)
    expected = ReferenceRunner(artifact.files, artifact.manifest).run(feeds)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    decisions = artifact.manifest["options"].get("sparse_kernels", [])
    assert all(" on neon" in d["reason"] or "non-zero" in d["reason"] for d in decisions)
    assert any(d["choice"] for d in decisions) == goes_sparse


def test_float_magnitude_runs_sparse_kernels_under_qemu():
    aarch64_runner()
    result = compile_model(model_path(NAME), "cortex-a53", input_shapes=input_shapes(NAME), progress=False,
                           pruning=PruneOptions.parse(sparsity="0.9"))
    chosen = [d for d in result.artifact.manifest["options"]["sparse_kernels"] if d["choice"]]
    assert chosen, "the cost model should pick the fp32 sparse kernel for some 90 % sparse layer"
    feeds = sample_input(NAME, seed=22)
    got = result.artifact.run(feeds)
    expected = run_ort(result.graph.to_proto(), feeds)
    for k, key in enumerate(got):
        assert max_relative_error(expected[k], got[key]) < 1e-4, key
