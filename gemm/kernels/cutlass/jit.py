"""Builds of CUTLASS instantiations through the shared nvcc JIT cache (``gemm.kernels.nvcc.jit``).

Each ``KernelConfig`` becomes one ``BuildSpec`` of family ``cutlass``: the
generated ``kernel.cu`` and ``blockwise_gemm.h``. Configs the installed
CUTLASS release is known not to compile (``support``) are refused before
nvcc runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable, Sequence

from gemm.kernels.base import CompileError
from gemm.kernels.cutlass import codegen, support
from gemm.kernels.cutlass.config import KernelConfig
from gemm.kernels.nvcc import jit as nvcc_jit
from gemm.kernels.nvcc.jit import LIBRARY_NAME, LOG_NAME, META_NAME, SOURCE_NAME, NvccError  # noqa: F401
from gemm.kernels.nvcc.toolchain import NVCC_FLAGS, Toolchain, find_toolchain

FAMILY = "cutlass"


class UnbuildableConfig(CompileError):
    """The headers are a CUTLASS release known not to compile this instantiation (see ``support``);
    raised before running nvcc."""


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """One built (or found) CUTLASS library."""

    config: KernelConfig
    path: Path             # the kernel.so
    cached: bool           # True if it was already in the cache
    seconds: float         # compile time (0 when cached)
    registers: int | None  # per thread, from ptxas (None if not reported)
    spill_bytes: int | None  # spill stores + loads in bytes, from ptxas


@dataclasses.dataclass(frozen=True)
class BuildOutcome:
    """Result of one config in ``build_many``: a BuildResult or the error it raised."""

    config: KernelConfig
    result: BuildResult | None
    error: Exception | None


def cache_root() -> Path:
    """``<GEMM_CACHE_DIR or ~/.cache/gemm>/cutlass``."""
    return nvcc_jit.cache_root(FAMILY)


def build_spec(config: KernelConfig) -> nvcc_jit.BuildSpec:
    """The translation unit of ``config`` for the shared JIT."""
    return nvcc_jit.BuildSpec(FAMILY, config.name, codegen.render_source(config),
                              ((codegen.HEADER_NAME, codegen.header_text()),), codegen.ABI_VERSION,
                              (("config", dataclasses.asdict(config)),))


def cache_key(source: str, header: str, toolchain: Toolchain, flags: Sequence[str] = NVCC_FLAGS) -> str:
    """Hex digest of everything that decides the built binary of ``source`` + ``header``."""
    spec = nvcc_jit.BuildSpec(FAMILY, "", source, ((codegen.HEADER_NAME, header),), codegen.ABI_VERSION)
    return nvcc_jit.cache_key(spec, toolchain, flags)


def _refusal(config: KernelConfig, toolchain: Toolchain) -> UnbuildableConfig | None:
    reason = support.unbuildable_reason(config.tile_m, toolchain.cutlass.version)
    return UnbuildableConfig(f"{config.name}: {reason}") if reason else None


def _result(config: KernelConfig, built: nvcc_jit.BuildResult) -> BuildResult:
    return BuildResult(config, built.path, built.cached, built.seconds, built.registers, built.spill_bytes)


def build(config: KernelConfig, toolchain: Toolchain | None = None) -> BuildResult:
    """The shared library of ``config``, compiled now unless the cache has it.

    Raises ``BackendUnavailable`` (no nvcc or headers), ``UnbuildableConfig``
    (the CUTLASS release is known to refuse it; nvcc is not run) or
    ``NvccError`` (a ``CompileError`` carrying the compiler log). Needs no GPU.
    """
    toolchain = toolchain or find_toolchain()
    refusal = _refusal(config, toolchain)
    if refusal:
        raise refusal
    return _result(config, nvcc_jit.build(build_spec(config), toolchain))


def build_many(configs: Iterable[KernelConfig], jobs: int | None = None,
               progress: Callable[[BuildOutcome], None] | None = None) -> list[BuildOutcome]:
    """Build distinct ``configs`` in parallel (``jobs`` nvcc processes, default ``GEMM_BUILD_JOBS``).

    Never raises for a failing config: each outcome holds its result or
    error (in input order, duplicates removed). ``progress`` is called from
    the calling thread as each build finishes.
    """
    unique = list(dict.fromkeys(configs))
    if not unique:
        return []
    toolchain = find_toolchain()  # fail once, early, when nvcc or headers are missing
    outcomes: dict[KernelConfig, BuildOutcome] = {}
    buildable: dict[nvcc_jit.BuildSpec, KernelConfig] = {}
    for config in unique:
        refusal = _refusal(config, toolchain)
        if refusal:
            outcomes[config] = BuildOutcome(config, None, refusal)
            if progress is not None:
                progress(outcomes[config])
        else:
            buildable[build_spec(config)] = config

    def relay(outcome: nvcc_jit.BuildOutcome) -> None:
        config = buildable[outcome.spec]
        result = _result(config, outcome.result) if outcome.result is not None else None
        outcomes[config] = BuildOutcome(config, result, outcome.error)
        if progress is not None:
            progress(outcomes[config])

    nvcc_jit.build_many(list(buildable), jobs=jobs, progress=relay, toolchain=toolchain)
    return [outcomes[config] for config in unique]
