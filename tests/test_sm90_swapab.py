"""Swap-AB of the project's Hopper kernel (``Sm90Params.swap_ab``) without a GPU.

Params and ``KernelConfig`` validation, ``check`` reasons for every refused swap combination, the
compile-time identity (library name, cache key, generated source), the shared-memory mirror, the search
space (swap-AB at M <= 64 only) and the default, the cost model's swapped problem, and nvcc builds of two swap-AB
instantiations (no spills, no serialized wgmma; the C ABI reports swap-AB, the shared memory and stages
Python computed, the split-K workspace of the swapped problem, and refuses clusters before touching the
device). The GPU tests are ``tests/gpu/test_sm90_swapab_gpu.py``.
"""

from __future__ import annotations

import math

import pytest

from gemm.arch import get_arch
from gemm.kernels.base import BackendUnavailable, LaunchError
from gemm.kernels.nvcc import jit, toolchain
from gemm.kernels.sm90 import backend as sm90_backend
from gemm.kernels.sm90 import codegen, launcher, splitk
from gemm.kernels.sm90.backend import Sm90Backend, mma_problem
from gemm.kernels.sm90.params import KernelConfig, Sm90Params, shared_memory_bytes, stage_bytes, stages_that_fit
from gemm.problem import GemmProblem
from sm90_builds import clean_sm90_libraries
from gemm.tuner.model import roofline

H200 = get_arch("H200")
DECODE = [(1, 576, 7168), (3, 2112, 7168), (17, 7168, 512), (31, 2112, 256), (64, 7168, 7168)]


def swap(block_m=64, block_n=32, **fields) -> Sm90Params:
    return Sm90Params.for_tile(block_m, block_n, swap_ab=True, **fields)


# ----------------------------------------------------------------------------- params and configs

def test_params_validate_swap_ab():
    assert Sm90Params().swap_ab is False and swap().swap_ab is True
    with pytest.raises(ValueError, match="Sm90Params.swap_ab must be true/false"):
        Sm90Params(swap_ab=1)
    # The tile swap-AB needs is check()'s business (with a reason), not the params' domain ...
    assert Sm90Params(block_m=256, block_n=32, swap_ab=True).swap_ab
    # ... but a compile-time config that the kernel's static_assert refuses cannot be made.
    with pytest.raises(ValueError, match=r"KernelConfig.block_m must be one of \[64, 128\] with swap_ab"):
        KernelConfig(256, 32, 4, False, "bfloat16", True)
    with pytest.raises(ValueError, match="KernelConfig.swap_ab must be true/false"):
        KernelConfig(64, 32, 4, False, "bfloat16", "yes")


def test_kernel_config_name_and_short_carry_swap_ab():
    plain, swapped = Sm90Params.for_tile(64, 32), swap(64, 32)
    assert swapped.kernel_config().swap_ab and not plain.kernel_config().swap_ab
    assert plain.kernel_config().name == "sm90_64x32x128_s8_ov_bf16"  # unchanged without swap-AB
    assert swapped.kernel_config().name == "sm90_64x32x128_s8_ov_swab_bf16"
    assert swapped.short().endswith(",swab") and "swab" not in plain.short()
    assert Sm90Params.from_dict(swapped.to_dict()) == swapped


def test_cache_keys_and_source_differ_with_swap_ab(monkeypatch):
    monkeypatch.setenv("GEMM_NVCC", "/bin/true")  # the key needs a version, not a compiler
    monkeypatch.setattr(toolchain, "nvcc_version", lambda nvcc: "13.0.88")
    plain, swapped = KernelConfig(64, 32, 8, True), KernelConfig(64, 32, 8, True, "bfloat16", True)
    source = codegen.render_source(swapped)
    assert "MMA_64x32x32_F32E4M3E4M3_SS_TN<>, true>" in source and "gemm_sm90_swap_ab()" in source
    assert "MMA_64x32x32_F32E4M3E4M3_SS_TN<>, false>" in codegen.render_source(plain)
    assert "fp8_gemm_swapab.cuh" in codegen.HEADER_NAMES and codegen.ABI_VERSION >= 3  # 3: swap-AB
    try:
        tc = toolchain.find_toolchain()
    except BackendUnavailable as exc:
        pytest.skip(f"no CUTLASS headers: {exc}")
    assert jit.cache_key(codegen.build_spec(plain), tc) != jit.cache_key(codegen.build_spec(swapped), tc)


def test_shared_memory_of_swap_tiles():
    # Per stage: BLOCK_N activation scales padded to 128 bytes (TMA-aligned) instead of BLOCK_M; no epilogue buffer.
    assert stage_bytes(64, 16, swap_ab=True) == 64 * 128 + 16 * 128 + 128 + 16
    assert stage_bytes(128, 48, swap_ab=True) == 128 * 128 + 48 * 128 + 256 + 16
    assert stage_bytes(128, 48) == 128 * 128 + 48 * 128 + 512 + 16  # unchanged without swap-AB
    stages_end = 8 * stage_bytes(64, 32, swap_ab=True)
    assert shared_memory_bytes(64, 32, 8, swap_ab=True) == math.ceil(stages_end / 1024) * 1024 + 2 * 8 * 8 + 1024
    assert shared_memory_bytes(128, 64, 6, swap_ab=True) < shared_memory_bytes(128, 64, 6)
    assert stages_that_fit(128, 64, swap_ab=True) == 8


# ----------------------------------------------------------------------------- check

