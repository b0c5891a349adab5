"""Fitting the cost model's coefficients to results logs, and measuring how far to trust it.

The fit minimises, per backend, the robust (soft-L1) sum of squared log errors
``log(predicted / measured)`` over every timed OK candidate of the logs, in the
logarithm of the coefficients (so they stay positive and scale freely), with
scipy's trust-region least squares. A candidate timed at both stages counts
once, with its careful (FINAL) time.

Trust is measured the way the model is used:

* **pick ratio**: at each point, the model picks the fastest *predicted* of the
  candidates that were measured there; the ratio of the best measured time to
  the pick's measured time (1.0: the model picked the winner). Its geomean over
  points says how much a predicted config loses against a tuned one;
* **rank correlation** (Spearman) between predicted and measured times of the
  candidates at a point, averaged over points;
* **log error** of single predictions (median absolute, as a factor).

``cross_validate`` fits on all shapes but one and scores the one left out, so
the numbers describe shapes the fit has not seen.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from gemm.arch import ArchSpec, get_arch
from gemm.problem import GemmProblem
from gemm.tuner.model.fitted import FittedModel, predict_with, prior_model
from gemm.tuner.model.roofline import COEFFICIENT_TYPES
from gemm.tuner.results.log import read_log
from gemm.tuner.results.measurement import Stage, Status

#: Coefficients that are shares of a datasheet rate cannot exceed 1.
_AT_MOST_ONE = ("hbm_eff", "wgmma_eff", "mma_eff", "coop_eff", "pingpong_eff", "unroll_scale", "tma_factor")
#: How far a fit may move a coefficient from its prior (a factor either way).
_RANGE = 30.0


@dataclass(frozen=True)
class Observation:
    """One measured candidate: ``us`` microseconds for ``backend`` with ``params`` at ``problem`` on ``arch``."""

    arch: ArchSpec
    backend: str
    params: dict
    problem: GemmProblem
    us: float

    @property
    def point(self) -> tuple[str, int, int, int]:
        return (self.arch.name, self.problem.n, self.problem.k, self.problem.m)


def load_observations(paths: Iterable[Path | str]) -> list[Observation]:
    """Timed OK candidates of results logs (FINAL time where a candidate has one, else its SCREEN time).

    The GPU comes from each log's header (``arch``); ValueError when it is not a known one.
    """
    out: list[Observation] = []
    for path in paths:
        header, rows = read_log(path)
        try:
            arch = get_arch(header.arch)
        except KeyError as exc:
            raise ValueError(f"{path}: {exc.args[0]}") from None
        best: dict[tuple, tuple[int, object]] = {}
        for row in rows:
            if row.status != Status.OK or row.us is None or row.stage not in (Stage.SCREEN, Stage.FINAL):
                continue
            key = (row.backend, row.params_key, row.n, row.k, row.m)
            rank = 1 if row.stage == Stage.FINAL else 0
            if key not in best or rank > best[key][0]:
                best[key] = (rank, row)
        for _, row in best.values():
            problem = GemmProblem(row.m, row.n, row.k, block_n=header.block_shape[0], block_k=header.block_shape[1],
                                  out_dtype=header.out_dtype)
            out.append(Observation(arch, row.backend, dict(row.params), problem, float(row.us)))
    return out


# --------------------------------------------------------------------------- fitting


def _vector(coefficients) -> list[float]:
    return [math.log(getattr(coefficients, f.name)) for f in dataclasses.fields(coefficients)]


def _from_vector(kind: type, values: Sequence[float]):
    return kind(**{f.name: math.exp(v) for f, v in zip(dataclasses.fields(kind), values)})


def _bounds(prior) -> tuple[list[float], list[float]]:
    lower, upper = [], []
    for f in dataclasses.fields(prior):
        start = getattr(prior, f.name)
        lower.append(math.log(start / _RANGE))
        top = min(start * _RANGE, 1.0) if f.name in _AT_MOST_ONE else start * _RANGE
        upper.append(math.log(top))
    return lower, upper


def fit_backend(observations: Sequence[Observation], backend: str, start=None):
    """Coefficients of ``backend`` fitted to its observations (``start``: the prior by default).

    Needs scipy (installed with nvidia-cutlass). Returns ``start`` unchanged when
    there is nothing to fit.
    """
    from scipy.optimize import least_squares

    kind = COEFFICIENT_TYPES[backend]
    start = start or kind()
    mine = [o for o in observations if o.backend == backend]
    if not mine:
        return start
    lower, upper = _bounds(kind())
    x0 = [min(max(v, lo + 1e-9), hi - 1e-9) for v, lo, hi in zip(_vector(start), lower, upper)]

    def residuals(x):
        model = FittedModel("fit", {backend: _from_vector(kind, x)})
        return [math.log(predict_with(model, backend, o.problem, o.params, o.arch) / o.us) for o in mine]

    result = least_squares(residuals, x0, bounds=(lower, upper), loss="soft_l1", f_scale=0.1,
                           x_scale=1.0, diff_step=1e-3, max_nfev=200)
    return _from_vector(kind, result.x)


def fit_model(observations: Sequence[Observation], version: str, base: FittedModel | None = None) -> FittedModel:
    """Every modelled backend's coefficients fitted to ``observations``; backends without data keep ``base``'s.

    The model covers the GPUs the observations were measured on (``FittedModel.archs``).
    """
    base = base or prior_model()
    coefficients = dict(base.coefficients)
    for backend in COEFFICIENT_TYPES:
        if any(o.backend == backend for o in observations):
            coefficients[backend] = fit_backend(observations, backend, COEFFICIENT_TYPES[backend]())
    return FittedModel(version, coefficients, tuple(sorted({o.arch.name for o in observations})))


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class PointScore:
    """How the model did at one point: its pick among the measured candidates vs the measured best."""

    arch: str
    n: int
    k: int
    m: int
    pick: str
    pick_us: float
    best: str
    best_us: float
    spearman: float | None

    @property
    def ratio(self) -> float:
        return self.best_us / self.pick_us


@dataclass(frozen=True)
class Quality:
    """Summary of ``score`` over many points (see the module docstring)."""

    points: int
    pick_ratio_geomean: float
    pick_ratio_worst: float
    points_within_3pct: float
    spearman_mean: float | None
    median_abs_error_factor: float | None
    worst: tuple[PointScore, ...]

    def to_json(self) -> dict:
        return {"points": self.points, "pick_ratio_geomean": round(self.pick_ratio_geomean, 4),
                "pick_ratio_worst": round(self.pick_ratio_worst, 4),
                "points_within_3pct": round(self.points_within_3pct, 4),
                "spearman_mean": None if self.spearman_mean is None else round(self.spearman_mean, 4),
                "median_abs_error_factor": (None if self.median_abs_error_factor is None
                                            else round(self.median_abs_error_factor, 4)),
                "worst": [{"arch": w.arch, "n": w.n, "k": w.k, "m": w.m, "ratio": round(w.ratio, 4),
                           "pick": w.pick, "best": w.best} for w in self.worst]}


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation of two equal-length sequences (None when undefined)."""
    import pandas as pd

    if len(xs) < 3:
        return None
    value = pd.Series(list(xs)).corr(pd.Series(list(ys)), method="spearman")
    return None if value is None or math.isnan(value) else float(value)


