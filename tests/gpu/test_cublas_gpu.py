"""cuBLAS blockwise backend: correct wherever ``check`` accepts the problem."""

import pytest

from gemm.arch import detect_arch
from gemm.kernels.cublas import CublasBackend, CublasParams
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error

SHAPES = [(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304), (576, 7168)]


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("m", [1, 3, 16, 100, 1024])
def test_cublas_backend_correct_where_accepted(m, n, k):
    backend, problem = CublasBackend(), GemmProblem(m, n, k)
    reason = backend.check(problem, CublasParams(), detect_arch())
    if reason is not None:
        assert "K/128" in reason and problem.k_blocks % 4
        pytest.skip(reason)
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
    out = backend.build(problem, CublasParams())(a, b, sa, sb)
    assert out.shape == (m, n)
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2
