"""Shipped configs of this GPU: every file validates, loads, and its entries run correctly through the op."""

from pathlib import Path

import pytest
import torch

import gemm
from gemm import dispatch
from gemm.configs import find_config, load_config_file, validate_config_file
from gemm.kernels import get_backend
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error

ROOT = Path(__file__).resolve().parents[2] / "tuned_configs"


def _files_of_this_gpu():
    if not torch.cuda.is_available():
        return []
    name = dispatch.arch_for_device("cuda", 0).config_device_name
    return sorted((ROOT / name).glob("N=*.json"))


FILES = _files_of_this_gpu()


@pytest.fixture(scope="module", autouse=True)
def cutlass_kernels_built():
    """Compile the CUTLASS kernels the shipped files name, in parallel, before any test uses one.

    Built one at a time on first use, a fresh machine spends minutes in nvcc inside the tests.
    """
    if not FILES or get_backend("cutlass").unavailable_reason(torch.device("cuda", 0)) is not None:
        return
    from gemm.kernels.cutlass.aot import build_kernels, kernel_configs_in_config_files

    build_kernels(kernel_configs_in_config_files(FILES))


@pytest.mark.skipif(not FILES, reason="no shipped configs for this GPU")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name.split(",device")[0])
def test_shipped_entries_dispatch_and_are_correct(path):
    assert validate_config_file(path) == []
    config = load_config_file(path)
    arch = dispatch.arch_for_device("cuda", 0)
    assert find_config(arch.config_device_name, config.n, config.k) is not None
    unavailable = {}
    for m, entry in config.entries.items():
        tuned_backend = get_backend(entry.backend)
        reason = tuned_backend.unavailable_reason(torch.device("cuda", 0))
        for mm in (m, m + 1):  # the tuned M, and one that takes the nearest entry
            backend, params = dispatch.choose(GemmProblem(mm, config.n, config.k), "cuda", 0)
            if mm == m and reason is None:
                assert (backend.name, params.to_dict()) == (entry.backend, tuned_backend.params_from_dict(
                    entry.params).to_dict())
            elif mm == m:  # the entry cannot run here: the op must have fallen back to one that can
                assert backend.name != entry.backend
                unavailable.setdefault(f"{entry.backend} ({reason})", []).append(m)
            a, b, sa, sb = random_problem_inputs(mm, config.n, config.k, device="cuda")
            out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
            err = relative_error(out, reference_matmul(a, b, sa, sb))
            assert err < 1e-2, f"M={mm}: {backend.name} {params.short()} error {err:.3g}"
    if unavailable:  # the fallbacks were right, but the tuned entries themselves did not run
        pytest.skip("; ".join(f"entries at M={ms} need {what}" for what, ms in unavailable.items()))
