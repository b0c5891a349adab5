"""Leave-one-shape-out check of the op's predicted choice for untuned shapes, on the CPU from results logs.

For each weight shape of the scored logs (default: every shipped H200 log, in the
order ``gemm select`` applies them), the cost model is refitted to the fit logs
(default: the logs the shipped coefficients were fitted on) with that shape's
rows removed; the untuned path's choice at each of the shape's points, made with
that model, is scored against the fastest candidate the sweeps timed there. How a
choice is timed (its own logged time, or the nearest logged candidate's) is in
``gemm.tuner.model.holdout``. Shapes the fit logs never held are scored with the
model fitted on all of them.

    python scripts/leave_one_shape_out.py --out docs/prediction [--jobs 2]

Writes ``points.csv`` (every point), ``shapes.csv`` and ``summary.md`` (per M range
and per shape) under ``--out``, and prints the M-range table. About 40 s per refit
on one CPU core (one per shape the fit logs hold).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "tuned_configs" / "logs"
SCORED = [LOGS / f"NVIDIA_H200-{name}.jsonl.gz" for name in (
    "deepseek-v3-tp8", "deepseek-v3-tp8-m8192", "deepseek-v3-tp1", "deepseek-v3-tp1-retune", "kv_b_proj-retune",
    "deepseek-v3-tp4")]

_FIT_OBSERVATIONS: list = []


def shipped_fit_logs() -> list[Path]:
    """The logs the shipped coefficients were fitted on (their ``fitted_on`` names, under tuned_configs/logs)."""
    from gemm.tuner.model.fitted import COEFFICIENTS_PATH

    return [LOGS / name for name in json.loads(COEFFICIENTS_PATH.read_text())["fitted_on"]]


def _load(paths: list[str]) -> None:
    from gemm.tuner.model.fit import load_observations

    _FIT_OBSERVATIONS[:] = load_observations(paths)


def _fit_without(shape):
    from gemm.tuner.model.fit import fit_model

    kept = [o for o in _FIT_OBSERVATIONS if shape is None or (o.problem.n, o.problem.k) != tuple(shape)]
    return shape, fit_model(kept, f"leave-out-{shape}")


def fitted_models(fit_logs: list[Path], shapes: list[tuple[int, int]], jobs: int) -> dict:
    """{shape: model fitted without it} for shapes the fit logs hold, and {None: the model fitted on all}."""
    from gemm.tuner.model.fit import load_observations

    held = {(o.problem.n, o.problem.k) for o in load_observations(fit_logs)}
    wanted = [None] + [s for s in shapes if s in held]
    with ProcessPoolExecutor(max_workers=jobs, initializer=_load, initargs=([str(p) for p in fit_logs],)) as pool:
        models = {}
        for shape, model in pool.map(_fit_without, wanted):
            models[shape] = model
            print(f"  fitted without {shape or 'nothing'}", file=sys.stderr, flush=True)
    return models


def cutlass_mismatch(logs: list[Path]) -> str | None:
    """A note when the CUTLASS headers here differ from the logs' (the CUTLASS candidates would differ)."""
    from gemm.kernels.nvcc.toolchain import cutlass_version_or_none
    from gemm.tuner.results.log import read_log

    here = cutlass_version_or_none()
    here_text = ".".join(map(str, here)) if here else "none"
    logged = {read_log(path)[0].cutlass for path in logs}
    if any(not v or not here or tuple(int(x) for x in v.split(".")[:2]) != here[:2] for v in logged):
        return f"the logs were made with CUTLASS {sorted(map(str, logged))}, the headers here are {here_text}"
    return None


def table(frame) -> str:
    """``frame`` as a markdown table: counts as integers, other numbers to 3 decimals, missing values as -."""
    from gemm.bench.tables import markdown_table

    def cell(column: str, value) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        if column.endswith(("_distance", "points")) or column in ("N", "K", "M"):
            return str(int(value))
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    columns = [str(c) for c in frame.columns]
    return markdown_table(columns, [[cell(c, v) for c, v in zip(columns, row)] for row in frame.values.tolist()])


