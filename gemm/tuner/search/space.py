"""Search spaces: candidates per backend and point, constraint filtering, pruning, and the space hash.

A backend is named by a *reference*: a registered name ("triton", "cutlass",
"cublas") or an importable ``"module:attr"`` path to a Backend class or
instance (how tests plug in fake backends); worker processes rebuild backends
from these strings.

For each point (N, K, M) every candidate the backend proposes is checked
(``Backend.check``); rejections become INVALID rows with their reason. The
survivors are ranked by the cost model (``gemm.tuner.model.fitted``) and cut to a
budget, keeping the best of each tile family so that one model error cannot
drop a whole region of the space, and a few plain Triton configs so that
engine exports always have a measured fallback.

A sweep may also name, per point, a *floor* of candidates kept whatever the model
says (the engine mode keeps every config the engines ship for the GPU) and *pinned*
ones, kept and always timed carefully (a baseline's entry, compared with the winner).
Both are spelled as the backend spells equivalent configs (``Backend.canonical``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
from dataclasses import dataclass, field
from typing import Iterable

from gemm.arch import ArchSpec
from gemm.configs.engines import is_plain_triton
from gemm.kernels import backend_names, get_backend
from gemm.kernels.base import Backend, KernelParams
from gemm.problem import GemmProblem
from gemm.tuner.model.fitted import predict_us
from gemm.tuner.results.measurement import canonical_params

#: The features engines' Triton kernel lacks; a Triton config without them is "plain".
# A tile family is kept by its best member unless the model thinks it hopeless (this many times the best).
_FAMILY_HOPELESS = 3.0


@functools.lru_cache(maxsize=None)
def resolve_backend(ref: str) -> Backend:
    """The Backend a reference names: ``"triton"`` or ``"package.module:BackendClass"``.

    Raises ValueError for a malformed or unknown reference, ImportError when
    the backend's module cannot be imported.
    """
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        if not module_name or not attr:
            raise ValueError(f"backend reference {ref!r} must look like 'package.module:BackendClass'")
        obj = getattr(importlib.import_module(module_name), attr, None)
        if obj is None:
            raise ValueError(f"backend reference {ref!r}: module {module_name!r} has no attribute {attr!r}")
        backend = obj() if isinstance(obj, type) else obj
        if not isinstance(backend, Backend):
            raise ValueError(f"backend reference {ref!r} is a {type(backend).__name__}, not a Backend")
        return backend
    if ref not in backend_names():
        raise ValueError(f"unknown backend {ref!r}; expected one of {backend_names()} or 'module:BackendClass'")
    return get_backend(ref)


@dataclass(frozen=True)
class Candidate:
    """One configuration of one backend; ``params_json`` is the canonical JSON of its params."""

    backend: str
    params_json: str

    @classmethod
    def of(cls, backend: str, params: KernelParams | dict) -> "Candidate":
        values = params.to_dict() if isinstance(params, KernelParams) else dict(params)
        return cls(backend, canonical_params(values))

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)

    @property
    def key(self) -> tuple[str, str]:
        return (self.backend, self.params_json)


@dataclass(frozen=True)
class PruneSettings:
    """How many candidates of a backend are built at one point.

    ``budget`` None means all (an exhaustive search). Of the budget, up to half
    goes to the best member of each tile family, ``plain_triton`` slots to the
    best plain Triton configs, the rest to the model's overall ranking.
    Backends the cost model does not describe keep every candidate: their
    spaces are small and hand-picked, and an unranked cut would be arbitrary.
    """

    budget: int | None = 32
    plain_triton: int = 4

    def __post_init__(self) -> None:
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be a positive number of candidates or None, got {self.budget!r}")
        if self.plain_triton < 0:
            raise ValueError(f"plain_triton must be >= 0, got {self.plain_triton!r}")


@dataclass(frozen=True)
class PointSpace:
    """The candidates of one backend at one point: kept (best-first), rejected (with reasons), pruned count."""

    backend: str
    problem: GemmProblem
    candidates: tuple[Candidate, ...]
    rejected: tuple[tuple[Candidate, str], ...] = ()
    pruned: int = 0
    predicted: dict[str, float] = field(default_factory=dict, compare=False)
    pinned: tuple[Candidate, ...] = ()  # kept candidates the sweep always times carefully


def interpret_triton_space() -> list[KernelParams]:
    """The few Triton configs ``--interpret`` tries: small tiles, with and without split-K and TMA."""
    from gemm.kernels.triton_fp8 import TritonParams

    return [
        TritonParams(block_m=16, block_n=64, block_k=128, group_m=8, num_warps=4, num_stages=2),
        TritonParams(block_m=32, block_n=64, block_k=128, group_m=8, num_warps=4, num_stages=2, split_k=2),
        TritonParams(block_m=16, block_n=64, block_k=128, group_m=8, num_warps=4, num_stages=2, use_tma=True),
        TritonParams(block_m=32, block_n=128, block_k=128, group_m=4, num_warps=4, num_stages=2),
    ]


#: ``gemm tune --prune LEVEL``: candidates per backend and point kept after the model's ranking.
PRUNE_LEVELS: dict[str, int | None] = {"none": None, "light": 64, "normal": 32, "aggressive": 12}
DEFAULT_PRUNE_LEVEL = "normal"
#: An engine sweep's default budget per point on top of its floor (the engines' shipped configs). With the
#: H200 floor (74 configs) it keeps 51 to 90 candidates per point of the DeepSeek-V3 TP8 preset, 11.4k in
#: all over vLLM's grid plus M = 8192: about 7 minutes at the 25-65 ms per candidate measured in sweeps.
ENGINE_BUDGET = 16

#: The fields that make a tile family: its tile and how its K loop is split (Triton / CUTLASS names).
_FAMILY_FIELDS = ("block_m", "block_n", "split_k", "schedule", "tile_m", "tile_n", "decomposition", "splits")


def _family(params: dict) -> tuple:
    return tuple(params.get(name) for name in _FAMILY_FIELDS)


def _choose(candidates: list[Candidate], predicted: dict[str, float], settings: PruneSettings,
            required: frozenset[str] = frozenset()) -> list[Candidate]:
    """Best-first candidates within the budget (see PruneSettings), plus the ``required`` ones (params JSON)
    beyond it."""
    order = {c.params_json: i for i, c in enumerate(candidates)}
    ranked = sorted(candidates, key=lambda c: (predicted.get(c.params_json, math.inf), order[c.params_json]))
    budget = settings.budget
    chosen: dict[str, Candidate] = {c.params_json: c for c in ranked if c.params_json in required}
    if budget is None or len(ranked) - len(chosen) <= budget or not predicted:
        return ranked
    family_limit, limit = len(chosen) + budget // 2, len(chosen) + budget
    best = predicted.get(ranked[0].params_json)
    if best is not None:
        seen_families = set()
        for c in ranked:
            if len(chosen) >= family_limit:
                break
            family = _family(c.params)
            if family in seen_families or predicted[c.params_json] > _FAMILY_HOPELESS * best:
                continue
            seen_families.add(family)
            chosen.setdefault(c.params_json, c)
    plain = [c for c in ranked if is_plain_triton(c.backend, c.params)][:settings.plain_triton]
    for c in plain:
        if len(chosen) < limit:
            chosen.setdefault(c.params_json, c)
    for c in ranked:
        if len(chosen) >= limit:
            break
        chosen.setdefault(c.params_json, c)
    return sorted(chosen.values(), key=lambda c: (predicted.get(c.params_json, math.inf), order[c.params_json]))


def point_space(backend_ref: str, problem: GemmProblem, arch: ArchSpec, settings: PruneSettings,
                interpret: bool = False, floor: Iterable[dict] = (), pinned: Iterable[dict] = ()) -> PointSpace:
    """Check, rank and prune one backend's candidates for ``problem`` (see the module docstring).

    ``floor`` and ``pinned`` are params (dicts of the backend's params fields) kept beyond the budget when
    they pass ``check``; the ``pinned`` ones are also the point's ``PointSpace.pinned``.
    """
    backend = resolve_backend(backend_ref)
    if interpret and backend_ref == "triton":
        proposals: list[KernelParams] = list(interpret_triton_space())
    else:
        proposals = list(backend.param_space(problem, arch))

    def spelled(values: Iterable[dict]) -> list[KernelParams]:
        return [backend.canonical(problem, backend.params_from_dict(dict(v))) for v in values]

    floor_params, pin_params = spelled(floor), spelled(pinned)
    extra = floor_params + pin_params
    pins = [Candidate.of(backend_ref, params) for params in pin_params]
    required = frozenset(Candidate.of(backend_ref, params).params_json for params in extra)
    valid, rejected, seen = [], [], set()
    for params in proposals + extra:
        candidate = Candidate.of(backend_ref, params)
        if candidate.params_json in seen:
            continue
        seen.add(candidate.params_json)
        reason = backend.check(problem, params, arch)
        if reason is None:
            valid.append(candidate)
        else:
            rejected.append((candidate, reason))
    predicted = {}
    for c in valid:
        estimate = predict_us(backend_ref, problem, c.params, arch)
        if estimate is not None:
            predicted[c.params_json] = estimate
    kept = _choose(valid, predicted, settings, required)
    kept_keys = {c.params_json for c in kept}
    pins = tuple(dict.fromkeys(c for c in pins if c.params_json in kept_keys))
    return PointSpace(backend_ref, problem, tuple(kept), tuple(rejected), len(valid) - len(kept), predicted, pins)


def space_hash(spaces: Iterable[PointSpace], settings: dict) -> str:
    """SHA-256 (hex) of every point's kept and rejected candidates plus the sweep ``settings``.

    Changes to a backend's space, its checks, the model or the pruning change
    the hash, so a log from another search is recognised.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for space in spaces:
        p = space.problem
        head = [space.backend, p.n, p.k, p.m, p.block_n, p.block_k, p.out_dtype]
        digest.update(json.dumps(head).encode())
        for c in space.candidates:
            digest.update(b"+" + c.params_json.encode())
        for c, _ in space.rejected:
            digest.update(b"-" + c.params_json.encode())
        for c in space.pinned:
            digest.update(b"*" + c.params_json.encode())
    return digest.hexdigest()
