"""The benchmark's Hopper-kernel peers (``gemm bench --sm90``) on a Hopper GPU: the default and the
best-ranked candidates of the space are built, and every one computes the reference."""

from __future__ import annotations

import pytest

from gemm.bench.measure import make_input_sets
from gemm.bench.peers import sm90_calls
from gemm.problem import GemmProblem
from gemm.reference import reference_matmul, relative_error
from sm90_support import sm90_backend


@pytest.mark.parametrize("m,n,k", [(3, 576, 512), (100, 2112, 256)])
def test_sm90_peers_are_the_default_and_the_best_ranked_and_correct(m, n, k):
    from gemm.arch import detect_arch

    sm90_backend()  # skips where the backend cannot run
    sets = make_input_sets(m, n, k, 2)
    calls = sm90_calls(GemmProblem(m, n, k), detect_arch(), sets, keep=3)
    assert [c.peer for c in calls] == ["sm90_default"] + ["sm90_sweep"] * 3
    assert len({c.config for c in calls[1:]}) == 3
    ref = reference_matmul(*sets[0])
    for call in calls:
        assert not isinstance(call.fn, Exception), f"{call.config} did not build: {call.fn}"
        assert relative_error(call.fn(*sets[0]), ref) < 1e-2, call.config
