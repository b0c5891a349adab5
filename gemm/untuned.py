"""The op's choice for shapes nobody tuned: the cost model's ranking, computed once per shape and M bucket.

When the device has no usable tuned config for (N, K), ``predicted_choice`` ranks
the candidates of every modelled backend that can run here (Triton, CUTLASS when
nvcc and its headers are found, cuBLAS blockwise) with the shipped cost model,
exactly as ``gemm predict`` does (``gemm.tuner.model.choice``), at the M of
``PREDICTION_M_GRID`` nearest to the call's M. Nothing is built or timed to
choose, and nothing touches the GPU, so no host sync happens.

The ranking of each (device, N, K, block, output dtype, M bucket) is kept for
the life of the process: a later call in the same bucket (any M nearest to it)
only walks that list to the first candidate whose ``check`` accepts its exact
M (e.g. MN-major CUTLASS scales need M % 4 == 0), a few dataclass comparisons.
The op itself caches the built kernel per exact problem (``dispatch.kernel_for``),
so under CUDA-graph replay or ``torch.compile`` a call costs a dictionary lookup.

No prediction (the caller falls back to the Triton heuristic) when the model's
fit never saw this GPU model (``FittedModel.covers``: the shipped coefficients
cover the H100 and the H200), when the coefficients cannot be read, when the
model raises, or when no candidate can run the problem; the outcome says why.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, replace

import torch

from gemm.arch import ArchSpec
from gemm.kernels.base import Backend, KernelParams
from gemm.problem import GemmProblem
from gemm.tuner.model import choice
from gemm.tuner.model.fitted import FittedModel, default_model


@dataclass(frozen=True)
class Predictor:
    """The cost model and the backends it chooses among on one device (modelled and available there)."""

    model: FittedModel
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class PredictedChoice:
    """What the untuned path found for one problem: ``choice`` (None: use the heuristic) and ``note``, which says
    what was chosen and by which model, or why nothing was; ``failed`` marks a model that raised."""

    choice: tuple[Backend, KernelParams] | None
    note: str
    failed: bool = False


_RANKED: dict[tuple, tuple[choice.Ranked, ...] | str] = {}  # per (device, N, K, block, dtype, M bucket)
_LOCK = threading.Lock()


def _available_backends(device: torch.device | None) -> tuple[Backend, ...]:
    from gemm.kernels import get_backend

    out = []
    for name in choice.PREDICTABLE_BACKENDS:
        try:
            backend = get_backend(name)
        except ImportError:  # a backend whose module cannot load here is simply not a candidate
            continue
        if backend.unavailable_reason(device) is None:
            out.append(backend)
    return tuple(out)


def predictor_for(arch: ArchSpec, device: torch.device | None) -> Predictor | str:
    """The predictor for ``arch``'s device, or why there is none (a sentence); made once per device."""
    return _predictor(arch, device)


@functools.lru_cache(maxsize=16)
def _predictor(arch: ArchSpec, device: torch.device | None) -> Predictor | str:
    try:
        model = default_model()
    except (OSError, ValueError) as exc:
        return f"the cost model's coefficients cannot be read ({exc})"
    if not model.covers(arch):
        fitted = ", ".join(model.archs) or "no GPU"
        return f"the cost model was fitted on {fitted}, not on {arch.name}"
    backends = _available_backends(device)
    if not backends:
        return "no modelled backend can run on this device"
    return Predictor(model, backends)


Ranking = tuple[choice.Ranked, ...] | str


def _ranking(predictor: Predictor, problem: GemmProblem, arch: ArchSpec, key: tuple) -> Ranking:
    """The cached ranking at ``problem`` (already at its M bucket), computed on first use; a str if the model
    raised."""
    with _LOCK:
        cached = _RANKED.get(key)
    if cached is not None:
        return cached
    try:
        ranked: Ranking = choice.rank(problem, arch, predictor.model, predictor.backends)
    except Exception as exc:  # noqa: BLE001 - the op must not fail because its untuned guess failed
        ranked = f"the cost model failed at M={problem.m}: {type(exc).__name__}: {exc}"
    with _LOCK:
        return _RANKED.setdefault(key, ranked)


def predicted_choice(problem: GemmProblem, arch: ArchSpec, device: torch.device | None) -> PredictedChoice:
    """The cost model's choice for ``problem`` on ``arch``'s device (see the module docstring)."""
    predictor = predictor_for(arch, device)
    if isinstance(predictor, str):
        return PredictedChoice(None, predictor)
    bucket = choice.prediction_m(problem.m)
    key = (arch, device, problem.n, problem.k, problem.block_n, problem.block_k, problem.out_dtype, bucket)
    ranked = _ranking(predictor, replace(problem, m=bucket), arch, key)
    if isinstance(ranked, str):
        return PredictedChoice(None, ranked, failed=True)
    for item in ranked:
        if item.backend.check(problem, item.params, arch) is None:
            names = ", ".join(b.name for b in predictor.backends)
            return PredictedChoice((item.backend, item.params),
                                   f"the cost model's predicted choice per M (model {predictor.model.version}, "
                                   f"ranked over {names}; nothing timed)")
    return PredictedChoice(None, f"no candidate of {', '.join(b.name for b in predictor.backends)} can run {problem}")


def clear_cache() -> None:
    """Forget every ranking and predictor (e.g. after the coefficients changed)."""
    with _LOCK:
        _RANKED.clear()
    _predictor.cache_clear()
