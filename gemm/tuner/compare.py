"""``gemm compare``: how close a pruned search's picks come to an exhaustive search's best.

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
import sys

from gemm.tuner.tune_cmd import EXIT_ERROR, EXIT_OK, EXIT_USAGE


def compare_logs(pruned_rows, exhaustive_rows, tie_fraction: float):
    """DataFrame per common point: N, K, M, pick, pick_us, best, best_us, ratio, same_run."""
    import pandas as pd

    from gemm.tuner.results import Stage, Status, short_params
    from gemm.tuner.select import select

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


def run_compare(args) -> int:
    import pandas as pd

    from gemm.tuner.results import LogFormatError, read_log

    try:
        _, pruned = read_log(args.pruned)
        _, exhaustive = read_log(args.exhaustive)
    except (OSError, LogFormatError) as exc:
        print(f"gemm compare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    frame = compare_logs(pruned, exhaustive, args.tie)
    if frame.empty:
        print("gemm compare: the logs share no point with carefully timed results", file=sys.stderr)
        return EXIT_ERROR
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 220):
        print(frame.to_string(index=False))
    ratios = list(frame["ratio"])
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    worst = min(ratios)
    print(f"\n{len(ratios)} points: pruned pick reaches {100 * geomean:.1f}% of the exhaustive best on "
          f"geomean, {100 * worst:.1f}% at worst; {sum(r >= args.target for r in ratios)} of {len(ratios)} "
          f"points at >= {100 * args.target:.0f}%")
    return EXIT_OK if worst >= args.target else EXIT_ERROR
