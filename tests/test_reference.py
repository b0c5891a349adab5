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


def test_relative_error_over_row_blocks_equals_the_whole_matrix_metric(monkeypatch):
    import gemm.reference as reference

    out, ref = torch.randn(37, 19), torch.randn(37, 19)
    whole = float(torch.linalg.vector_norm((out.double() - ref.double())) / torch.linalg.vector_norm(ref.double()))
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", 40)  # blocks of 2 rows, the last one short
    assert [tuple(o.shape) for o, _ in reference.fp64_row_chunks(out, ref, 40)][-1] == (1, 19)
    assert relative_error(out, ref) == pytest.approx(whole, rel=1e-12)
    late_nan = out.clone()
    late_nan[-1, -1] = float("nan")  # only the last block sees it
    assert relative_error(late_nan, ref) == math.inf
