"""``gemm select | compare | plot``: working with results logs.

``gemm select LOG... --out DIR`` writes config files re-derived from results
logs, with the logs' provenance: anyone can audit a shipped config this way,
the selection that ``gemm tune`` made at the end of its sweep made again from
the log it shipped with (or from several logs of one device, e.g. a sweep and
a later one that re-tuned some shapes: for an (N, K, M) timed in a later log,
that log's rows replace the earlier ones).
"""

from __future__ import annotations

import sys

from gemm.cli.checks import number, output_dir
from gemm.cli.common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, UsageError, say
from gemm.tuner.results.select import DEFAULT_TIE_FRACTION


def add_parsers(sub) -> None:
    """Register ``plot``, ``compare`` and ``select``."""
    p = sub.add_parser("plot", help="PNG charts from results logs")
    p.add_argument("logs", nargs="+", metavar="LOG",
                   help="results logs (.jsonl or .jsonl.gz) written by gemm tune, all of one device")
    p.add_argument("--out", default="plots", metavar="DIR", help="directory for the PNG files (default plots/)")
    p.set_defaults(handler=run_plot)

    p = sub.add_parser("compare", help="pruned search's picks vs an exhaustive search's best")
    p.add_argument("pruned", metavar="PRUNED_LOG")
    p.add_argument("exhaustive", metavar="EXHAUSTIVE_LOG")
    p.add_argument("--tie", type=number(0), default=0.02, metavar="F")
    p.add_argument("--target", type=number(0, inclusive=False, high=1.0), default=0.97, metavar="F",
                   help="exit 1 if any point's ratio is below this (default 0.97)")
    p.set_defaults(handler=run_compare)

    p = sub.add_parser("select", help="write config files from results logs (re-derive or audit shipped configs)")
    p.add_argument("logs", nargs="+", metavar="LOG",
                   help="results logs (.jsonl or .jsonl.gz) of one device; a later log's timed points replace")
    p.add_argument("--out", required=True, metavar="DIR", help="config root: files go to DIR/<device_name>/")
    p.add_argument("--tie", type=number(0), default=DEFAULT_TIE_FRACTION, metavar="F",
                   help="times within this fraction are ties, resolved towards fewer distinct configs")
    p.add_argument("--baseline", metavar="DIR",
                   help="for logs of an engine sweep: the --baseline folder it ran with; entries slower than its "
                        "entries are replaced by them, as gemm tune did, and the comparison is written")
    p.add_argument("--report", metavar="DIR", help="with --baseline: where the comparison's CSV and markdown go "
                                                  "(default DIR/reports of --out)")
    p.set_defaults(handler=run_select)


def run_select(args) -> int:
    """``gemm select``: exit 0 when every shape's file was written, 1 otherwise, 2 for unusable logs."""
    from gemm.configs import ConfigError
    from gemm.tuner.results.config_files import logged_provenance, write_choices
    from gemm.tuner.results.log import LogFormatError, LogMismatchError, merge_logs
    from gemm.tuner.results.select import select

    try:
        out = output_dir(args.out, "--out")
        report = output_dir(args.report, "--report") if args.report else out / "reports"
        if args.report and not args.baseline:
            raise UsageError("--report writes the comparison with --baseline; give --baseline too")
        header, rows = merge_logs(args.logs)
        baseline = _baseline(args, header, rows)
    except (UsageError, LogFormatError, LogMismatchError, ConfigError) as exc:
        say(f"gemm select: {exc}")
        return EXIT_USAGE
    choices = select(rows, args.tie)
    if baseline is not None:
        choices = _against_baseline(choices, rows, baseline, header, report)
    provenance = logged_provenance(header)
    failed = False
    for (n, k), per_m in sorted(choices.items()):
        try:
            path = write_choices(out, header.device_name, header.arch, n, k, per_m, header.out_dtype,
                                 header.block_shape, provenance)
        except ConfigError as exc:
            say(f"gemm select: N={n} K={k}: {exc}")
            failed = True
            continue
        if path is None:
            say(f"gemm select: N={n} K={k}: no entry from a registered backend")
        else:
            print(f"N={n} K={k}: {len(per_m)} M values -> {path}")
    if not choices:
        say("gemm select: no timed candidate in the logs")
        return EXIT_ERROR
    return EXIT_ERROR if failed else EXIT_OK


