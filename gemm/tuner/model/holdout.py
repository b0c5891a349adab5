"""How the op's predicted choice fares on shapes the model never saw, from results logs alone (no GPU).

Leave one shape out: for each weight shape (N, K) of the scored logs, the model is
fitted to the fit logs without that shape, and at each of the shape's points the
untuned path's choice is made with that model (``gemm.tuner.model.choice.rank``:
every modelled backend's checked candidates, as the op ranks them). The choice is
then looked up among the candidates the sweeps timed at that point:

* its **logged time** when the sweep timed that very candidate (the careful FINAL
  time where it has one, else its SCREEN time);
* otherwise the **nearest logged candidate** of the same backend: fewest params
  that differ, and among equally near ones the slowest (so a guess never flatters
  the choice). ``distance`` records how many params differed (0: the candidate
  itself).

The score of a point is ``best logged time / choice's time`` (1.0: the choice is
the fastest candidate any sweep timed there; the tuned op runs a config within
2% of that one). The same is reported for the Triton heuristic (what the op ran
before) and for ranking only each backend's ``default_params``.

Where two logs measured the same point, the later log's candidates replace the
earlier's, as in ``gemm select``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from gemm.arch import ArchSpec
from gemm.kernels import get_backend
from gemm.problem import GemmProblem
from gemm.tuner.model import choice
from gemm.tuner.model.fitted import FittedModel, predict_with
from gemm.tuner.results.log import read_log
from gemm.tuner.results.measurement import Stage, Status, canonical_params, short_params

#: M ranges of the summaries, as the performance report has them: M = 96 (between the first two) counts in
#: "all" only.
M_RANGES = (("M <= 64", 1, 64), ("128 <= M <= 512", 128, 512), ("M >= 1024", 1024, math.inf))
OTHER_RANGE = "other"


@dataclass(frozen=True)
class Logged:
    """One candidate a sweep timed at a point: its time (FINAL where timed carefully, else SCREEN)."""

    backend: str
    params: dict
    us: float
    stage: str

    @property
    def label(self) -> str:
        return f"{self.backend} {short_params(self.params, self.backend)}".strip()


Point = tuple[int, int, int]  # (N, K, M)


def logged_points(paths: Iterable[Path | str]) -> tuple[ArchSpec, dict[Point, dict[tuple[str, str], Logged]]]:
    """The GPU of the logs and every timed OK candidate per point; a later log's point replaces an earlier's.

    ValueError when the logs come from different GPUs or from an unknown one.
    """
    from gemm.arch import get_arch

    points: dict[Point, dict[tuple[str, str], Logged]] = {}
    archs = set()
    for path in paths:
        header, rows = read_log(path)
        archs.add(header.arch)
        here: dict[Point, dict[tuple[str, str], Logged]] = {}
        for row in rows:
            if row.status != Status.OK or row.us is None or row.stage not in (Stage.SCREEN, Stage.FINAL):
                continue
            known = here.setdefault(row.point, {}).get(row.candidate_key)
            if known is None or (row.stage == Stage.FINAL and known.stage != Stage.FINAL.value):
                here[row.point][row.candidate_key] = Logged(row.backend, dict(row.params), float(row.us),
                                                            row.stage.value)
        points.update(here)
    if len(archs) != 1:
        raise ValueError(f"the scored logs must come from one GPU, got {sorted(archs)}")
    try:
        return get_arch(archs.pop()), points
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None


def _distance(a: dict, b: dict) -> int:
    return sum(a.get(key) != b.get(key) for key in set(a) | set(b))


def measured(candidates: dict[tuple[str, str], Logged], backend: str, params: dict) -> tuple[Logged, int] | None:
    """The logged candidate standing for ``(backend, params)`` and how many params differ (see the module
    docstring); None when the backend has no logged candidate at the point."""
    exact = candidates.get((backend, canonical_params(params)))
    if exact is not None:
        return exact, 0
    same = [(_distance(params, c.params), c) for c in candidates.values() if c.backend == backend]
    if not same:
        return None
    nearest = min(d for d, _ in same)
    return max((c for d, c in same if d == nearest), key=lambda c: c.us), nearest


def _defaults(problem: GemmProblem, arch: ArchSpec, model: FittedModel) -> tuple[str, dict] | None:
    """The fastest predicted of each modelled backend's ``default_params`` (where its check admits them)."""
    best = None
    for name in choice.PREDICTABLE_BACKENDS:
        backend = get_backend(name)
        params = backend.default_params(problem, arch)
        if backend.check(problem, params, arch) is None:
            us = predict_with(model, name, problem, params.to_dict(), arch)
            if us is not None and (best is None or us < best[0]):
                best = (us, name, params.to_dict())
    return None if best is None else best[1:]


