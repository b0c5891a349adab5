import pytest
import torch

from gemm.problem import GemmInputError, activation_scale_layout
from gemm.quant import FP8_MAX, mn_major_scales, per_block_quant_fp8, per_token_group_quant_fp8, random_problem_inputs
from gemm.reference import dequantize_activation, dequantize_weight


@pytest.mark.parametrize("m,k", [(1, 128), (3, 512), (17, 300), (5, 7168)])
def test_activation_round_trip(m, k):
    x = torch.randn(m, k) * torch.logspace(-2, 2, m)[:, None]
    q, s = per_token_group_quant_fp8(x, 128)
    assert q.dtype == torch.float8_e4m3fn and q.shape == (m, k) and q.is_contiguous()
    assert s.dtype == torch.float32 and s.shape == (m, -(-k // 128))
    back = dequantize_activation(q, s, 128)
    # e4m3 keeps 3 mantissa bits: relative error per element <= 2^-4 of the group's scale range
    assert torch.linalg.norm(back - x) / torch.linalg.norm(x) < 0.04
    # each group's largest magnitude maps to the top of the e4m3 range
    assert q.float().abs().amax(dim=1).min() >= FP8_MAX * 0.99


@pytest.mark.parametrize("n,k", [(128, 128), (576, 512), (130, 300), (2112, 256)])
def test_weight_round_trip_ragged(n, k):
    w = torch.randn(n, k)
    w[:64] *= 100.0  # blocks of different magnitude get different scales
    q, s = per_block_quant_fp8(w, (128, 128))
    assert q.shape == (n, k) and s.shape == (-(-n // 128), -(-k // 128))
    back = dequantize_weight(q, s, (128, 128))
    assert torch.linalg.norm(back - w) / torch.linalg.norm(w) < 0.04
    if n > 128:  # the first N-block holds the large rows
        assert s[0, 0] > 10 * s[-1, -1]


def test_zero_groups_stay_finite():
    q, s = per_token_group_quant_fp8(torch.zeros(2, 256))
    assert torch.isfinite(s).all() and (q.float() == 0).all()


def test_quant_rejects_bad_input():
    with pytest.raises(GemmInputError, match="x must be 2-D"):
        per_token_group_quant_fp8(torch.randn(4))
    with pytest.raises(GemmInputError, match="group_size"):
        per_token_group_quant_fp8(torch.randn(2, 128), group_size=0)
    with pytest.raises(GemmInputError, match="w must be a float16/bfloat16/float32"):
        per_block_quant_fp8(torch.ones(2, 2, dtype=torch.int32))
    with pytest.raises(GemmInputError, match="block_size"):
        per_block_quant_fp8(torch.randn(2, 2), block_size=(128,))


def test_random_inputs_are_fresh_and_varied():
    a1, b1, sa1, sb1 = random_problem_inputs(4, 256, 256)
    a2, *_ = random_problem_inputs(4, 256, 256)
    assert not torch.equal(a1.float(), a2.float())
    assert sa1.unique().numel() > 1 and sb1.unique().numel() > 1
    a3, *_ = random_problem_inputs(4, 256, 256, seed=7)
    a4, *_ = random_problem_inputs(4, 256, 256, seed=7)
    assert torch.equal(a3.float(), a4.float())


@pytest.mark.parametrize("m,k", [(1, 128), (3, 512), (17, 300), (8, 7168)])
def test_mn_major_scales_hold_the_same_values_in_a_tma_aligned_layout(m, k):
    x = torch.randn(m, k) * torch.logspace(-2, 2, m)[:, None]
    q_row, s_row = per_token_group_quant_fp8(x, 128)
    q_mn, s_mn = per_token_group_quant_fp8(x, 128, scale_layout="mn_major")
    assert torch.equal(q_row.float(), q_mn.float()) and torch.equal(s_row, s_mn)
    padded = -(-m // 4) * 4
    assert s_mn.shape == (m, -(-k // 128)) and s_mn.stride() == (1, padded)
    assert s_mn.data_ptr() % 16 == 0
    assert activation_scale_layout(s_mn) == ("mn_major", padded)
    assert activation_scale_layout(s_row)[0] == "row_major"


def test_unknown_scale_layout_is_named():
    with pytest.raises(GemmInputError, match="scale_layout must be one of"):
        per_token_group_quant_fp8(torch.randn(2, 128), scale_layout="k_major")


def test_mn_major_scales_of_row_major_scales_match_the_quantizer():
    x = torch.randn(5, 300)
    _, s_row = per_token_group_quant_fp8(x, 128)
    _, s_mn = per_token_group_quant_fp8(x, 128, scale_layout="mn_major")
    converted = mn_major_scales(s_row)
    assert converted.stride() == s_mn.stride() == (1, 8) and torch.equal(converted, s_row)
    with pytest.raises(GemmInputError, match="a_scale must be a 2-D tensor"):
        mn_major_scales(torch.ones(3))
