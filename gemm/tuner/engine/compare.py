"""Our selection against a baseline's entries, point by point, in one run's measurements.

At each point (N, K, M) the baseline's entry is the config the engine would run there with the
baseline's files (nearest key); an engine sweep pinned it, so its careful (FINAL) timing sits in the
log beside every other candidate's. ``compare_shape`` takes ``select``'s choices of one shape and, where
the choice is slower than the baseline's entry (or there is none), puts the baseline's entry in its
place, as the baseline spells it, with its measured time. The exported file is then at least as fast as
the baseline at every point of the run. Rows of the baseline's config are found under the spelling the
sweep gave it (``Backend.canonical``): equivalent configs are timed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gemm.configs.engines import engine_params
from gemm.problem import GemmProblem
from gemm.tuner.engine.mode import Baseline
from gemm.tuner.results.measurement import Measurement, Stage, Status, canonical_params
from gemm.tuner.results.select import Choice


@dataclass(frozen=True)
class BaselinePoint:
    """One point's comparison. ``ours`` is the selection before any replacement (None: nothing of ours
    was timed there); ``key``/``params``/``us`` the baseline's entry (its M key, params, measured time;
    None where there is no baseline file or no time); ``replaced`` when the file takes the baseline's
    entry; ``note`` why there is no comparison, if there is none."""

    n: int
    k: int
    m: int
    ours: Choice | None
    key: int | None
    params: dict | None
    us: float | None
    replaced: bool = False
    note: str = ""

    @property
    def file_us(self) -> float | None:
        """The time of what the written file holds at this point."""
        return self.us if self.replaced else (self.ours.us if self.ours is not None else None)

    @property
    def speedup(self) -> float | None:
        """Baseline time over the file's time (> 1: the file is faster); None without both."""
        return self.us / self.file_us if self.us and self.file_us else None

    @property
    def search_speedup(self) -> float | None:
        """Baseline time over the search's own pick, before any replacement."""
        return self.us / self.ours.us if self.us and self.ours is not None and self.ours.us else None


def _baseline_row(rows: list[Measurement], backend: str, params_json: str, point: tuple[int, int, int]):
    """(FINAL OK row, or None, and a note on why not) of one candidate at one point."""
    mine = [r for r in rows if r.point == point and r.candidate_key == (backend, params_json)]
    final = [r for r in mine if r.stage == Stage.FINAL and r.status == Status.OK and r.us is not None]
    if final:
        return min(final, key=lambda r: r.us), ""
    failed = [r for r in mine if r.status != Status.OK]
    if failed:
        row = failed[0]
        return None, f"the baseline's entry was not timed: {row.status.value} ({row.message[:120]})"
    return None, "the baseline's entry was not timed in this run (the log lacks it)"


def compare_shape(n: int, k: int, choices: dict[int, Choice], rows: list[Measurement], baseline: Baseline,
                  backend: str, ms) -> tuple[dict[int, Choice], list[BaselinePoint]]:
    """(choices with slower entries replaced by the baseline's, one ``BaselinePoint`` per M of ``ms``).

    ``rows`` are the shape's measurements (the baseline's entries pinned among them), ``backend`` the
    engine backend that ran them (its ``canonical`` finds the baseline's rows).
    """
    from gemm.tuner.search.space import resolve_backend

    engine_backend = resolve_backend(backend)
    table = baseline.table(n, k)
    out, points = dict(choices), []
    for m in sorted(ms):
        ours = choices.get(m)
        if table is None:
            points.append(BaselinePoint(n, k, m, ours, None, None, None, note=f"{baseline.label} has no file"))
            continue
        key, config = table.entry_for(m)
        params = engine_params(config)
        problem = GemmProblem(m, n, k)
        spelled = engine_backend.canonical(problem, engine_backend.params_from_dict(params)).to_dict()
        row, note = _baseline_row(rows, backend, canonical_params(spelled), (n, k, m))
        if row is None:
            points.append(BaselinePoint(n, k, m, ours, key, params, None, note=note))
            continue
        if ours is not None and ours.us <= row.us:
            points.append(BaselinePoint(n, k, m, ours, key, params, row.us))
            continue
        fastest = row.us if ours is None else min(ours.fastest_us, row.us)
        out[m] = Choice(n, k, m, backend, params, row.us, row.tflops, fastest)
        points.append(BaselinePoint(n, k, m, ours, key, params, row.us, replaced=True))
    return dict(sorted(out.items())), points


def replacement_notes(points: list[BaselinePoint], label: str) -> list[str]:
    """One line per point whose entry was replaced by the baseline's, saying by how much ours was slower."""
    lines = []
    for p in points:
        if not p.replaced:
            continue
        if p.ours is None:
            lines.append(f"N={p.n} K={p.k} M={p.m}: nothing of ours was timed; took {label}'s entry "
                         f"(its M={p.key}, {p.us:.2f} us)")
        else:
            lines.append(f"N={p.n} K={p.k} M={p.m}: ours {p.ours.us:.2f} us is slower than {label}'s entry "
                         f"(its M={p.key}, {p.us:.2f} us): replaced by it")
    return lines


def geomean(values) -> float | None:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None
