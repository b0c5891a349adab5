"""The cost model's choice at one point: what ``gemm predict`` writes and what the op runs untuned.

For a problem (M, N, K) on a GPU, every modelled backend (Triton, CUTLASS, cuBLAS
blockwise) proposes its search space (``Backend.param_space``, the candidates
``gemm tune`` would time there) and its ``check`` drops what cannot run the
problem; the survivors are ranked by the model's microseconds
(``gemm.tuner.model.fitted``). Nothing is built, compiled or timed. Every candidate
stands where a backend's ``default_params`` stand: admitted by the backend's own
checks, never verified for this shape (in the shipped H100 and H200 sweeps every
candidate ``check`` admitted built and verified; the only failures were
out-of-memory runs of the tuner itself). ``default_params`` themselves are not
added: where they lie outside the space (e.g. the Triton heuristic's split-K 8 at
M = 128) no sweep has timed them, so nothing says how good they are.

Ties (equal predicted times, e.g. CUTLASS raster orders, which the model does
not tell apart) go to the earlier backend of ``PREDICTABLE_BACKENDS`` and then
to the earlier candidate of its space.

The op predicts at the M of ``PREDICTION_M_GRID`` nearest to its call's M (ties:
the smaller), as it looks up tuned configs, so ``gemm predict`` over that grid
writes exactly what the op runs (``gemm predict --arch H200 --shape N,K --m-extra
8192``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

from gemm.arch import ArchSpec
from gemm.kernels import get_backend
from gemm.kernels.base import Backend, KernelParams
from gemm.problem import GemmProblem
from gemm.tuner.model.fitted import FittedModel, predict_with
from gemm.tuner.presets import DEFAULT_M_GRID

#: The backends the model describes, in the order ties between them are broken.
PREDICTABLE_BACKENDS = ("triton", "cutlass", "cublas")
#: The M values the op predicts at: vLLM's grid plus one prefill size (what the shipped sweeps tuned).
PREDICTION_M_GRID: tuple[int, ...] = DEFAULT_M_GRID + (8192,)


@dataclass(frozen=True)
class Ranked:
    """One candidate and the model's microseconds for it at the ranked point."""

    backend: Backend
    params: KernelParams
    predicted_us: float


@dataclass(frozen=True)
class Prediction:
    """The model's pick at one point, its predicted microseconds, and the best plain Triton config (for engines)."""

    m: int
    backend: str
    params: dict
    predicted_us: float
    engine_triton: dict | None = None


def resolve(backends: Sequence[str | Backend]) -> tuple[Backend, ...]:
    """Backends by name (``gemm.kernels.get_backend``) or as given."""
    return tuple(get_backend(b) if isinstance(b, str) else b for b in backends)


def candidates(backend: Backend, problem: GemmProblem, arch: ArchSpec) -> Iterator[KernelParams]:
    """The backend's space for ``problem`` on ``arch``, each candidate once, those ``backend.check`` admits."""
    seen = set()
    for params in backend.param_space(problem, arch):
        if params in seen:
            continue
        seen.add(params)
        if backend.check(problem, params, arch) is None:
            yield params


def rank(problem: GemmProblem, arch: ArchSpec, model: FittedModel,
         backends: Sequence[str | Backend] = PREDICTABLE_BACKENDS) -> tuple[Ranked, ...]:
    """Every candidate of ``backends`` the model times for ``problem`` on ``arch``, fastest first.

    Candidates of backends the model does not describe, and non-finite estimates, are left out.
    """
    scored = []
    for backend_order, backend in enumerate(resolve(backends)):
        for order, params in enumerate(candidates(backend, problem, arch)):
            us = predict_with(model, backend.name, problem, params.to_dict(), arch)
            if us is not None and math.isfinite(us):
                scored.append((us, backend_order, order, Ranked(backend, params, us)))
    scored.sort(key=lambda item: item[:3])
    return tuple(item[3] for item in scored)


def best_plain_triton(ranked: Sequence[Ranked]) -> dict | None:
    """Params of the fastest-predicted Triton candidate engines' kernel can run (None if there is none)."""
    from gemm.configs.engines import is_plain_triton

    for item in ranked:
        params = item.params.to_dict()
        if is_plain_triton(item.backend.name, params):
            return params
    return None


def predict_point(problem: GemmProblem, arch: ArchSpec, model: FittedModel,
                  backends: Sequence[str | Backend] = PREDICTABLE_BACKENDS) -> Prediction | None:
    """The fastest predicted candidate of ``backends`` for ``problem`` on ``arch`` (None if none can run)."""
    ranked = rank(problem, arch, model, backends)
    if not ranked:
        return None
    top = ranked[0]
    return Prediction(problem.m, top.backend.name, top.params.to_dict(), top.predicted_us, best_plain_triton(ranked))


def prediction_m(m: int, grid: Sequence[int] = PREDICTION_M_GRID) -> int:
    """The M of ``grid`` nearest to ``m`` (ties: the smaller), where the op predicts for a call at ``m``: the
    rule the op looks tuned entries up by (``gemm.configs.rank_ms``)."""
    from gemm.configs import rank_ms

    return rank_ms(grid, m)[0]
