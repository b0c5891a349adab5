"""Compiling a plan's C++ kernels (CUTLASS and the Hopper kernel) with parallel nvcc before any worker starts.

Left to the workers, each would build its candidates' kernels one at a time while the GPU idles; built here
(``gemm.kernels.prebuild``, a shared cache), every worker finds them ready. Failures are only reported: the
sweep records each failed candidate as COMPILE_FAILED.
"""

from __future__ import annotations

from typing import Callable

from gemm.kernels.prebuild import compiled_backends, prebuild
from gemm.tuner.search.plan import SweepPlan


def needs_prebuild(plan: SweepPlan) -> bool:
    """Whether ``plan`` sweeps a backend whose kernels nvcc compiles."""
    return any(name in plan.settings.backends for name in compiled_backends())


def prebuild_kernels(plan: SweepPlan, say: Callable[[str], None]) -> None:
    """Build every CUTLASS and ``sm90`` instantiation ``plan`` needs, at its output dtype; progress lines go
    to ``say``."""
    from gemm.tuner.search.space import resolve_backend

    for name in compiled_backends():
        if name not in plan.settings.backends:
            continue
        backend = resolve_backend(name)
        params = [backend.params_from_dict(c.params) for spaces in plan.spaces.values() for s in spaces
                  if s.backend == name for c in s.candidates]
        prebuild(name, params, plan.settings.out_dtype, say)
