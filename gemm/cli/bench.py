"""``gemm bench``: the tuned op against cuBLAS per-tensor, cuBLAS blockwise, the classic Triton config and
bf16 on this machine's GPU; or, with ``--report``, the performance report of earlier runs (no GPU).

A run writes ``OUT/bench_rows.csv``, ``OUT/bench_best.csv``, ``OUT/ceilings.json``,
``OUT/performance.md`` and ``OUT/performance/<device>_tflops.png`` (see ``gemm.bench``).
"""

from __future__ import annotations

import shlex

from gemm.cli.checks import number, output_dir
from gemm.cli.common import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, UsageError, m_grid, say, shapes
from gemm.tuner.presets import DEFAULT_PRESET, PRESETS

NO_MATPLOTLIB = ("gemm bench: matplotlib is not installed, so no plots are drawn; install the plot extra "
                 "(pip install 'gemm[plot]') to get them")


def add_parsers(sub) -> None:
    """Register ``bench``."""
    p = sub.add_parser("bench", help="time the tuned op against cuBLAS, the classic Triton config and bf16",
                       description="Time the tuned op gemm.w8a8_block_fp8_matmul against cuBLAS per-tensor FP8, "
                                   "cuBLAS blockwise, the classic Triton kernel at the engines' default config and "
                                   "bf16 torch.matmul on this GPU (every candidate verified against the fp32 "
                                   "reference, then timed by CUDA-graph replay with cold L2), and write CSVs, "
                                   "plots and a markdown summary. With --report, summarize earlier runs instead.")
    p.set_defaults(handler=run_bench)
    what = p.add_argument_group("what to time")
    what.add_argument("--preset", nargs="+", choices=sorted(PRESETS), metavar="NAME",
                      help=f"shape presets (default {DEFAULT_PRESET}; see `gemm presets`)")
    what.add_argument("--shape", action="append", metavar="N,K", help="a weight shape (repeatable); replaces presets")
    what.add_argument("--m", metavar="LIST", help="comma-separated M values (default: vLLM's grid 1..4096)")
    what.add_argument("--m-extra", metavar="LIST", help="M values added to the grid, e.g. 8192")
    what.add_argument("--triton-sweep", action="store_true",
                      help="also time the best of a modest per-point sweep of the Triton kernel (slower)")
    what.add_argument("--cutlass", action="store_true",
                      help="also time the CUTLASS backend's default params and its whole space (slower)")
    what.add_argument("--sm90", action="store_true",
                      help="also time the Hopper kernel's default params and the 12 candidates of its space the "
                           "cost model ranks fastest (builds them in parallel first)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="bench_out", metavar="DIR",
                     help="directory for the CSVs, performance.md and performance/ (default bench_out/)")
    out.add_argument("--no-plots", action="store_true", help="no PNG plots (no matplotlib needed)")
    out.add_argument("--time-limit", type=number(0, inclusive=False, what="seconds"), metavar="S",
                     help="start no point after about S seconds (exit 3); what was timed is written")
    out.add_argument("--report", nargs="+", metavar="DEVICE=DIR",
                     help="no GPU work: write OUT/performance.md (and plots) from earlier runs, one section per "
                          "device, e.g. --report H200=docs/bench/h200 H100=docs/bench/h100-with-cutlass --out docs")


def _plots_wanted(args) -> bool:
    """Plots unless ``--no-plots``; without matplotlib none, said once."""
    if args.no_plots:
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        say(NO_MATPLOTLIB)
        return False
    return True


def gpu_rig():
    """The GPU to time on, or None when there is none (tests put a stand-in here)."""
    import torch

    if not torch.cuda.is_available():
        return None
    from gemm.bench.peers import GpuRig

    return GpuRig()


