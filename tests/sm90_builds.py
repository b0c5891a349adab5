"""Real nvcc builds of sm90 kernel configs for compile-only tests: each must build with no spill bytes and
no serialized wgmma (ptxas C7510/C7514); skips where nvcc or the CUTLASS headers are missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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


def run_host_program(tmp_path: Path, name: str, source: str, stdin: str | None = None) -> list[str]:
    """Compile ``source`` (C++ that includes the sm90 headers, run on the host) with nvcc and return its
    stdout lines; skips where no nvcc is found."""
    try:
        nvcc = toolchain.find_toolchain().nvcc
    except BackendUnavailable as exc:
        nvcc = shutil.which("nvcc")
        if nvcc is None:
            pytest.skip(f"needs nvcc: {exc}")
    program = tmp_path / f"{name}.cu"
    program.write_text(source)
    binary = tmp_path / name
    subprocess.run([nvcc, "-std=c++17", f"-I{codegen.HEADER_DIR}", str(program), "-o", str(binary)], check=True,
                   capture_output=True, timeout=300)
    done = subprocess.run([str(binary)], input=stdin, check=True, capture_output=True, text=True)
    return done.stdout.splitlines()