def markdown(by_range, by_shape, worst, scored: list[Path], fit_logs: list[Path]) -> str:
    names = lambda paths: ", ".join(f"`{p.name}`" for p in paths)  # noqa: E731
    lines = [
        "# Leave-one-shape-out: the untuned op's predicted choice on shapes the model never saw",
        "",
        f"Scored logs (later ones replace earlier ones' points): {names(scored)}.",
        f"Fit logs (each shape's rows removed before its refit): {names(fit_logs)}.",
        "",
        "Speed = fastest logged time at the point / time of the policy's choice (1.0: it picked the fastest",
        "candidate any sweep timed there; the tuned op runs one within 2% of it). A choice the sweeps did",
        "not time is scored with the nearest logged candidate of its backend (fewest params differing, the",
        "slowest of equally near ones); `logged_itself` is the share of points where no such stand-in was",
        "needed. Policies: **predicted** = what the op now runs for an untuned shape (every modelled",
        "backend's checked candidates ranked by the refitted model); **heuristic** = the Triton heuristic",
        "the op ran before; **defaults** = the model choosing only among each backend's `default_params`.",
        "",
        "## By M range",
        "",
        table(by_range),
        "",
        "## By shape",
        "",
        table(by_shape),
        "",
        "## The ten worst points of the predicted choice",
        "",
        table(worst),
        "",
        "Reproduce on a CPU (one refit per shape of the fit logs, about 40 s each; `--jobs` run in parallel):",
        "`python scripts/leave_one_shape_out.py --out docs/prediction`; `--from-points points.csv` only",
        "re-renders the tables.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", nargs="+", type=Path, default=SCORED, help="results logs to score (one GPU)")
    parser.add_argument("--fit-logs", nargs="+", type=Path, help="logs to fit on (default: the shipped fit's)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "prediction", help="output directory")
    parser.add_argument("--jobs", type=int, default=2, help="refits run in parallel (processes)")
    parser.add_argument("--from-points", type=Path, metavar="CSV",
                        help="only summarize an earlier run's points.csv (no refits)")
    args = parser.parse_args(argv)
    fit_logs = args.fit_logs or shipped_fit_logs()
    missing = [str(p) for p in [*args.logs, *fit_logs] if not p.is_file()]
    if missing:
        print(f"leave_one_shape_out.py: no such log: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"leave_one_shape_out.py: --jobs must be a positive integer, got {args.jobs}", file=sys.stderr)
        return 2

    import pandas as pd

    from gemm.tuner.model import holdout

    started = time.time()
    if args.from_points:
        frame = pd.read_csv(args.from_points)
    else:
        note = cutlass_mismatch(list(args.logs))
        if note:
            print(f"leave_one_shape_out.py: note: {note}; CUTLASS candidates may differ from the sweeps'",
                  file=sys.stderr)
        arch, points = holdout.logged_points(args.logs)
        shapes = sorted({(n, k) for n, k, _ in points})
        print(f"{len(points)} points of {len(shapes)} shapes on {arch.name}; refitting", file=sys.stderr)
        models = fitted_models(fit_logs, shapes, args.jobs)
        records = holdout.leave_one_shape_out(points, arch, lambda shape: models.get(shape, models[None]), shapes)
        frame = pd.DataFrame.from_records(records)
    by_range, by_shape = holdout.summaries(frame)
    worst = frame.nsmallest(10, "predicted_speed")[
        ["N", "K", "M", "predicted_backend", "predicted_config", "predicted_us", "predicted_distance", "best",
         "best_us", "predicted_speed"]].round(4)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.from_points:
        frame.to_csv(args.out / "points.csv", index=False)
    by_shape.to_csv(args.out / "shapes.csv", index=False)
    (args.out / "summary.md").write_text(
        markdown(by_range, by_shape, worst, list(args.logs), list(fit_logs)))
    print(by_range.to_string(index=False))
    print(f"written: {args.out / 'points.csv'}, {args.out / 'shapes.csv'}, {args.out / 'summary.md'} "
          f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
