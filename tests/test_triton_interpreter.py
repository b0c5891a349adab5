"""The Triton kernel under TRITON_INTERPRET=1 on ragged shapes, split-K, TMA and K unrolling."""

import os

import pytest
import torch

from gemm.arch import interpreter_arch
from gemm.kernels.base import UnsupportedProblem
from gemm.kernels.triton_fp8 import TritonBackend, TritonParams, launch
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="CPU interpreter tests")

CASES = [
    # (M, N, K, params)
    (1, 192, 256, TritonParams(16, 64, 128, 8, 4, 2)),
    (3, 576, 512, TritonParams(16, 64, 128, 8, 4, 2, split_k=4)),
    (17, 130, 300, TritonParams(16, 64, 128, 2, 4, 2, split_k=2)),
    (20, 320, 640, TritonParams(32, 64, 128, 8, 4, 2, split_k=3)),
    (33, 200, 512, TritonParams(32, 128, 128, 8, 4, 2, use_tma=True)),
    (40, 256, 704, TritonParams(32, 64, 64, 2, 4, 2, use_tma=True, k_unroll=2)),
    (65, 384, 640, TritonParams(64, 128, 128, 8, 4, 2, k_unroll=2, split_k=2)),
    (9, 256, 384, TritonParams(16, 256, 128, 8, 4, 2)),
]


@pytest.mark.parametrize("m,n,k,params", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}-{c[3].short()}" for c in CASES])
def test_kernel_matches_reference(m, n, k, params):
    problem = GemmProblem(m, n, k)
    assert TritonBackend().check(problem, params, interpreter_arch()) is None
    a, b, sa, sb = random_problem_inputs(m, n, k)
    out = launch(a, b, sa, sb, params)
    assert out.shape == (m, n) and out.dtype == torch.bfloat16
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2


def test_split_k_counters_reset_between_launches():
    a, b, sa, sb = random_problem_inputs(5, 128, 512)
    params = TritonParams(16, 64, 128, 8, 4, 2, split_k=4)
    first = launch(a, b, sa, sb, params)
    second = launch(a, b, sa, sb, params)
    assert torch.equal(first, second)
    assert relative_error(second, reference_matmul(a, b, sa, sb)) < 1e-2


def test_outgrown_split_k_counters_stay_allocated(monkeypatch):
    """A graph captured with the old counters replays with their address: growing must not free them."""
    import weakref

    from gemm.kernels import triton_fp8

    monkeypatch.setattr(triton_fp8, "_LOCKS", {})
    monkeypatch.setattr(triton_fp8, "_RETIRED_LOCKS", [])
    device = torch.device("cpu")
    small = triton_fp8._split_k_counters(device, 10)
    alive = weakref.ref(small)
    address = small.data_ptr()
    del small
    grown = triton_fp8._split_k_counters(device, 100_000)
    assert grown.numel() >= 100_000 and grown.data_ptr() != address
    assert alive() is not None and alive().data_ptr() == address
    assert triton_fp8._split_k_counters(device, 10) is grown  # later small launches use the grown counters


@pytest.mark.parametrize("out_dtype,tol", [(torch.float16, 5e-3), (torch.float32, 1e-3)])
def test_output_dtypes(out_dtype, tol):
    a, b, sa, sb = random_problem_inputs(7, 192, 256)
    out = launch(a, b, sa, sb, TritonParams(16, 64, 128, 8, 4, 2), out_dtype=out_dtype)
    assert out.dtype == out_dtype
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < tol


def test_wrong_result_is_detectable():
    """Guard against a vacuous check: a wrong scale index must push the error far above the bound."""
    a, b, sa, sb = random_problem_inputs(4, 256, 512)
    # Random scales of one row can be nearly equal across K blocks; spreading them by
    # known factors makes the reversed index wrong by design, not by luck of the draw.
    sa = sa * torch.tensor([1.0, 8.0, 0.125, 2.0])
    out = launch(a, b, sa.flip(1).contiguous(), sb, TritonParams(16, 64, 128, 8, 4, 2))
    assert relative_error(out, reference_matmul(a, b, sa, sb)) > 0.1


def test_check_and_build_reject_impossible_params():
    backend, arch = TritonBackend(), interpreter_arch()
    problem = GemmProblem(8, 256, 300)
    assert "TMA needs K" in backend.check(problem, TritonParams(use_tma=True), arch)
    assert "split_k" in backend.check(problem, TritonParams(split_k=8), arch)
    assert "shared memory" in backend.check(GemmProblem(512, 512, 512),
                                            TritonParams(128, 256, 128, 8, 8, 8), arch)
    with pytest.raises(UnsupportedProblem, match="TMA needs K"):
        backend.build(problem, TritonParams(use_tma=True))


def test_param_space_has_valid_candidates_for_each_regime():
    backend, arch = TritonBackend(), interpreter_arch()
    for m in (1, 48, 200, 2048):
        problem = GemmProblem(m, 2112, 7168)
        valid = [p for p in backend.param_space(problem, arch) if backend.check(problem, p, arch) is None]
        assert len(valid) >= 10
        assert backend.check(problem, backend.default_params(problem, arch), arch) is None
