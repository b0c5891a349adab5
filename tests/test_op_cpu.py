"""The public op on CPU tensors under the Triton interpreter, including torch.compile."""

import os

import pytest
import torch

import gemm
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="CPU interpreter tests")


@pytest.mark.parametrize("m,n,k", [(1, 576, 512), (5, 130, 300), (24, 256, 1024)])
def test_op_matches_reference(m, n, k):
    a, b, sa, sb = random_problem_inputs(m, n, k)
    out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
    assert out.shape == (m, n) and out.dtype == torch.bfloat16
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2


def test_op_is_a_registered_custom_op():
    a, b, sa, sb = random_problem_inputs(2, 128, 256)
    out = torch.ops.gemm.w8a8_block_fp8_matmul(a, b, sa, sb, 128, 128, torch.bfloat16)
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2


def test_torch_compile_fullgraph():
    a, b, sa, sb = random_problem_inputs(4, 256, 384)

    @torch.compile(fullgraph=True, backend="eager")
    def f(a, b, sa, sb):
        return gemm.w8a8_block_fp8_matmul(a, b, sa, sb).float() + 1.0

    out = f(a, b, sa, sb)
    assert relative_error(out - 1.0, reference_matmul(a, b, sa, sb)) < 1e-2


def test_op_takes_mn_major_activation_scales():
    x = torch.randn(5, 300)
    a, sa = gemm.per_token_group_quant_fp8(x, 128, scale_layout="mn_major")
    b, sb = gemm.per_block_quant_fp8(torch.randn(130, 300) * 0.05, (128, 128))
    assert sa.stride() == (1, 8)
    out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
    assert relative_error(out, reference_matmul(a, b, sa.contiguous(), sb)) < 1e-2
