"""Compiling, in parallel and before anything runs them, the C++ kernels a set of candidates needs.

Left to the code that runs them, each candidate of the CUTLASS or Hopper (``sm90``) backend would be
compiled when first built, one nvcc process at a time, while the GPU idles. This module hands every
distinct library to the backend's ahead-of-time builder (``gemm.kernels.cutlass.aot``,
``gemm.kernels.sm90.aot``), which fills the shared JIT cache with ``GEMM_BUILD_JOBS`` nvcc processes.
Failures are only reported: whoever builds the candidate later gets the compile error.
"""

from __future__ import annotations

import importlib
import time
from typing import Callable, Iterable

from gemm.kernels.base import BackendError, KernelParams

# Backend name -> the module whose ``build_kernels(params, progress=..., out_dtype=...)`` compiles its kernels.
AHEAD_OF_TIME_BUILDERS = {"cutlass": "gemm.kernels.cutlass.aot", "sm90": "gemm.kernels.sm90.aot"}


def compiled_backends() -> tuple[str, ...]:
    """Names of the backends whose kernels are compiled with nvcc (and so worth building ahead)."""
    return tuple(AHEAD_OF_TIME_BUILDERS)


def prebuild(backend_name: str, params: Iterable[KernelParams], out_dtype: str,
             say: Callable[[str], None]) -> None:
    """Build the libraries ``params`` (of backend ``backend_name``, for ``out_dtype``) need; lines for people
    go to ``say``. Backends not compiled with nvcc, and an empty ``params``, do nothing. Never raises for
    a failed build or a missing toolchain (it says so instead)."""
    module_name = AHEAD_OF_TIME_BUILDERS.get(backend_name)
    wanted = list(dict.fromkeys(params))
    if module_name is None or not wanted:
        return
    label = "CUTLASS" if backend_name == "cutlass" else f"{backend_name!r}"
    try:
        builder = importlib.import_module(module_name)
    except ImportError as exc:
        say(f"gemm: the {label} kernels will be built on first use ({exc})")
        return
    start = time.monotonic()
    say(f"gemm: building the {label} kernels of {len(wanted)} candidates ahead of time")

    def report(outcome) -> None:
        config = getattr(outcome, "config", None) or getattr(outcome, "spec", None)
        name = getattr(config, "name", config)
        if outcome.error is not None:
            say(f"  {name}: failed ({type(outcome.error).__name__})")
        elif not outcome.result.cached:
            say(f"  {name}: built in {outcome.result.seconds:.0f} s")

    try:
        built = builder.build_kernels(wanted, progress=report, out_dtype=out_dtype)
        say(f"gemm: {len(built)} {label} kernels ready after {time.monotonic() - start:.0f} s")
    except BackendError as exc:
        first = str(exc).splitlines()[0]
        say(f"gemm: some {label} kernels could not be built ({first}); their candidates will fail to build")
