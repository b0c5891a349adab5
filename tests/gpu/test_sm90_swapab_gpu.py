"""Swap-AB of the project's Hopper kernel ("sm90", ``Sm90Params.swap_ab``) on a Hopper GPU.

The MMA computes D^T = B A^T: the weights on the wgmma's 64-row side, the tokens on its N side. Checked
against the fp32 reference (relative Frobenius error < 1e-2, no NaN, output poisoned with NaN first) over
M = 1, 3, 17, 31, 64, N = 576, 2112, 7168, K = 256, 512, 7168 for token tiles of 16..64 and weight tiles
of 64 and 128 rows, both activation-scale layouts, overlap on and off, fp16, split-K (2, 3, 5 splits);
bitwise-equal results on repeats; CUDA-graph capture replayed twice with new data (also split-K).
"""

from __future__ import annotations

import pytest
import torch

from sm90_support import assert_graph_replays, checked_run, inputs, sm90_backend
from gemm.kernels.sm90.params import Sm90Params
from gemm.problem import GemmProblem
from gemm.reference import relative_error

MS = (1, 3, 17, 31, 64)
NS = (576, 2112, 7168)
KS = (256, 512, 7168)
#: (BLOCK_M weight rows, BLOCK_N tokens)
TILES = [(64, 16), (64, 32), (128, 16), (128, 48), (64, 64)]


@pytest.fixture(scope="module")
def backend():
    return sm90_backend()


def swap(block_m, block_n, **fields) -> Sm90Params:
    return Sm90Params.for_tile(block_m, block_n, swap_ab=True, **fields)


def check(backend, params, m, n, k, layout="row", out_dtype="bfloat16"):
    out = checked_run(backend, params, m, n, k, layout, out_dtype)
    return out


@pytest.mark.parametrize("block_m,block_n", TILES)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("m", MS)
def test_swap_ab_matches_the_reference(backend, block_m, block_n, m, n, k):
    check(backend, swap(block_m, block_n), m, n, k)


@pytest.mark.parametrize("block_m,block_n", [(64, 32), (128, 16), (128, 48)])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("m", MS)
def test_swap_ab_mn_major_scales(backend, block_m, block_n, m, n, k):
    # M = 1, 3, 17, 31: the MN-major leading dimension roundup(M, 4) pads each K block's tokens.
    check(backend, swap(block_m, block_n), m, n, k, layout="mn")


@pytest.mark.parametrize("layout", ["row", "mn"])
@pytest.mark.parametrize("splits", [2, 3, 5])
@pytest.mark.parametrize("m,n,k", [(1, 576, 7168), (3, 2112, 7168), (17, 7168, 512), (64, 2112, 7168),
                                   (31, 576, 7168)])
def test_swap_ab_with_split_k(backend, layout, splits, m, n, k):
    check(backend, swap(64, 32, splits=splits), m, n, k, layout)
    check(backend, swap(128, 16, splits=splits), m, n, k, layout)


@pytest.mark.parametrize("overlap", [True, False])
def test_swap_ab_overlap_and_fp16(backend, overlap):
    check(backend, swap(128, 64, overlap=overlap), 64, 7168, 7168)
    check(backend, swap(64, 32, overlap=overlap), 17, 2112, 7168, out_dtype="float16")


def test_swap_ab_agrees_with_the_plain_kernel(backend):
    m, n, k = 31, 2112, 7168
    swapped = check(backend, swap(64, 32), m, n, k)
    plain = check(backend, Sm90Params.for_tile(64, 128), m, n, k)
    assert relative_error(swapped, plain.float()) < 1e-2


@pytest.mark.parametrize("splits", [1, 3])
def test_swap_ab_bitwise_reproducible(backend, splits):
    m, n, k = 17, 7168, 7168
    fn = backend.build(GemmProblem(m, n, k), swap(64, 32, splits=splits))
    a, b, sa, sb, _ = inputs(m, n, k)
    first = fn(a, b, sa, sb)
    assert all(torch.equal(first, fn(a, b, sa, sb)) for _ in range(3))


@pytest.mark.parametrize("splits", [1, 4])
def test_swap_ab_cuda_graph_replay(backend, splits):
    m, n, k = 3, 2112, 7168
    fn = backend.build(GemmProblem(m, n, k), swap(64, 16, splits=splits))
    assert_graph_replays(fn, m, n, k)  # replayed twice in a row with new data
