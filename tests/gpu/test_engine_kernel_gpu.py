"""The engines' Triton kernel on the GPU, with the configs the engines ship, against the fp32 reference.

Every distinct config of the carried vLLM/SGLang H200 files and of the test data (BLOCK_SIZE_K = 64
among them) runs at its file's shape and at its key's M (and one more row, so tiles are ragged), in
both engines' launches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gemm.configs.engine_files import read_engine_file
from gemm.kernels import get_backend
from gemm.kernels.classic_triton import ClassicParams
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "engine_configs" / "baselines").rglob("*.json")) + sorted(
    (REPO / "tests" / "data" / "engine_files").rglob("*.json"))


def _cases():
    seen = {}
    for path in FILES:
        table = read_engine_file(path)
        for m, c in table.entries:
            params = ClassicParams(c["BLOCK_SIZE_M"], c["BLOCK_SIZE_N"], c["BLOCK_SIZE_K"], c["GROUP_SIZE_M"],
                                   c["num_warps"], c["num_stages"])
            seen.setdefault(params, (min(m + 1, 4097), table.n, table.k))
    return [(params, *point) for params, point in seen.items()]


CASES = _cases()


def test_cases_include_what_matters():
    assert any(p.block_k == 64 for p, *_ in CASES) and any(p.num_warps == 8 for p, *_ in CASES)


@pytest.mark.parametrize("launch", ["vllm", "sglang"])
@pytest.mark.parametrize("params,m,n,k", CASES, ids=[f"{c[0].short()}@{c[1]}x{c[2]}x{c[3]}" for c in CASES])
def test_engine_kernel_matches_reference(params, m, n, k, launch):
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda", seed=m * 31 + n + k)
    fn = get_backend(f"{launch}_triton").build(GemmProblem(m, n, k), params)
    out = fn(a, b, sa, sb)
    torch.cuda.synchronize()
    assert out.dtype == torch.bfloat16 and out.shape == (m, n)
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2