def score_shape(points: dict[Point, dict[tuple[str, str], Logged]], arch: ArchSpec, model: FittedModel,
                shape: tuple[int, int], block: tuple[int, int] = (128, 128),
                out_dtype: str = "bfloat16") -> list[dict]:
    """One record per logged point of ``shape``: the best logged candidate and, for the predicted choice, the
    heuristic and the backend defaults, the standing candidate's time, its distance and the speed ratio."""
    records = []
    for (n, k, m), candidates in sorted(points.items()):
        if (n, k) != shape or not candidates:
            continue
        problem = GemmProblem(m, n, k, block[0], block[1], out_dtype)
        best = min(candidates.values(), key=lambda c: c.us)
        ranked = choice.rank(problem, arch, model)
        heuristic = get_backend("triton").default_params(problem, arch).to_dict()
        record = {"N": n, "K": k, "M": m, "m_range": m_range(m), "best": best.label, "best_us": best.us}
        picks = {"predicted": (ranked[0].backend.name, ranked[0].params.to_dict()) if ranked else None,
                 "heuristic": ("triton", heuristic), "defaults": _defaults(problem, arch, model)}
        for policy, pick in picks.items():
            found = measured(candidates, *pick) if pick is not None else None
            record[f"{policy}_backend"] = pick[0] if pick else None
            record[f"{policy}_config"] = short_params(pick[1], pick[0]) if pick else None
            record[f"{policy}_us"] = found[0].us if found else math.nan
            record[f"{policy}_distance"] = found[1] if found else None
            record[f"{policy}_speed"] = best.us / found[0].us if found else math.nan
        if ranked:
            record["predicted_model_us"] = round(ranked[0].predicted_us, 3)
        records.append(record)
    return records


def m_range(m: int) -> str:
    """The summary's M range of ``m`` (``M_RANGES``), else ``OTHER_RANGE``."""
    return next((name for name, low, high in M_RANGES if low <= m <= high), OTHER_RANGE)


def geomean(values: Iterable[float]) -> float:
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(statistics.fmean(math.log(v) for v in finite)) if finite else math.nan


def leave_one_shape_out(points: dict[Point, dict[tuple[str, str], Logged]], arch: ArchSpec,
                        fit_for: Callable[[tuple[int, int]], FittedModel],
                        shapes: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    """Records of ``score_shape`` for every shape, each scored with ``fit_for(shape)`` (a model fitted without
    it); ``shapes`` defaults to every shape of ``points``."""
    records = []
    for shape in shapes if shapes is not None else sorted({(n, k) for n, k, _ in points}):
        records += score_shape(points, arch, fit_for(shape), shape)
    return records


POLICIES = ("predicted", "heuristic", "defaults")


def summaries(records):
    """(by M range with an "all" row, by shape): points, geomean speed of each policy, the predicted choice's
    worst point and shares of points within 3% and 10% of the best, the share scored on the logged candidate
    itself (distance 0). ``records``: ``score_shape``'s, or their DataFrame; returns pandas DataFrames."""
    import pandas as pd

    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(records)
    frame = frame.assign(m_range=[m_range(int(m)) for m in frame.M])

    def one(group) -> dict:
        speed = group["predicted_speed"]
        row = {"points": len(group)}
        row.update({f"{policy}_geomean": round(geomean(group[f"{policy}_speed"]), 4) for policy in POLICIES})
        row.update({"predicted_worst": round(float(speed.min()), 4),
                    "within_3pct": round(float((speed >= 0.97).mean()), 3),
                    "within_10pct": round(float((speed >= 0.90).mean()), 3),
                    "logged_itself": round(float((group["predicted_distance"] == 0).mean()), 3)})
        return row

    ranges = [{"m_range": name, **one(frame[frame.m_range == name])} for name, _, _ in M_RANGES
              if (frame.m_range == name).any()]
    ranges.append({"m_range": "all", **one(frame)})
    shapes = [{"N": n, "K": k, **one(group)} for (n, k), group in frame.groupby(["N", "K"], sort=True)]
    return pd.DataFrame.from_records(ranges), pd.DataFrame.from_records(shapes)
