"""How much each ``gemm tune --prune`` level cuts, and what it costs, judged on an exhaustive results log.

No GPU work: for every point of a log written by ``gemm tune --exhaustive``
(every valid candidate timed carefully), the cost model's pruning is replayed at
each level and the best measured candidate that survives is compared with the
best of all (ratio 1.0: pruning kept the winner). The candidates kept are the
sweep time spent, roughly: each is built, verified and timed.

    python scripts/check_pruning.py tuned_configs/logs/NVIDIA_H100_80GB_HBM3-exhaustive-sample.jsonl.gz \\
        [MORE_LOGS...] [--out bench_out/pruning.csv]

Besides the table per level and backend, the default level is summarized per shape, each marked by
whether a preset holds it: pruning was designed on the preset shapes, so the others say whether it
generalizes (``scripts/check_generalization_gpu.sh`` times them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from gemm.arch import get_arch
from gemm.bench.tables import geomean
from gemm.problem import GemmProblem
from gemm.tuner.results.log import read_log
from gemm.tuner.results.measurement import Stage, Status
from gemm.tuner.search.space import DEFAULT_PRUNE_LEVEL, PRUNE_LEVELS, PruneSettings, point_space


def measured_finals(rows) -> dict[tuple, dict[tuple[str, str], float]]:
    """{(backend, n, k, m): {candidate key: FINAL us}} of the OK rows."""
    out: dict[tuple, dict] = {}
    for row in rows:
        if row.stage == Stage.FINAL and row.status == Status.OK and row.us is not None:
            out.setdefault((row.backend, row.n, row.k, row.m), {})[row.candidate_key] = row.us
    return out


def replay(log_path: Path) -> pd.DataFrame:
    """One row per (level, backend, point): candidates kept of valid, best kept / best measured."""
    header, rows = read_log(log_path)
    arch = get_arch(header.arch)
    records = []
    for (backend, n, k, m), timed in sorted(measured_finals(rows).items()):
        problem = GemmProblem(m, n, k, *header.block_shape, header.out_dtype)
        best = min(timed.values())
        for level, budget in PRUNE_LEVELS.items():
            space = point_space(backend, problem, arch, PruneSettings(budget=budget))
            kept = [timed[c.key] for c in space.candidates if c.key in timed]
            records.append({"level": level, "backend": backend, "N": n, "K": k, "M": m,
                            "kept": len(space.candidates), "valid": len(space.candidates) + space.pruned,
                            "best_us": best, "kept_best_us": min(kept) if kept else float("inf"),
                            "ratio": best / min(kept) if kept else float("nan")})
    return pd.DataFrame.from_records(records)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    # "all": what the sweep keeps at a point, whichever backend wins there.
    overall = frame.groupby(["level", "N", "K", "M"], sort=False).agg(
        kept=("kept", "sum"), valid=("valid", "sum"), best_us=("best_us", "min"),
        kept_best_us=("kept_best_us", "min")).reset_index()
    overall["backend"] = "all"
    overall["ratio"] = overall.best_us / overall.kept_best_us
    frame = pd.concat([frame, overall], ignore_index=True)
    grouped = frame.groupby(["level", "backend"], sort=False)
    return pd.DataFrame({
        "points": grouped.size(),
        "kept_share": grouped.kept.sum() / grouped.valid.sum(),
        "best_kept_geomean": grouped.ratio.apply(geomean),
        "best_kept_worst": grouped.ratio.min(),
        "points_within_3pct": grouped.ratio.apply(lambda r: float((r >= 0.97).mean())),
    }).round(4)


def point_ratios(frame: pd.DataFrame, level: str = DEFAULT_PRUNE_LEVEL) -> pd.DataFrame:
    """Per point at ``level``, all backends together: best kept / best, and whether a preset holds the shape."""
    from gemm.tuner.presets import PRESETS

    inside = {(s.n, s.k) for shapes in PRESETS.values() for s in shapes}
    rows = frame[frame.level == level]
    points = rows.groupby(["N", "K", "M"]).agg(best_us=("best_us", "min"),
                                               kept_best_us=("kept_best_us", "min")).reset_index()
    points["ratio"] = points.best_us / points.kept_best_us
    points["in_a_preset"] = [(n, k) in inside for n, k in zip(points.N, points.K)]
    return points


def by_shape(points: pd.DataFrame) -> pd.DataFrame:
    """``point_ratios`` per shape: points, best kept / best (geomean, worst), whether a preset holds it."""
    grouped = points.groupby(["N", "K"])
    return pd.DataFrame({"points": grouped.size(), "best_kept_geomean": grouped.ratio.apply(geomean),
                         "best_kept_worst": grouped.ratio.min(), "in_a_preset": grouped.in_a_preset.first()}).round(4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, metavar="LOG",
                        help="results logs of exhaustive sweeps (.jsonl or .jsonl.gz)")
    parser.add_argument("--out", type=Path, help="CSV of every (level, backend, point) row")
    args = parser.parse_args(argv)
    missing = [str(log) for log in args.logs if not log.is_file()]
    if missing:
        print(f"check_pruning.py: log: no such file {', '.join(missing)}", file=sys.stderr)
        return 2
    frame = pd.concat([replay(log) for log in args.logs], ignore_index=True)
    if frame.empty:
        print(f"check_pruning.py: log: {', '.join(map(str, args.logs))} has no OK FINAL rows (not an exhaustive "
              f"sweep?)", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
    print(summary(frame).to_string())
    points = point_ratios(frame)
    print(f"\nper shape at --prune {DEFAULT_PRUNE_LEVEL}, all backends:")
    print(by_shape(points).to_string())
    outside = points[~points.in_a_preset]
    if not outside.empty:
        print(f"{len(outside)} points of shapes outside every preset: best kept / best {geomean(outside.ratio):.4f} "
              f"geomean, {outside.ratio.min():.4f} at worst, {int((outside.ratio >= 0.97).sum())} at >= 0.97")
    return 0


if __name__ == "__main__":
    sys.exit(main())
