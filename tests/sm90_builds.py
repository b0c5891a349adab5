"""Real nvcc builds of sm90 kernel configs for compile-only tests: each must build with no spill bytes and
no serialized wgmma (ptxas C7510/C7514); skips where nvcc or the CUTLASS headers are missing."""

from __future__ import annotations

import pytest

from gemm.kernels.base import BackendUnavailable
from gemm.kernels.nvcc import jit, toolchain
from gemm.kernels.sm90 import codegen, launcher
from gemm.kernels.sm90.params import KernelConfig


def clean_sm90_libraries(tmp_path_factory, configs: list[KernelConfig]) -> list[tuple[KernelConfig, launcher.Sm90Library]]:
    """Build each config into a fresh cache; return (config, loaded library) pairs in order."""
    cache = tmp_path_factory.mktemp("cache")
    try:
        tc = toolchain.find_toolchain()
    except BackendUnavailable as exc:
        pytest.skip(f"the sm90 compile test needs nvcc and the CUTLASS headers: {exc}")
    monkey = pytest.MonkeyPatch()
    monkey.setenv("GEMM_CACHE_DIR", str(cache))
    try:
        libraries = []
        for config in configs:
            built = jit.build(codegen.build_spec(config), tc)
            assert built.spill_bytes == 0, built
            log = (built.path.parent / jit.LOG_NAME).read_text()
            assert "C7510" not in log and "C7514" not in log, "ptxas serialized the wgmma instructions"
            libraries.append((config, launcher.Sm90Library(built.path)))
    finally:
        monkey.undo()
    return libraries