def _label(o: Observation) -> str:
    from gemm.tuner.results.measurement import short_params

    return f"{o.backend} {short_params(o.params, o.backend)}".strip()


def score_points(model: FittedModel, observations: Sequence[Observation]) -> list[PointScore]:
    """One PointScore per point of ``observations`` (backends the model lacks are left out)."""
    by_point: dict[tuple, list[tuple[float, Observation]]] = {}
    for o in observations:
        predicted = predict_with(model, o.backend, o.problem, o.params, o.arch)
        if predicted is not None:
            by_point.setdefault(o.point, []).append((predicted, o))
    scores = []
    for (arch, n, k, m), pairs in sorted(by_point.items()):
        pick = min(pairs, key=lambda pair: pair[0])[1]
        best = min((o for _, o in pairs), key=lambda o: o.us)
        rho = spearman([p for p, _ in pairs], [o.us for _, o in pairs])
        scores.append(PointScore(arch, n, k, m, _label(pick), pick.us, _label(best), best.us, rho))
    return scores


def quality_of(scores: Sequence[PointScore], errors: Sequence[float] = (), worst: int = 5) -> Quality:
    """Summary of point scores (``errors``: absolute log errors of single predictions, if known)."""
    if not scores:
        raise ValueError("no observations of a modelled backend to score")
    ratios = [s.ratio for s in scores]
    rhos = [s.spearman for s in scores if s.spearman is not None]
    return Quality(
        points=len(scores),
        pick_ratio_geomean=math.exp(statistics.fmean(math.log(r) for r in ratios)),
        pick_ratio_worst=min(ratios),
        points_within_3pct=sum(r >= 0.97 for r in ratios) / len(ratios),
        spearman_mean=statistics.fmean(rhos) if rhos else None,
        median_abs_error_factor=math.exp(statistics.median(errors)) if errors else None,
        worst=tuple(sorted(scores, key=lambda s: s.ratio)[:worst]))


def summarize(model: FittedModel, observations: Sequence[Observation], worst: int = 5) -> Quality:
    """The Quality of ``model`` on ``observations``."""
    errors = [abs(math.log(predict_with(model, o.backend, o.problem, o.params, o.arch) / o.us))
              for o in observations if o.backend in model.coefficients]
    return quality_of(score_points(model, observations), errors, worst)


def cross_validate(observations: Sequence[Observation], version: str = "cv") -> list[PointScore]:
    """Leave-one-shape-out: each (N, K) scored by a model fitted on the other shapes."""
    shapes = sorted({(o.problem.n, o.problem.k) for o in observations})
    scores: list[PointScore] = []
    for shape in shapes:
        train = [o for o in observations if (o.problem.n, o.problem.k) != shape]
        test = [o for o in observations if (o.problem.n, o.problem.k) == shape]
        scores += score_points(fit_model(train, version), test)
    return scores
