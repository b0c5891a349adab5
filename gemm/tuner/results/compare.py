"""How close a pruned search's picks come to an exhaustive search's best.

For every point both logs tuned, the pruned sweep's pick (``select``) is
looked up in the exhaustive log, which timed every verified candidate
carefully: the ratio ``exhaustive best / pick`` (1.0 = the pick is the best)
then compares two times taken in the same run, free of run-to-run drift. A
pick the exhaustive sweep did not time falls back to the pruned sweep's own
time for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from gemm.tuner.results.measurement import Stage, Status, short_params
from gemm.tuner.results.select import select


def compare_logs(pruned_rows, exhaustive_rows, tie_fraction: float):
    """DataFrame per common point: N, K, M, pick, pick_us, best, best_us, ratio, same_run."""
    import pandas as pd

    picks = select(pruned_rows, tie_fraction)
    finals: dict[tuple, dict[tuple, float]] = {}
    for row in exhaustive_rows:
        if row.stage == Stage.FINAL and row.status == Status.OK and row.us is not None:
            finals.setdefault(row.point, {})[row.candidate_key] = row.us
    records = []
    for (n, k), per_m in sorted(picks.items()):
        for m, choice in sorted(per_m.items()):
            timed = finals.get((n, k, m))
            if not timed:
                continue
            best_key = min(timed, key=timed.get)
            same_run = choice.candidate_key in timed
            pick_us = timed[choice.candidate_key] if same_run else choice.us
            best = f"{best_key[0]} {short_params(json.loads(best_key[1]), best_key[0])}"
            pick = f"{choice.backend} {short_params(choice.params, choice.backend)}"
            records.append({"N": n, "K": k, "M": m, "pick": pick,
                            "pick_us": round(pick_us, 3), "best": best, "best_us": round(timed[best_key], 3),
                            "ratio": round(timed[best_key] / pick_us, 4), "same_run": same_run})
    return pd.DataFrame.from_records(records)


@dataclass(frozen=True)
class Agreement:
    """How the pruned picks of ``compare_logs`` fare: geomean and worst ratio, points at the target."""

    points: int
    geomean: float
    worst: float
    at_target: int
    target: float

    @property
    def passed(self) -> bool:
        """Every point's ratio reaches the target."""
        return self.worst >= self.target


def agreement(frame, target: float) -> Agreement:
    """The ``Agreement`` of a non-empty ``compare_logs`` frame with ``target`` (a ratio such as 0.97)."""
    ratios = list(frame["ratio"])
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return Agreement(len(ratios), geomean, min(ratios), sum(r >= target for r in ratios), target)