def run_report(args) -> int:
    """``gemm bench --report DEVICE=DIR...``: exit 0 with the report written, 2 for a bad argument."""
    from gemm.bench.report import slug, write_report
    from gemm.bench.runs import load_device, parse_device

    timing = [f"--{name.replace('_', '-')}" for name in ("preset", "shape", "m", "m_extra", "time_limit")
              if getattr(args, name)] + [flag for flag, on in (("--triton-sweep", args.triton_sweep),
                                                               ("--cutlass", args.cutlass),
                                                               ("--sm90", args.sm90)) if on]
    if timing:
        say(f"gemm bench: --report summarizes earlier runs; it takes no {', '.join(timing)}")
        return EXIT_USAGE
    devices = []
    for arg in args.report:
        try:
            devices.append(load_device(*parse_device(arg)))
        except ValueError as exc:
            say(f"gemm bench: argument {arg!r}: {exc}")
            return EXIT_USAGE
    try:
        out = output_dir(args.out, "--out")
    except UsageError as exc:
        say(f"gemm bench: {exc}")
        return EXIT_USAGE
    labels = [d.label for d in devices]
    if len({slug(label) for label in labels}) != len(labels):
        say(f"gemm bench: device labels must differ (also as file names), got {', '.join(labels)}")
        return EXIT_USAGE
    command = shlex.join(["gemm", "bench", "--report", *args.report, "--out", str(out)]
                         + (["--no-plots"] if args.no_plots else []))
    path, pictures = write_report(devices, out, command, _plots_wanted(args))
    print(f"wrote {path}" + (f" and {len(pictures)} plot(s) under {out / 'performance'}" if pictures else ""))
    return EXIT_OK


def _command(args) -> tuple[str, ...]:
    """The command line of this run, options in a fixed order (recorded in ceilings.json)."""
    words = ["gemm", "bench"]
    if args.preset:
        words += ["--preset", *args.preset]
    for shape in args.shape or []:
        words += ["--shape", shape]
    for flag, value in (("--m", args.m), ("--m-extra", args.m_extra), ("--time-limit", args.time_limit)):
        if value is not None:
            words += [flag, str(value)]
    words += [flag for flag, on in (("--triton-sweep", args.triton_sweep), ("--cutlass", args.cutlass),
                                    ("--sm90", args.sm90), ("--no-plots", args.no_plots)) if on]
    return (*words, "--out", args.out)


def run_bench(args) -> int:
    """``gemm bench``: exit 0 done, 1 nothing verified, 2 usage or no GPU, 3 stopped at ``--time-limit``."""
    if args.report:
        return run_report(args)
    try:
        swept = shapes(args, args.preset)
        grid = m_grid(args)
        out = output_dir(args.out, "--out")
    except UsageError as exc:
        say(f"gemm bench: {exc}")
        return EXIT_USAGE
    rig = gpu_rig()
    if rig is None:
        say("gemm bench: no CUDA GPU is visible on this machine, so there is nothing to time.\n"
            "  - run `gemm bench` on a machine with an NVIDIA Hopper GPU (H100/H200/H800/H20), or\n"
            "  - run `gemm bench --report DEVICE=DIR` to summarize the CSVs of an earlier run without one.")
        return EXIT_USAGE
    from gemm.bench.report import report_run
    from gemm.bench.run import BenchSettings, console_summary, run_bench as bench

    plots = _plots_wanted(args)
    settings = BenchSettings(tuple((s.n, s.k) for s in swept), grid, out, tuned=True, sweep=args.triton_sweep,
                             cutlass=args.cutlass, sm90=args.sm90, time_limit_s=args.time_limit, command=_command(args))
    try:
        outcome = bench(settings, rig, say)
    except ValueError as exc:  # nothing was verified: the rows say why
        say(f"gemm bench: {exc}; see {out / 'bench_rows.csv'}")
        return EXIT_ERROR
    print(console_summary(outcome.table, outcome.ceilings))
    command = shlex.join(["gemm", "bench", "--report", f"{rig.label}={out}", "--out", str(out)])
    path, pictures = report_run(out, rig.label, command, plots)
    print(f"\nwrote {path}" + (f" and {len(pictures)} plot(s) under {out / 'performance'}" if pictures else ""))
    return EXIT_INCOMPLETE if outcome.skipped else EXIT_OK
