"""Compiling a plan's CUTLASS kernels with parallel nvcc before any worker starts.

Left to the workers, each would build its candidates' kernels one at a time
while the GPU idles; built here (``gemm.kernels.cutlass.aot``, a shared
cache), every worker finds them ready. Failures are only reported: the sweep
records each failed candidate as COMPILE_FAILED.
"""

from __future__ import annotations

import time
from typing import Callable

from gemm.tuner.search.plan import SweepPlan


def prebuild_cutlass(plan: SweepPlan, say: Callable[[str], None]) -> None:
    """Build every CUTLASS instantiation ``plan`` needs, at its output dtype; progress lines go to ``say``."""
    try:
        from gemm.kernels.cutlass import aot
    except ImportError as exc:
        say(f"gemm tune: CUTLASS kernels will be built on first use ({exc})")
        return
    from gemm.kernels.base import BackendError
    from gemm.tuner.search.space import resolve_backend

    backend = resolve_backend("cutlass")
    params = {backend.params_from_dict(c.params) for spaces in plan.spaces.values() for s in spaces
              if s.backend == "cutlass" for c in s.candidates}
    if not params:
        return
    start = time.monotonic()
    say(f"gemm tune: building the CUTLASS kernels of {len(params)} candidates ahead of the sweep")

    def report(outcome) -> None:
        name = getattr(outcome.config, "name", outcome.config)
        if outcome.error is not None:
            say(f"  {name}: failed ({type(outcome.error).__name__})")
        elif not outcome.result.cached:
            say(f"  {name}: built in {outcome.result.seconds:.0f} s")

    try:
        paths = aot.build_kernels(sorted(params, key=repr), progress=report, out_dtype=plan.settings.out_dtype)
        say(f"gemm tune: {len(paths)} CUTLASS kernels ready after {time.monotonic() - start:.0f} s")
    except BackendError as exc:
        first = str(exc).splitlines()[0]
        say(f"gemm tune: some CUTLASS kernels failed to build ({first}); their candidates will be "
            f"recorded as COMPILE_FAILED")
