"""NaN or inf scales: NaN/inf outputs unless the cheap opt-in check (keyword or GEMM_CHECK_SCALES) is on."""

import os

import pytest
import torch

import gemm
from gemm import ops
from gemm.quant import random_problem_inputs

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="CPU interpreter tests")


def _inputs(bad: str, value: float):
    a, b, sa, sb = random_problem_inputs(2, 128, 256)
    (sa if bad == "a_scale" else sb)[0, 0] = value
    return a, b, sa, sb


def test_unchecked_nan_scales_give_nan_outputs(monkeypatch):
    monkeypatch.delenv("GEMM_CHECK_SCALES", raising=False)
    out = gemm.w8a8_block_fp8_matmul(*_inputs("a_scale", float("nan")))
    assert torch.isnan(out.float()).any()


@pytest.mark.parametrize("bad", ["a_scale", "b_scale"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_the_check_names_the_scale_tensor(bad, value, monkeypatch):
    monkeypatch.delenv("GEMM_CHECK_SCALES", raising=False)
    with pytest.raises(gemm.GemmInputError, match=f"{bad} holds 1 NaN or inf value"):
        gemm.w8a8_block_fp8_matmul(*_inputs(bad, value), check_scales=True)


def test_the_environment_switches_the_check_on_and_the_keyword_wins(monkeypatch):
    inputs = _inputs("b_scale", float("inf"))
    monkeypatch.setenv("GEMM_CHECK_SCALES", "1")
    with pytest.raises(gemm.GemmInputError, match="b_scale"):
        gemm.w8a8_block_fp8_matmul(*inputs)
    assert gemm.w8a8_block_fp8_matmul(*inputs, check_scales=False).shape == (2, 128)
    monkeypatch.setenv("GEMM_CHECK_SCALES", "0")
    assert gemm.w8a8_block_fp8_matmul(*inputs).shape == (2, 128)
    monkeypatch.setenv("GEMM_CHECK_SCALES", "perhaps")
    with pytest.raises(ValueError, match="GEMM_CHECK_SCALES must be 1 or 0"):
        gemm.w8a8_block_fp8_matmul(*inputs)


def test_finite_scales_pass_the_check(monkeypatch):
    monkeypatch.setenv("GEMM_CHECK_SCALES", "1")
    a, b, sa, sb = random_problem_inputs(2, 128, 256)
    assert gemm.w8a8_block_fp8_matmul(a, b, sa, sb).shape == (2, 128)


def test_the_check_is_skipped_while_capturing_and_compiling(monkeypatch):
    monkeypatch.setenv("GEMM_CHECK_SCALES", "1")
    inputs = _inputs("a_scale", float("nan"))
    monkeypatch.setattr(ops, "_capturing", lambda: True)  # as under CUDA-graph capture: no host sync allowed
    assert torch.isnan(gemm.w8a8_block_fp8_matmul(*inputs).float()).any()
    monkeypatch.undo()
    monkeypatch.setenv("GEMM_CHECK_SCALES", "1")

    @torch.compile(fullgraph=True, backend="eager")
    def f(a, b, sa, sb):
        return gemm.w8a8_block_fp8_matmul(a, b, sa, sb, check_scales=True).float() + 1.0

    assert torch.isnan(f(*inputs)).any()  # traced without the check, and without a graph break
