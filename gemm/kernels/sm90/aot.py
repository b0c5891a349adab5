"""Ahead-of-time builds of the Hopper kernels tuned configs refer to (``gemm build``), without a GPU.

Each distinct (tile, stages, overlap, output dtype) of the ``sm90`` entries in the config files is one
library in the shared JIT cache (``GEMM_CACHE_DIR``); run-time fields (cluster, tile order) need no build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

from gemm.kernels.base import CompileError
from gemm.kernels.nvcc import jit
from gemm.kernels.nvcc.aot import backend_entries, config_files
from gemm.kernels.sm90 import codegen
from gemm.kernels.sm90.params import OUT_DTYPES, KernelConfig, Sm90Params

BACKEND_NAME = "sm90"


def kernel_configs_in_config_files(paths: Iterable[str | Path]) -> list[KernelConfig]:
    """Distinct builds the ``sm90`` entries of ``paths`` need (files, or directories searched for ``*.json``).

    FileNotFoundError for a missing path; ValueError naming the file and M for unreadable files or
    invalid params.
    """
    found: dict[KernelConfig, None] = {}
    for path in config_files(paths):
        for m_key, values, out_dtype in backend_entries(path, BACKEND_NAME, OUT_DTYPES):
            try:
                found[Sm90Params.from_dict(values).kernel_config(out_dtype)] = None
            except (TypeError, ValueError) as exc:
                raise ValueError(f"config file {path}: sm90 entry for M={m_key}: {exc}") from exc
    return list(found)


def build_kernels(configs: Sequence[Sm90Params | KernelConfig], jobs: int | None = None,
                  progress: Callable[[jit.BuildOutcome], None] | None = None,
                  out_dtype: str = "bfloat16") -> list[jit.BuildResult]:
    """Compile ``configs`` in parallel (``jobs`` nvcc processes, default ``GEMM_BUILD_JOBS``).

    Items may be Sm90Params (built for ``out_dtype``; params differing only in run-time fields share one
    library) or KernelConfigs. Every build is attempted; CompileError listing each failure with its
    compiler log if any failed (BackendUnavailable when nvcc or the headers are missing). Needs no GPU.
    """
    kernels = dict.fromkeys(c if isinstance(c, KernelConfig) else c.kernel_config(out_dtype) for c in configs)
    outcomes = jit.build_many([codegen.build_spec(c) for c in kernels], jobs=jobs, progress=progress)
    failures = [o for o in outcomes if o.error is not None]
    if failures:
        details = "\n\n".join(f"--- {o.spec.name}: {type(o.error).__name__}:\n{o.error}" for o in failures)
        raise CompileError(f"{len(failures)} of {len(outcomes)} Hopper kernels failed to build:\n{details}")
    return [o.result for o in outcomes]
