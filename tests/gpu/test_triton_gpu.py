"""Triton backend and the op on a Hopper GPU: correctness over DeepSeek-V3 shapes, compile and graphs."""

import pytest
import torch

import gemm
from graphs import refill
from gemm.arch import detect_arch
from gemm.kernels.classic_triton import classic_block_fp8_matmul
from gemm.kernels.triton_fp8 import TritonBackend, TritonParams, launch
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error

SHAPES = [(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304),
          (576, 7168), (36864, 7168), (7168, 18432)]
M_VALUES = [1, 3, 16, 64, 100, 128, 512, 1024, 4096]

VARIANTS = [
    TritonParams(16, 64, 128, 8, 4, 4, 1),
    TritonParams(16, 128, 128, 8, 4, 4, 4),
    TritonParams(32, 128, 128, 8, 4, 4, 2, use_tma=True),
    TritonParams(64, 128, 128, 8, 4, 3, 1, use_tma=True),
    TritonParams(128, 128, 128, 8, 8, 3, 1),
    TritonParams(128, 256, 128, 8, 8, 3, 1, use_tma=True, persistent=True),
    TritonParams(128, 128, 128, 8, 8, 4, 1, use_tma=False, persistent=True),
    TritonParams(64, 256, 128, 8, 8, 3, 1, use_tma=True, persistent=True, k_unroll=2),
    TritonParams(64, 128, 128, 8, 4, 3, 2, use_tma=False, k_unroll=2),
]


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("m", M_VALUES)
def test_op_matches_reference(m, n, k):
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
    out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
    assert out.shape == (m, n) and out.dtype == torch.bfloat16
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2


@pytest.mark.parametrize("params", VARIANTS, ids=lambda p: p.short())
@pytest.mark.parametrize("m,n,k", [(1, 576, 7168), (3, 2112, 7168), (100, 7168, 2304), (1024, 4096, 512),
                                   (130, 3072, 1536), (4096, 2112, 7168)])
def test_variants_match_reference(params, m, n, k):
    problem = GemmProblem(m, n, k)
    if TritonBackend().check(problem, params, detect_arch()) is not None:
        pytest.skip("variant rejected for this problem")
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
    ref = reference_matmul(a, b, sa, sb)
    for _ in range(3):  # split-K counters must be left at zero: repeat launches
        out = launch(a, b, sa, sb, params)
        assert relative_error(out, ref) < 1e-2


def test_split_k_is_deterministic():
    a, b, sa, sb = random_problem_inputs(16, 7168, 2048, device="cuda")
    params = TritonParams(16, 128, 128, 8, 4, 4, 8)
    first = launch(a, b, sa, sb, params)
    for _ in range(5):
        assert torch.equal(launch(a, b, sa, sb, params), first)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_other_output_dtypes(out_dtype):
    a, b, sa, sb = random_problem_inputs(64, 2112, 7168, device="cuda")
    out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb, out_dtype=out_dtype)
    assert out.dtype == out_dtype
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 5e-3


def test_classic_kernel_matches_reference():
    a, b, sa, sb = random_problem_inputs(100, 2112, 7168, device="cuda")
    assert relative_error(classic_block_fp8_matmul(a, b, sa, sb), reference_matmul(a, b, sa, sb)) < 1e-2


def test_torch_compile_fullgraph():
    a, b, sa, sb = random_problem_inputs(64, 4096, 512, device="cuda")

    @torch.compile(fullgraph=True)
    def f(a, b, sa, sb):
        return gemm.w8a8_block_fp8_matmul(a, b, sa, sb) * 2

    out = f(a, b, sa, sb)
    assert relative_error(out, 2 * reference_matmul(a, b, sa, sb)) < 1e-2


@pytest.mark.parametrize("m", [1, 16, 512])
def test_cuda_graph_capture(m):
    a, b, sa, sb = random_problem_inputs(m, 7168, 2048, device="cuda")
    gemm.w8a8_block_fp8_matmul(a, b, sa, sb)  # warm up (compile) before capture, as engines do
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
    a2, b2, sa2, sb2 = random_problem_inputs(m, 7168, 2048, device="cuda")
    refill((a, b, sa, sb), (a2, b2, sa2, sb2))
    graph.replay()
    torch.cuda.synchronize()
    assert relative_error(out, reference_matmul(a2, b2, sa2, sb2)) < 1e-2
