"""Programmatic dependent launch of the Hopper kernel (``Sm90Params.dependent_launch``) on a Hopper GPU.

Correct against the fp32 reference for data-parallel, split-K, stream-K and swap-AB launches; ordered
after the stream's previous kernel: a slow launch and a dependent one writing the same output leave the
dependent one's result (its writes wait for the first to finish), a dependent launch reads what the
launch before it wrote into its inputs, back-to-back dependent split-K launches share one workspace,
and CUDA-graph capture replays correctly twice in a row.
"""

from __future__ import annotations

import pytest
import torch

from sm90_support import assert_counters_zero, assert_graph_replays, checked_run, sm90_backend
from gemm.kernels.sm90.params import Sm90Params
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error


@pytest.fixture(scope="module")
def backend():
    return sm90_backend()


@pytest.mark.parametrize("fields", [dict(), dict(splits=4), dict(stream_k=True), dict(cluster_m=2)])
@pytest.mark.parametrize("m,n,k", [(1, 2112, 7168), (100, 576, 512), (1000, 4608, 2304)])
def test_dependent_launches_match_the_reference(backend, fields, m, n, k):
    block = (64, 128) if m <= 64 else (128, 112)
    checked_run(backend, Sm90Params.for_tile(*block, dependent_launch=True, **fields), m, n, k)
    assert_counters_zero()


@pytest.mark.parametrize("m,n,k", [(3, 2112, 7168), (17, 576, 7168)])
def test_dependent_swap_ab_launch(backend, m, n, k):
    checked_run(backend, Sm90Params.for_tile(64, 32, swap_ab=True, splits=3, dependent_launch=True), m, n, k)


def test_a_dependent_launch_writes_after_the_launch_before_it(backend):
    # The slow launch (56 CTAs of 512 K blocks) leaves most SMs idle and, launched dependently too, lets
    # the next kernel start at once: only the fast launch's wait keeps the slow one from overwriting it.
    slow_problem, fast_problem = GemmProblem(128, 7168, 65536), GemmProblem(64, 7168, 512)
    slow = backend.build(slow_problem, Sm90Params.for_tile(128, 128, dependent_launch=True))
    fast = backend.build(fast_problem, Sm90Params.for_tile(64, 128, dependent_launch=True))
    big = random_problem_inputs(128, 7168, 65536, device="cuda")
    small = random_problem_inputs(64, 7168, 512, device="cuda")
    expected = reference_matmul(*small)
    out = slow(*big)
    for _ in range(3):
        slow(*big, out=out)
        fast(*small, out=out[:64])
        torch.cuda.synchronize()
        assert relative_error(out[:64], expected) < 1e-2


def test_a_dependent_launch_reads_what_the_launch_before_it_wrote(backend):
    m, n, k = 128, 2112, 7168
    fn = backend.build(GemmProblem(m, n, k), Sm90Params.for_tile(128, 112, splits=4, dependent_launch=True))
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
    fresh = random_problem_inputs(m, n, k, device="cuda")
    for _ in range(3):
        a.copy_(fresh[0])  # the stream's previous kernel writes the operand the dependent launch reads
        sa.copy_(fresh[2])
        out = fn(a, b, sa, sb)
        torch.cuda.synchronize()
        assert relative_error(out, reference_matmul(fresh[0], b, fresh[2], sb)) < 1e-2
        fresh = random_problem_inputs(m, n, k, device="cuda", seed=int(torch.randint(1 << 30, ()).item()))
    assert_counters_zero()


def test_back_to_back_dependent_split_k_launches_share_the_workspace(backend):
    m, n, k = 128, 2112, 7168
    fn = backend.build(GemmProblem(m, n, k), Sm90Params.for_tile(128, 112, splits=8, dependent_launch=True))
    sets = [random_problem_inputs(m, n, k, device="cuda", seed=s) for s in range(4)]
    outs = [fn(*s) for s in sets]  # queued back to back: each may start while the previous drains
    torch.cuda.synchronize()
    for s, out in zip(sets, outs):
        assert relative_error(out, reference_matmul(*s)) < 1e-2
    assert_counters_zero()


def test_dependent_launches_replay_in_graphs(backend):
    m, n, k = 100, 2112, 7168
    fn = backend.build(GemmProblem(m, n, k), Sm90Params.for_tile(128, 112, stream_k=True, dependent_launch=True))
    assert_graph_replays(fn, m, n, k)
