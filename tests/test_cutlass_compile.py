"""Real nvcc builds of CUTLASS blockwise FP8 instantiations (no GPU needed).

Builds the default kernel (cooperative 128x128x128, persistent, bf16 output)
into a private cache, loads the library with ctypes and reads what the build
decided. About 40-60 s on one core; skipped when nvcc or the headers are missing.
With CUTLASS 4.3 or newer (``GEMM_CUTLASS_DIR``), also the 256x128 tile the
backend then offers, which must not spill.
"""

from __future__ import annotations

import pytest
import torch

from gemm.kernels.base import BackendUnavailable, LaunchError
from gemm.kernels.cutlass import jit, launcher, support
from gemm.kernels.nvcc import toolchain
from gemm.kernels.cutlass.config import CutlassParams, KernelConfig


@pytest.fixture
def built_toolchain(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMM_CACHE_DIR", str(tmp_path / "cache"))
    try:
        return toolchain.find_toolchain()
    except BackendUnavailable as exc:
        pytest.skip(f"CUTLASS compile test needs nvcc and the CUTLASS headers: {exc}")


@pytest.mark.nvcc
def test_nvcc_builds_a_blockwise_instantiation(built_toolchain, tmp_path):
    config = CutlassParams().kernel_config("bfloat16")
    result = jit.build(config, built_toolchain)
    assert not result.cached and result.path.is_file()
    assert result.path.is_relative_to(tmp_path / "cache" / "cutlass")
    # The measured register budget of this tile; a spill would mean a much slower kernel.
    assert result.registers is not None and result.registers <= 168
    assert result.spill_bytes == 0
    log = (result.path.parent / jit.LOG_NAME).read_text()
    assert "C7510" not in log, "ptxas serialized the wgmma instructions (is -DNDEBUG missing?)"

    library = launcher.KernelLibrary(result.path)  # statically linked runtime: loads without a GPU
    assert library.config_name == config.name
    assert library.stages >= 4
    assert 150_000 < library.shared_memory_bytes <= 232_448
    assert jit.build(config, built_toolchain).cached

    if not torch.cuda.is_available():
        # Without a device the library must answer with an error, not crash.
        options = launcher.runtime_options(CutlassParams())
        with pytest.raises(LaunchError, match="cudaGetDevice"):
            library.can_implement(128, 256, 512, 512, options)


@pytest.mark.nvcc
def test_wide_tile_builds_without_spills_where_it_is_offered(built_toolchain):
    version = built_toolchain.cutlass.version
    if not support.wide_tile_offered(version):
        pytest.skip(f"CUTLASS {built_toolchain.cutlass.version_string} does not offer the 256x128 tile "
                    f"(it spills before {support.version_string(support.WIDE_TILE_MIN_CUTLASS)}); "
                    f"see scripts/fetch_cutlass_headers.py")
    result = jit.build(KernelConfig(tile_m=256), built_toolchain)
    assert result.registers is not None and result.registers <= 168
    assert result.spill_bytes == 0, "the 256x128 tile spills: it must not be offered with this release"
    assert "C7510" not in (result.path.parent / jit.LOG_NAME).read_text()
    library = launcher.KernelLibrary(result.path)
    assert library.stages == 4 and library.shared_memory_bytes <= 232_448