def _baseline(args, header, rows):
    """(baseline, engine backend) of ``--baseline`` for these logs, or None; UsageError when they are not an
    engine sweep's."""
    if args.baseline is None:
        return None
    from gemm.cli.checks import input_dir
    from gemm.configs.engine_targets import engine_of_backend
    from gemm.tuner.engine.mode import read_baseline

    root = input_dir(args.baseline, "--baseline")
    backends = sorted({r.backend for r in rows if r.stage.value == "final" and engine_of_backend(r.backend)})
    if len(backends) != 1:
        raise UsageError(f"--baseline needs the logs of one engine sweep (gemm tune --engine); these hold timings "
                         f"of {', '.join(sorted({r.backend for r in rows})) or 'nothing'}")
    try:
        return read_baseline(root, header.device_name, header.block_shape), backends[0]
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _against_baseline(choices, rows, found, header, report_dir):
    """``choices`` with entries slower than the baseline's replaced (as ``gemm tune --engine --baseline`` did),
    the replacements said and the comparison written to ``report_dir``."""
    import collections

    from gemm.configs.engine_targets import engine_of_backend
    from gemm.tuner.engine.compare import compare_shape, replacement_notes
    from gemm.tuner.engine.report import ranges_table, write_report

    baseline, backend = found
    by_shape = collections.defaultdict(list)
    for row in rows:
        by_shape[(row.n, row.k)].append(row)
    replaced, points = {}, []
    for (n, k), shape_rows in sorted(by_shape.items()):
        ms = sorted({r.m for r in shape_rows})
        per_m, shape_points = compare_shape(n, k, choices.get((n, k), {}), shape_rows, baseline, backend, ms)
        if per_m:
            replaced[(n, k)] = per_m
        points += shape_points
    for line in replacement_notes(points, baseline.label):
        say(f"gemm select: {line}")
    engine = engine_of_backend(backend)
    paths = write_report(points, report_dir, f"{header.device_name}-{engine.name}-vs-{baseline.label}",
                         f"{engine.title} kernel on {header.device_name}: the selected files against {baseline.label}")
    print(ranges_table(points).to_string(index=False))
    print("comparison: " + ", ".join(map(str, paths)))
    return replaced


def run_compare(args) -> int:
    """``gemm compare``: exit 0 when every point reaches ``--target``, 1 otherwise, 2 for unreadable logs."""
    import pandas as pd

    from gemm.tuner.results.compare import agreement, compare_logs
    from gemm.tuner.results.log import LogFormatError, read_log

    try:
        _, pruned = read_log(args.pruned)
        _, exhaustive = read_log(args.exhaustive)
    except LogFormatError as exc:
        say(f"gemm compare: {exc}")
        return EXIT_USAGE
    frame = compare_logs(pruned, exhaustive, args.tie)
    if frame.empty:
        print("gemm compare: the logs share no point with carefully timed results", file=sys.stderr)
        return EXIT_ERROR
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 220):
        print(frame.to_string(index=False))
    found = agreement(frame, args.target)
    print(f"\n{found.points} points: pruned pick reaches {100 * found.geomean:.1f}% of the exhaustive best on "
          f"geomean, {100 * found.worst:.1f}% at worst; {found.at_target} of {found.points} "
          f"points at >= {100 * args.target:.0f}%")
    return EXIT_OK if found.passed else EXIT_ERROR


def run_plot(args) -> int:
    """``gemm plot``: exit 0 with both charts written, 1 with nothing to plot, 2 without matplotlib or logs, or
    for logs of several devices."""
    from gemm.tuner.results.log import LogFormatError, read_log
    from gemm.tuner.results.plot import best_per_backend, write_plots

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("gemm plot: matplotlib is not installed; install the plot extra: pip install 'gemm[plot]'",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        out = output_dir(args.out, "--out")
    except UsageError as exc:
        say(f"gemm plot: {exc}")
        return EXIT_USAGE
    rows, devices = [], []
    for raw in args.logs:
        try:
            header, log_rows = read_log(raw)
        except LogFormatError as exc:
            say(f"gemm plot: {exc}")
            return EXIT_USAGE
        rows += log_rows
        if header.device_name not in devices:
            devices.append(header.device_name)
    if len(devices) > 1:  # one chart of two GPUs' times would mix them point by point
        say(f"gemm plot: the logs come from {len(devices)} devices ({', '.join(devices)}); plot one device's "
            f"logs at a time, each with its own --out")
        return EXIT_USAGE
    best = best_per_backend(rows)
    if not best:
        say("gemm plot: the logs hold no carefully timed (FINAL, OK) rows to plot")
        return EXIT_ERROR
    tflops, winners = write_plots(best, out, devices[0])
    print(f"wrote {tflops} and {winners}")
    return EXIT_OK
