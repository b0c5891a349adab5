"""Split-K of the project's Hopper kernel ("sm90", ``Sm90Params.splits``) on a Hopper GPU.

Correctness against the fp32 reference (relative Frobenius error < 1e-2, no NaN, output poisoned with
NaN first) for splits 2, 3, 5 and 8 (also counts that do not divide K/128) at M = 1, 3, 17, 31, 128,
1000, N = 512, 576, 2112, K = 256, 512, 7168, both activation-scale layouts (and a ragged last K block),
clusters, overlap on and off, fp16; several rounds of units (a small grid); bitwise-equal results on
repeats; CUDA-graph capture replayed twice with new data (the workspace is reused, the counters reset by
the kernel); the counters back at zero after every launch; a graph still correct after the workspace
grew; the default params of few-tile shapes. Kernels are built on first use
(``scripts/check_sm90_gpu.py build`` warms the cache).
"""

from __future__ import annotations

import pytest
import torch

from gemm.arch import detect_arch
from sm90_support import (assert_counters_zero, assert_graph_replays, checked_fixup_run, fixup_tile, inputs,
                          sm90_backend)
from gemm.kernels.sm90 import launcher, splitk
from gemm.kernels.sm90.params import Sm90Params
from gemm.problem import GemmProblem
from gemm.quant import mn_major_scales, random_problem_inputs
from gemm.reference import reference_matmul, relative_error

SPLITS = (2, 3, 5, 8)
MS = (1, 3, 17, 31, 128, 1000)
NS = (512, 576, 2112)
KS = (256, 512, 7168)


@pytest.fixture(scope="module")
def backend():
    return sm90_backend()


tile_for = fixup_tile
check = checked_fixup_run


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("splits", SPLITS)
def test_splits_match_the_reference(backend, splits, m, n, k):
    block_m, block_n = tile_for(m)
    check(backend, Sm90Params.for_tile(block_m, block_n, splits=splits), m, n, k)


@pytest.mark.parametrize("layout", ["row", "mn"])
@pytest.mark.parametrize("m,n,k,splits", [(1, 576, 7168, 3), (17, 2112, 7168, 5), (128, 512, 512, 3),
                                          (1000, 2112, 7168, 8), (31, 512, 256, 2), (100, 576, 1296, 4)])
def test_both_scale_layouts(backend, layout, m, n, k, splits):
    for block_m, block_n in ((64, 128), (128, 112), (64, 208), (256, 96)):
        check(backend, Sm90Params.for_tile(block_m, block_n, splits=splits), m, n, k, layout)


@pytest.mark.parametrize("cluster", [(2, 1), (1, 2)])
@pytest.mark.parametrize("m,n,k,splits", [(300, 2112, 7168, 3), (1000, 576, 512, 4), (3, 2112, 7168, 5),
                                          (257, 512, 7168, 8)])
def test_clusters(backend, cluster, m, n, k, splits):
    for layout in ("row", "mn"):
        check(backend, Sm90Params.for_tile(128, 128, cluster_m=cluster[0], cluster_n=cluster[1], splits=splits),
              m, n, k, layout)


@pytest.mark.parametrize("overlap", [True, False])
def test_overlap_and_fp16(backend, overlap):
    check(backend, Sm90Params.for_tile(128, 128, overlap=overlap, splits=3), 520, 2112, 7168)
    check(backend, Sm90Params.for_tile(64, 96, overlap=overlap, splits=5), 17, 576, 7168, out_dtype="float16")


