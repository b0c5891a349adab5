"""Stream-K of the project's Hopper kernel ("sm90", ``Sm90Params.stream_k``) on a Hopper GPU.

Correctness against the fp32 reference (relative Frobenius error < 1e-2, no NaN, output poisoned with
NaN first) at M = 1, 3, 17, 31, 128, 1000, N = 512, 576, 2112, 7168, K = 256, 512, 7168 (tile counts
below one wave, around one and two waves, and several waves: the hybrid data-parallel + stream-K
schedule), both activation-scale layouts, overlap on and off, fp16, swap-AB; small grids (``max_ctas``
7, 66, 1) as well as the full one; the counters back at zero after every launch; bitwise-equal results
on repeats; CUDA-graph capture replayed twice in a row with new data (all passed on the H200 before
stream-K entered the search space). Kernels are built on first use
(``scripts/check_sm90_gpu.py build`` warms the cache).
"""

from __future__ import annotations

import pytest
import torch

from sm90_support import (assert_counters_zero, assert_graph_replays, checked_fixup_run, fixup_tile, inputs,
                          sm90_backend)
from gemm.kernels.nvcc import jit
from gemm.kernels.sm90 import codegen, launcher, streamk
from gemm.kernels.sm90.params import Sm90Params
from gemm.problem import GemmProblem
from gemm.quant import mn_major_scales
from gemm.reference import relative_error

MS = (1, 3, 17, 31, 128, 1000)
NS = (512, 576, 2112, 7168)
KS = (256, 512, 7168)


@pytest.fixture(scope="module")
def backend():
    return sm90_backend()


tile_for = fixup_tile
check = checked_fixup_run


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("m", MS)
def test_stream_k_matches_the_reference(backend, m, n, k):
    block_m, block_n = tile_for(m)
    check(backend, Sm90Params.for_tile(block_m, block_n, stream_k=True), m, n, k)


@pytest.mark.parametrize("layout", ["row", "mn"])
@pytest.mark.parametrize("m,n,k", [(1, 576, 7168), (17, 2112, 7168), (128, 512, 512), (1000, 2112, 7168),
                                   (31, 512, 256), (100, 576, 1296), (1000, 7168, 7168)])
def test_both_scale_layouts(backend, layout, m, n, k):
    for block_m, block_n in ((64, 128), (128, 112), (64, 208), (256, 96)):
        check(backend, Sm90Params.for_tile(block_m, block_n, stream_k=True), m, n, k, layout)


@pytest.mark.parametrize("overlap", [True, False])
def test_overlap_and_fp16(backend, overlap):
    check(backend, Sm90Params.for_tile(128, 128, overlap=overlap, stream_k=True), 520, 2112, 7168)
    check(backend, Sm90Params.for_tile(64, 96, overlap=overlap, stream_k=True), 17, 576, 7168, out_dtype="float16")


@pytest.mark.parametrize("m,n,k", [(3, 2112, 7168), (17, 7168, 512), (64, 576, 256)])
def test_swap_ab(backend, m, n, k):
    for layout in ("row", "mn"):
        check(backend, Sm90Params.for_tile(64, 32, swap_ab=True, stream_k=True), m, n, k, layout)


def _library(params, problem):
    return launcher.load_library(jit.build(codegen.build_spec(params.kernel_config(problem.out_dtype))).path)


