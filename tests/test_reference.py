import math

import pytest
import torch

from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error


def test_reference_equals_blockwise_sum():
    a, b, sa, sb = random_problem_inputs(5, 130, 300)
    ref = reference_matmul(a, b, sa, sb)
    # Explicit per-block sum, independent of the expand-then-matmul implementation.
    expected = torch.zeros(5, 130, dtype=torch.float64)
    for kb in range(sa.shape[1]):
        ks = slice(kb * 128, min(300, (kb + 1) * 128))
        part = a[:, ks].double() @ b[:, ks].double().t()
        scale_b = sb[:, kb].double().repeat_interleave(128)[:130]
        expected += part * sa[:, kb].double()[:, None] * scale_b[None, :]
    assert torch.allclose(ref.double(), expected, rtol=1e-5, atol=1e-5)


def test_relative_error_metric():
    ref = torch.randn(8, 8)
    assert relative_error(ref, ref) == 0.0
    assert relative_error(ref * 1.01, ref) == pytest.approx(0.01, rel=1e-4)
    bad = ref.clone()
    bad[0, 0] = float("nan")
    assert relative_error(bad, ref) == math.inf
    with pytest.raises(ValueError, match="shape"):
        relative_error(ref[:4], ref)