def test_check_refuses_every_unsupported_swap_combination():
    backend = Sm90Backend()
    problem = GemmProblem(16, 7168, 7168)
    for params in (swap(64, 16), swap(128, 16), swap(64, 64), swap(128, 48), swap(64, 32, splits=4),
                   swap(128, 64, overlap=False), swap(64, 32, raster="along_n", group=3)):
        assert backend.check(problem, params, H200) is None, params
    cases = [
        (problem, swap(256, 32), "swap-AB needs block_m in [64, 128]"),
        (problem, swap(64, 32, cluster_m=2), "swap-AB runs 1x1 clusters only"),
        (problem, swap(128, 16, cluster_n=2), "swap-AB runs 1x1 clusters only"),
        (GemmProblem(16, 7168, 256), swap(64, 32, splits=3), "splits=3 exceeds the 2 K blocks"),
        (GemmProblem(16, 7164, 7168), swap(), "N=7164 must be a multiple of 8"),
        (problem, swap(64, 256, overlap=False), "needs 256 fp32 accumulators"),
    ]
    for prob, params, pattern in cases:
        reason = backend.check(prob, params, H200)
        assert reason is not None and pattern in reason, (prob, params, reason)


def test_split_k_workspace_of_the_swapped_problem():
    # The workspace is per tile of the MMA's problem: N / BLOCK_M weight tiles x M / BLOCK_N token tiles.
    problem = GemmProblem(16, 7168, 7168)
    mma = mma_problem(problem, True)
    assert (mma.m, mma.n, mma.k) == (7168, 16, 7168) and mma_problem(problem, False) is problem
    assert splitk.partial_bytes(mma.m, mma.n, 64, 16, 4) == 112 * 3 * 64 * 16 * 4


# ----------------------------------------------------------------------------- space, default, model

@pytest.mark.parametrize("m,n,k", DECODE + [(65, 2112, 7168), (128, 2112, 7168), (1024, 4608, 7168)])
def test_space_offers_swap_at_small_m_only(m, n, k):
    backend = Sm90Backend()
    problem = GemmProblem(m, n, k)
    space = list(backend.param_space(problem, H200))
    swapped = [p for p in space if p.swap_ab]
    assert len(space) == len(set(space))
    assert not backend.default_params(problem, H200).swap_ab  # no measured rule for when it wins yet
    if m > sm90_backend.SWAP_MAX_M:
        assert not swapped
        return
    covering = math.ceil(m / 16) * 16
    tiles = {(p.block_m, p.block_n) for p in swapped}
    assert tiles == {(bm, bn) for bm in (64, 128) for bn in (16, 32, 48, 64) if bn <= covering}
    assert all(backend.check(problem, p, H200) is None for p in swapped)
    assert all((p.cluster_m, p.cluster_n) == (1, 1) for p in swapped)
    # Swap-AB candidates come last, after every candidate of the data-parallel and split-K kernels.
    first_swap = next(i for i, p in enumerate(space) if p.swap_ab)
    assert all(p.swap_ab for p in space[first_swap:])
    assert space[first_swap:] == list(backend.swap_ab_space(problem, H200))


def test_cost_model_times_the_swapped_problem():
    coefficients = roofline.Sm90Coefficients()
    problem = GemmProblem(16, 7168, 7168)
    swapped = roofline.sm90_us(problem, {"block_m": 64, "block_n": 16, "swap_ab": True}, H200, coefficients)
    transposed = roofline.sm90_us(GemmProblem(7168, 16, 7168), {"block_m": 64, "block_n": 16}, H200, coefficients)
    assert swapped == pytest.approx(transposed, rel=1e-3)
    plain = roofline.sm90_us(problem, {"block_m": 64, "block_n": 16}, H200, coefficients)
    assert swapped != plain


# ----------------------------------------------------------------------------- nvcc builds

@pytest.fixture(scope="module")
def swap_libraries(tmp_path_factory):
    """Real nvcc builds of two swap-AB instantiations (64x32 with overlap, 128x16 without; bf16)."""
    return clean_sm90_libraries(tmp_path_factory,
                                [swap(64, 32).kernel_config(), swap(128, 16, overlap=False).kernel_config()])


@pytest.mark.nvcc
def test_swap_builds_report_their_config(swap_libraries):
    for config, library in swap_libraries:
        assert library.swap_ab and library.config_name == config.name
        assert library.stages == config.stages
        assert library.shared_memory_bytes == config.shared_memory_bytes


@pytest.mark.nvcc
def test_swap_workspace_is_the_swapped_problems(swap_libraries):
    for config, library in swap_libraries:
        for m, n, k, splits in [(1, 576, 7168, 8), (17, 2112, 512, 4), (64, 7168, 7168, 2), (31, 2112, 7168, 1)]:
            params = swap(config.block_m, config.block_n, splits=splits)
            got = library.workspace_sizes(m, n, k, launcher.run_options(params))
            assert got == (splitk.counter_slots(n, m, config.block_m, config.block_n, splits),
                           splitk.partial_bytes(n, m, config.block_m, config.block_n, splits)), (config, m, n, k)


@pytest.mark.nvcc
def test_swap_run_refuses_clusters_before_touching_the_device(swap_libraries):
    _, library = swap_libraries[0]
    aligned = 1 << 20  # never dereferenced: the call fails before the launch
    for cluster in ((2, 1), (1, 2)):
        with pytest.raises(LaunchError, match="swap-AB runs 1x1 clusters only"):
            library.run(aligned, aligned, aligned, aligned, aligned, 16, 2112, 7168, 7168, False, 56,
                        launcher.RunOptions(*cluster, 0, 8, 0, 1), 0)


@pytest.mark.nvcc
def test_launcher_refuses_params_of_the_other_kind(swap_libraries):
    config, library = swap_libraries[0]
    plain = Sm90Params.for_tile(config.block_m, config.block_n)  # the same tile without swap-AB
    with pytest.raises(LaunchError, match="a swap-AB library for params with swap_ab=False"):
        launcher.make_gemm_fn(library, GemmProblem(16, 2112, 7168), plain)