@pytest.mark.parametrize("max_ctas", [7, 66, 1, 0])
@pytest.mark.parametrize("m,n,k", [(1000, 2112, 7168), (128, 7168, 512), (3, 576, 7168), (1000, 7168, 256)])
def test_small_grids(backend, max_ctas, m, n, k):
    """A grid of G clusters (max_ctas): with G = 7 or 1 most tiles run data-parallel, the rest stream-K'd
    over G spans; the workspace is sized for that grid."""
    block_m, block_n = tile_for(m)
    params = Sm90Params.for_tile(block_m, block_n, stream_k=True)
    problem = GemmProblem(m, n, k)
    fn = backend.build(problem, params)
    library = _library(params, problem)
    a, b, sa, sb, ref = inputs(m, n, k)
    sizes = library.workspace_sizes(m, n, k, launcher.run_options(params, max_ctas=max_ctas))
    plan = library.streamk_plan(m, n, k, torch.cuda.get_device_properties(0).multi_processor_count,
                                launcher.run_options(params, max_ctas=max_ctas))
    assert sizes == (plan["counter_slots"], plan["partial_bytes"])
    if max_ctas:
        assert plan["clusters"] <= max_ctas
    workspace = launcher.splitk_workspace(torch.cuda.current_device(), *sizes)
    options = launcher.run_options(params, max_ctas=max_ctas, workspace=workspace)
    for _ in range(2):
        out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
        library.run(a.data_ptr(), b.data_ptr(), out.data_ptr(), sa.data_ptr(), sb.data_ptr(), m, n, k, a.stride(0),
                    False, sa.stride(0), options, torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        assert not torch.isnan(out).any() and relative_error(out, ref) < 1e-2, (max_ctas, plan)
        assert_counters_zero()
    assert relative_error(fn(a, b, sa, sb), ref) < 1e-2


@pytest.mark.parametrize("m,n,k", [(1000, 2112, 7168), (17, 576, 7168), (1000, 7168, 7168)])
def test_bitwise_deterministic(backend, m, n, k):
    block_m, block_n = tile_for(m)
    fn = backend.build(GemmProblem(m, n, k), Sm90Params.for_tile(block_m, block_n, stream_k=True))
    a, b, sa, sb, _ = inputs(m, n, k)
    first = fn(a, b, sa, sb)
    assert all(torch.equal(first, fn(a, b, sa, sb)) for _ in range(5))
    assert torch.equal(first, fn(a, b, mn_major_scales(sa), sb)), "the scale layout changed the result"


@pytest.mark.parametrize("m,n,k", [(100, 2112, 7168), (1000, 7168, 512)])
def test_cuda_graph_capture_and_replay(backend, m, n, k):
    block_m, block_n = tile_for(m)
    fn = backend.build(GemmProblem(m, n, k), Sm90Params.for_tile(block_m, block_n, stream_k=True))
    assert_graph_replays(fn, m, n, k)  # replayed twice in a row with new data


def test_stream_k_and_split_k_share_the_workspace(backend):
    """Split-K and stream-K launches of different shapes take turns on one workspace; every launch leaves
    the counters at zero for the next."""
    cases = [((1000, 2112, 7168), Sm90Params.for_tile(128, 112, stream_k=True)),
             ((1000, 2112, 7168), Sm90Params.for_tile(128, 112, splits=8)),
             ((3, 512, 512), Sm90Params.for_tile(64, 64, stream_k=True)),
             ((128, 576, 7168), Sm90Params.for_tile(64, 128, splits=5))]
    fns = [(shape, backend.build(GemmProblem(*shape), p)) for shape, p in cases]
    for _ in range(3):
        for (m, n, k), fn in fns:
            a, b, sa, sb, ref = inputs(m, n, k)
            out = fn(a, b, sa, sb)
            torch.cuda.synchronize()
            assert relative_error(out, ref) < 1e-2
    assert_counters_zero()


def test_workspace_matches_the_mirror_on_device(backend):
    params = Sm90Params.for_tile(128, 128, stream_k=True)
    problem = GemmProblem(1024, 512, 7168)
    library = _library(params, problem)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    backend.build(problem, params)  # prepares the device
    s = streamk.schedule(streamk.mma_tiles(1024, 512, 128, 128), 56, sms)
    assert library.workspace_sizes(1024, 512, 7168, launcher.run_options(params)) == (
        streamk.counter_slots(s, 128), streamk.partial_bytes(s, 128, 128))
