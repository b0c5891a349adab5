"""Ahead-of-time builds: compile every CUTLASS kernel tuned configs refer to, without a GPU.

A server that loads tuned configs should find its kernels in the JIT cache
instead of compiling them at start-up; ``gemm build`` runs this module on
the config directory (or named files) first, on any machine with nvcc and the
CUTLASS headers, writing to the same cache (``GEMM_CACHE_DIR``).

Config files are read by ``gemm.kernels.nvcc.aot``; entries of other backends are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

from gemm.kernels.base import CompileError
from gemm.kernels.cutlass import jit
from gemm.kernels.cutlass.config import OUT_DTYPES, CutlassParams, KernelConfig
from gemm.kernels.nvcc.aot import backend_entries, config_files

BACKEND_NAME = "cutlass"


def _cutlass_entries(path: Path) -> Iterable[tuple[str, dict, str]]:
    """(M key, params dict, out_dtype) of every CUTLASS entry in one config file."""
    return backend_entries(path, BACKEND_NAME, OUT_DTYPES)


def _parse(path: Path, m_key: str, values: dict) -> CutlassParams:
    try:
        return CutlassParams.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config file {path}: CUTLASS entry for M={m_key}: {exc}") from exc


def params_in_config_files(paths: Iterable[str | Path]) -> list[CutlassParams]:
    """Distinct CutlassParams of the CUTLASS entries in ``paths`` (files, or directories searched for ``*.json``).

    Raises FileNotFoundError for a missing path and ValueError (naming the
    file and M) for unreadable files or invalid params.
    """
    found: dict[CutlassParams, None] = {}
    for path in config_files(paths):
        for m_key, values, _ in _cutlass_entries(path):
            found[_parse(path, m_key, values)] = None
    return list(found)


def kernel_configs_in_config_files(paths: Iterable[str | Path]) -> list[KernelConfig]:
    """Distinct compile-time configs (with each file's output dtype) the CUTLASS entries in ``paths`` need."""
    found: dict[KernelConfig, None] = {}
    for path in config_files(paths):
        for m_key, values, out_dtype in _cutlass_entries(path):
            found[_parse(path, m_key, values).kernel_config(out_dtype)] = None
    return list(found)


def build_kernels(params_list: Sequence[CutlassParams | KernelConfig], jobs: int | None = None,
                  progress: Callable[[jit.BuildOutcome], None] | None = None,
                  out_dtype: str = "bfloat16") -> list[Path]:
    """Compile the instantiations ``params_list`` needs, in parallel; paths of the shared libraries.

    Items may be CutlassParams (built for ``out_dtype``) or KernelConfigs;
    params differing only in run-time fields share one library. ``jobs``
    defaults to ``GEMM_BUILD_JOBS``; ``progress`` gets each
    ``jit.BuildOutcome`` as it finishes. Every build is attempted; if any
    failed, raises CompileError listing each failure with its compiler log
    (BackendUnavailable when nvcc or the headers are missing). Needs no GPU.
    """
    configs = [item if isinstance(item, KernelConfig) else item.kernel_config(out_dtype) for item in params_list]
    outcomes = jit.build_many(configs, jobs=jobs, progress=progress)
    failures = [o for o in outcomes if o.error is not None]
    if failures:
        details = "\n\n".join(f"--- {o.config.name}: {type(o.error).__name__}:\n{o.error}" for o in failures)
        raise CompileError(f"{len(failures)} of {len(outcomes)} CUTLASS kernels failed to build:\n{details}")
    return [o.result.path for o in outcomes]
