"""Every bad input of the op gets a GemmInputError naming the argument."""

import pytest
import torch

import gemm
from gemm.problem import GemmProblem, validate_inputs
from gemm.quant import random_problem_inputs


@pytest.fixture
def good():
    return random_problem_inputs(8, 256, 384)


def _strided_mn(sa: torch.Tensor, ld: int) -> torch.Tensor:
    """``sa``'s values in an MN-major view with leading dimension ``ld`` (element (m, kb) at kb * ld + m)."""
    m, kb = sa.shape
    buffer = torch.zeros(kb, ld)
    buffer[:, :m] = sa.t()
    return buffer[:, :m].t()


def _call(a, b, sa, sb, **kw):
    return gemm.w8a8_block_fp8_matmul(a, b, sa, sb, **kw)


def test_good_inputs_pass(good):
    assert validate_inputs(*good) == GemmProblem(8, 256, 384)


@pytest.mark.parametrize("mutate,pattern", [
    (lambda a, b, sa, sb: (a.float(), b, sa, sb), "a must have dtype torch.float8_e4m3fn"),
    (lambda a, b, sa, sb: (a, b.to(torch.bfloat16), sa, sb), "b must have dtype torch.float8_e4m3fn"),
    (lambda a, b, sa, sb: (a[None], b, sa, sb), "a must be 2-D"),
    (lambda a, b, sa, sb: (a, b[:, :256], sa, sb), r"b must have shape \[N, K\] with K = a.shape\[1\] = 384"),
    (lambda a, b, sa, sb: (a, b, sa.double(), sb), "a_scale must have dtype torch.float32"),
    (lambda a, b, sa, sb: (a, b, sa[:, :2], sb), r"a_scale must have shape \[8, 3\]"),
    (lambda a, b, sa, sb: (a, b, sa, sb[:1]), r"b_scale must have shape \[2, 3\]"),
    (lambda a, b, sa, sb: (a, b, _strided_mn(sa, 9), sb), "a_scale must be row-major .* or MN-major"),
    (lambda a, b, sa, sb: (a, b.t().contiguous().t(), sa, sb), "b must be contiguous"),
    (lambda a, b, sa, sb: (a.t().contiguous().t(), b, sa, sb), "a must be row-major with unit stride along K"),
    (lambda a, b, sa, sb: (a, b, sa, "scales"), "b_scale must be a torch.Tensor"),
    (lambda a, b, sa, sb: (a, b, sa, sb.to("meta")), "b_scale is on meta but a is on cpu"),
])
def test_bad_inputs_named(good, mutate, pattern):
    with pytest.raises(gemm.GemmInputError, match=pattern):
        _call(*mutate(*good))


def test_bad_block_size_and_dtype(good):
    with pytest.raises(gemm.GemmInputError, match=r"block_size \[64, 64\] is not supported"):
        _call(*good, block_size=(64, 64))
    with pytest.raises(gemm.GemmInputError, match="block_size must be a pair"):
        _call(*good, block_size=128)
    with pytest.raises(gemm.GemmInputError, match="out_dtype must be one of"):
        _call(*good, out_dtype=torch.int8)


def test_mn_major_activation_scales_accepted(good):
    a, b, sa, sb = good
    mn = _strided_mn(sa, 8)
    assert mn.stride() == (1, 8) and torch.equal(mn, sa)
    assert validate_inputs(a, b, mn, sb) == GemmProblem(8, 256, 384)
    quantized = gemm.per_token_group_quant_fp8(torch.randn(8, 384), 128, scale_layout="mn_major")[1]
    assert validate_inputs(a, b, quantized, sb).m == 8


def test_sliced_activation_rows_accepted(good):
    a, b, sa, sb = good
    wide = torch.zeros(8, 512, dtype=torch.float8_e4m3fn)
    wide[:, :384] = a
    assert validate_inputs(wide[:, :384], b, sa, sb).k == 384


def test_problem_rejects_nonsense():
    with pytest.raises(gemm.GemmInputError, match="GemmProblem.m must be a positive int"):
        GemmProblem(0, 1, 1)
    with pytest.raises(gemm.GemmInputError, match="out_dtype"):
        GemmProblem(1, 1, 1, out_dtype="int8")