@pytest.mark.parametrize("max_ctas,splits", [(16, 8), (9, 3), (5, 5), (3, 8)])
def test_several_rounds_of_units(backend, max_ctas, splits):
    """A grid smaller than the units (max_ctas) walks several rounds, a short last one included; with 3 CTAs
    and 8 splits a round of one tile needs more CTAs than the cap, which the grid then holds anyway."""
    m, n, k = 1000, 2112, 7168  # 8 x 19 = 152 tiles of 128 x 112
    params = Sm90Params.for_tile(128, 112, splits=splits)
    problem = GemmProblem(m, n, k)
    fn = backend.build(problem, params)
    a, b, sa, sb, ref = inputs(m, n, k)
    library = launcher.load_library(_library_path(params, problem))
    sizes = library.workspace_sizes(m, n, k, launcher.run_options(params))
    workspace = launcher.splitk_workspace(torch.cuda.current_device(), *sizes)
    options = launcher.run_options(params, max_ctas=max_ctas, workspace=workspace)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    library.run(a.data_ptr(), b.data_ptr(), out.data_ptr(), sa.data_ptr(), sb.data_ptr(), m, n, k, a.stride(0),
                False, sa.stride(0), options, torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any() and relative_error(out, ref) < 1e-2
    assert torch.equal(out, fn(a, b, sa, sb)), "the grid size changed the result"
    assert_counters_zero()


def _library_path(params, problem):
    from gemm.kernels.nvcc import jit
    from gemm.kernels.sm90 import codegen

    return jit.build(codegen.build_spec(params.kernel_config(problem.out_dtype))).path


@pytest.mark.parametrize("splits", [3, 8])
def test_bitwise_deterministic(backend, splits):
    m, n, k = 1000, 2112, 7168
    fn = backend.build(GemmProblem(m, n, k), Sm90Params.for_tile(128, 112, splits=splits))
    a, b, sa, sb, _ = inputs(m, n, k)
    first = fn(a, b, sa, sb)
    assert all(torch.equal(first, fn(a, b, sa, sb)) for _ in range(5))
    assert torch.equal(first, fn(a, b, mn_major_scales(sa), sb)), "the scale layout changed the result"


@pytest.mark.parametrize("splits", [2, 5])
def test_cuda_graph_capture_and_replay(backend, splits):
    m, n, k = 100, 2112, 7168
    fn = backend.build(GemmProblem(m, n, k), Sm90Params.for_tile(128, 112, splits=splits))
    assert_graph_replays(fn, m, n, k)  # replayed twice in a row with new data


def test_graph_survives_a_grown_workspace(backend):
    """A graph captured with the workspace of the time keeps launching into it after another function
    made the cache allocate a larger one; both stay correct and leave their counters at zero."""
    m, n, k = 31, 576, 7168
    small = backend.build(GemmProblem(m, n, k), Sm90Params.for_tile(64, 128, splits=3))
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
    small(a, b, sa, sb)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = small(a, b, sa, sb)
    before = launcher._WORKSPACES[torch.cuda.current_device()]
    big_m, big_n = 4096, 2112  # 32 x 17 tiles x 7 slots of 128 x 128 fp32: 238 MiB, beyond the first allocation
    if before.holds(0, splitk.partial_bytes(big_m, big_n, 128, 128, 8)):
        pytest.skip("an earlier test grew the workspace beyond what this one needs")
    large = backend.build(GemmProblem(big_m, big_n, k), Sm90Params.for_tile(128, 128, splits=8))
    assert launcher._WORKSPACES[torch.cuda.current_device()] is not before
    assert before in launcher._RETIRED
    graph.replay()
    torch.cuda.synchronize()
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2
    assert int(before.counters.count_nonzero()) == 0
    check(backend, Sm90Params.for_tile(128, 128, splits=8), big_m, big_n, k)
    del large


def test_functions_of_different_shapes_share_the_workspace(backend):
    """Launches of different tile counts and split counts take turns on one workspace."""
    cases = [((1000, 2112, 7168), Sm90Params.for_tile(128, 112, splits=8)),
             ((3, 512, 512), Sm90Params.for_tile(64, 64, splits=4)),
             ((128, 576, 7168), Sm90Params.for_tile(64, 128, splits=5))]
    fns = [(shape, backend.build(GemmProblem(*shape), p)) for shape, p in cases]
    for _ in range(3):
        for (m, n, k), fn in fns:
            a, b, sa, sb, ref = inputs(m, n, k)
            out = fn(a, b, sa, sb)
            torch.cuda.synchronize()
            assert relative_error(out, ref) < 1e-2
    assert_counters_zero()


def test_default_params_of_few_tile_shapes_run(backend):
    arch = detect_arch()
    for m, n, k in [(1, 512, 7168), (16, 576, 7168), (128, 2112, 7168), (1024, 512, 7168), (128, 4608, 7168)]:
        params = backend.default_params(GemmProblem(m, n, k), arch)
        assert params.splits > 1, params
        check(backend, params, m, n, k)


def test_workspace_sizes_match_the_mirror_on_device(backend):
    params = Sm90Params.for_tile(128, 128, splits=6)
    problem = GemmProblem(1024, 512, 7168)
    library = launcher.load_library(_library_path(params, problem))
    assert library.workspace_sizes(1024, 512, 7168, launcher.run_options(params)) == (
        splitk.counter_slots(1024, 512, 128, 128, 6), splitk.partial_bytes(1024, 512, 128, 128, 6))
