"""Choosing the config per (N, K, M) from measurements, with near-ties collapsed.

Only OK rows of the FINAL stage compete (every one was verified, then timed
carefully). Within a shape, M is walked upwards; at each M every candidate
within ``tie_fraction`` of the fastest counts as a tie (a difference that small
is noise, PERFORMANCE.md), and among ties the choice goes to

1. the config chosen at the previous M, else
2. a config already chosen at another M of the shape, else
3. the fastest.

So a shape ends up with few distinct configs (fewer kernels to compile and
ship) at no measurable cost.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Iterable

from gemm.configs.engines import is_plain_triton
from gemm.tuner.results.measurement import Measurement, Stage, Status, canonical_params

DEFAULT_TIE_FRACTION = 0.02


@dataclass(frozen=True)
class Choice:
    """The selected candidate at one point, with the best plain Triton config seen there (for engines)."""

    n: int
    k: int
    m: int
    backend: str
    params: dict
    us: float
    tflops: float | None
    fastest_us: float
    engine_triton: dict | None = None
    engine_triton_us: float | None = None

    @property
    def candidate_key(self) -> tuple[str, str]:
        return (self.backend, canonical_params(self.params))


def _best_plain_triton(rows: list[Measurement]) -> Measurement | None:
    """Fastest OK plain Triton row at a point: FINAL rows first, SCREEN rows if none was timed carefully."""
    for stage in (Stage.FINAL, Stage.SCREEN):
        plain = [r for r in rows if r.stage == stage and r.status == Status.OK and r.us is not None
                 and is_plain_triton(r.backend, r.params)]
        if plain:
            return min(plain, key=lambda r: (r.us, r.params_key))
    return None


def select(rows: Iterable[Measurement], tie_fraction: float = DEFAULT_TIE_FRACTION
           ) -> dict[tuple[int, int], dict[int, Choice]]:
    """``{(n, k): {m: Choice}}`` for every point with at least one OK FINAL row."""
    if tie_fraction < 0:
        raise ValueError(f"tie_fraction must be >= 0, got {tie_fraction!r}")
    points: dict[tuple[int, int, int], list[Measurement]] = collections.defaultdict(list)
    for row in rows:
        points[row.point].append(row)
    shapes: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for n, k, m in points:
        shapes[(n, k)].append(m)

    selected: dict[tuple[int, int], dict[int, Choice]] = {}
    for (n, k), ms in sorted(shapes.items()):
        chosen_keys: list[tuple] = []
        previous: tuple | None = None
        per_m: dict[int, Choice] = {}
        for m in sorted(ms):
            point_rows = points[(n, k, m)]
            finals = [r for r in point_rows if r.stage == Stage.FINAL and r.status == Status.OK and r.us is not None]
            if not finals:
                continue
            fastest = min(finals, key=lambda r: (r.us, r.params_key))
            ties = [r for r in finals if r.us <= fastest.us * (1 + tie_fraction)]
            pick = next((r for r in ties if r.candidate_key == previous), None)
            if pick is None:
                reused = [r for r in ties if r.candidate_key in chosen_keys]
                pick = min(reused, key=lambda r: (r.us, r.params_key)) if reused else fastest
            if pick.candidate_key not in chosen_keys:
                chosen_keys.append(pick.candidate_key)
            previous = pick.candidate_key
            plain = None if is_plain_triton(pick.backend, pick.params) else _best_plain_triton(point_rows)
            per_m[m] = Choice(n, k, m, pick.backend, pick.params, pick.us, pick.tflops, fastest.us,
                              plain.params if plain else None, plain.us if plain else None)
        if per_m:
            selected[(n, k)] = per_m
    return selected


def distinct_configs(choices: dict[int, Choice]) -> int:
    """How many different (backend, params) a shape's choices use."""
    return len({c.candidate_key for c in choices.values()})
