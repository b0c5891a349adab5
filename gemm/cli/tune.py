"""``gemm tune`` (sweep and write configs) and ``gemm presets`` (the shape lists it sweeps).

The options become one ``gemm.tuner.settings.TuneSettings`` here; the tuner
never sees them. ``gemm.tuner.tune`` sweeps on this machine's GPU,
``gemm.tuner.distributed.driver`` over several (``--gpus`` / ``--ray``); both
hand back a ``TuneOutcome`` that is printed here.
"""

from __future__ import annotations

import os

from gemm.cli.checks import count, input_dir, number, os_error_line, output_dir, output_file
from gemm.cli.common import (
    EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, m_grid, name_list, say, shapes,
)
from gemm.tuner.presets import DEFAULT_PRESET, INTERPRET_SHAPES, PRESETS, LayerShape
from gemm.tuner.results.select import DEFAULT_TIE_FRACTION
from gemm.configs.engine_targets import ENGINES
from gemm.tuner.search.space import DEFAULT_PRUNE_LEVEL, ENGINE_BUDGET, PRUNE_LEVELS


def add_parsers(sub) -> None:
    """Register ``tune``."""
    p = sub.add_parser("tune", help="tune kernels on the current GPU and write configs",
                       description="Search every backend's configurations per (N, K, M); verify each candidate "
                                   "against the fp32 reference, time it with CUDA graphs and cold L2, and write "
                                   "the best per M to config files.")
    p.set_defaults(handler=run_tune)
    what = p.add_argument_group("what to tune")
    what.add_argument("--preset", action="append", choices=sorted(PRESETS), metavar="NAME",
                      help=f"model shape preset, repeatable (default {DEFAULT_PRESET}; see `gemm presets`)")
    what.add_argument("--shape", action="append", metavar="N,K",
                      help="a weight shape [N, K] to tune (repeatable); replaces the preset")
    what.add_argument("--m", metavar="LIST", help="comma-separated M values (default: vLLM's grid 1..4096)")
    what.add_argument("--m-extra", metavar="LIST", help="M values added to the grid, e.g. 8192")
    what.add_argument("--backends", metavar="LIST",
                      help="comma-separated backends (triton, cutlass, cublas, or module:Class); "
                           "default: every backend usable here")
    what.add_argument("--out-dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    engine = p.add_argument_group("engine mode", "config files for an engine, measured in the engine's own kernel "
                                                 "(export them with gemm export --format ENGINE)")
    engine.add_argument("--engine", choices=sorted(ENGINES),
                        help="time the engine's block-FP8 Triton kernel as the engine launches it, over its key "
                             "space, never below the configs the engines ship for this GPU (default output: "
                             "<user data dir>/engine_configs/ENGINE)")
    engine.add_argument("--baseline", metavar="DIR",
                        help="with --engine: a folder of engine files for this GPU (e.g. the engine's own "
                             "configs/); each point also times its entry, reports ours/baseline per point and "
                             "M range, and replaces slower entries by the baseline's")
    where = p.add_argument_group("output")
    where.add_argument("--out", default=None, metavar="DIR",
                       help="config root: files go to DIR/<device_name>/ (default: the user config directory "
                            "the op reads first, GEMM_CONFIG_DIR or ~/.local/share/gemm/tuned_configs)")
    where.add_argument("--log", metavar="PATH",
                       help="results log (default DIR/logs/tune-<device>-<space hash>.jsonl)")
    where.add_argument("--resume", action="store_true",
                       help="continue the log of an interrupted sweep of the same device and search space")
    where.add_argument("--no-progress", action="store_true", help="no progress bar")
    search = p.add_argument_group("search")
    search.add_argument("--prune", choices=sorted(PRUNE_LEVELS, key=lambda k: PRUNE_LEVELS[k] or 10**9,
                                                   reverse=True),
                        default=None,
                        help="how hard the cost model cuts each backend's candidates per point before anything "
                             "is built: " + ", ".join(f"{k} ({'keep all' if v is None else f'best {v}'})"
                                                      for k, v in PRUNE_LEVELS.items())
                             + f" (default {DEFAULT_PRUNE_LEVEL}; with --engine, the best {ENGINE_BUDGET} on top of "
                               f"the engines' shipped configs)")
    search.add_argument("--budget", type=count(1, "candidates"), default=None, metavar="N",
                        help="candidates per backend and point after the cost model's ranking (overrides --prune)")
    search.add_argument("--keep", type=count(1, "finalists"), default=4, metavar="N",
                        help="finalists per backend and point timed carefully after screening (default 4)")
    search.add_argument("--screen-margin", type=number(0), default=0.25, metavar="F",
                        help="finalists must screen within this fraction of their backend's best (default 0.25)")
    search.add_argument("--exhaustive", action="store_true",
                        help="no pruning: build, verify and carefully time every valid candidate")
    search.add_argument("--tie", type=number(0, what="a fraction of the fastest time"),
                        default=DEFAULT_TIE_FRACTION, metavar="F",
                        help="times within this fraction are ties, resolved towards fewer distinct configs")
    run = p.add_argument_group("running")
    run.add_argument("--interpret", action="store_true",
                     help="tiny sweep on the CPU through the Triton interpreter (checks the tool, not a GPU)")
    run.add_argument("--workers", type=count(0, "0: evaluate in this process"), metavar="N",
                     help="worker processes (default: CPUs - 1 on a GPU, 1 with --interpret; 0: in-process)")
    run.add_argument("--gpus", metavar="all|N|LIST",
                     help="one worker process per GPU of this machine: 'all', the first N, or indices like 0,1,3 "
                          "(--workers then counts evaluation processes per GPU); with --interpret, N CPU "
                          "stand-ins; with --ray, at most N tasks at a time")
    run.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="tune on a Ray cluster (optional extra 'ray'), one task with one GPU per (shape, "
                          "backend); ADDRESS defaults to RAY_ADDRESS or a new local Ray instance")
    run.add_argument("--timeout", type=number(0, inclusive=False, what="seconds"), default=120.0, metavar="S",
                     help="seconds a built candidate may run (incl. Triton's JIT compile) before it is "
                          "killed as TIMEOUT (default 120)")
    run.add_argument("--build-timeout", type=number(0, inclusive=False, what="seconds"), default=900.0,
                     metavar="S",
                     help="seconds a candidate may take to build (default 900)")
    run.add_argument("--time-limit", type=number(0, inclusive=False, what="seconds"), metavar="S",
                     help="stop after about S seconds (exit 3); continue later with --resume")
    run.add_argument("--seed", type=count(0, high=2**63 - 1),
                     help="seed of the random verification data (default: fresh)")
    run.add_argument("--no-prebuild", action="store_true",
                     help="do not compile the CUTLASS and sm90 kernels ahead of the sweep")
    run.add_argument("--timer", metavar="MODULE:CLASS",
                     help="timer class (default gemm.tuner.timing:CudaGraphTimer; WallClockTimer with --interpret)")


def add_presets_parser(sub) -> None:
    """Register ``presets``."""
    sub.add_parser("presets", help="list the shape presets with their layer names").set_defaults(handler=run_presets)


def settings_from_args(args):
    """The ``TuneSettings`` the options ask for; UsageError (or ValueError) naming a bad value."""
    from gemm.envs import config_root
    from gemm.tuner.search.runner import Timeouts
    from gemm.tuner.search.space import PruneSettings
    from gemm.tuner.settings import TuneSettings

    from gemm.tuner.timing import timer_class

    if args.timer is not None:
        try:
            timer_class(args.timer)
        except ValueError as exc:
            raise UsageError(f"--timer: {exc}") from None
    from gemm.envs import engine_config_root

    if args.baseline is not None and args.engine is None:
        raise UsageError("--baseline compares an engine sweep with an engine's files: give --engine vllm|sglang too")
    if args.engine is not None and args.backends is not None:
        raise UsageError(f"--engine times the engine's kernel only ({ENGINES[args.engine].backend}); "
                         f"leave --backends out")
    baseline = input_dir(args.baseline, "--baseline") if args.baseline is not None else None
    if args.out:
        out_root = output_dir(args.out, "--out")
    elif args.engine is not None:
        out_root = output_dir(engine_config_root(args.engine), "the engine output directory")
    else:
        out_root = output_dir(config_root(), "the user config directory")
    log_path = output_file(args.log, "--log", "tune.jsonl") if args.log else None
    if args.interpret and not (args.shape or args.preset):
        swept = tuple(LayerShape("interpreter", n, k) for n, k in INTERPRET_SHAPES)  # small enough to interpret
    else:
        swept = shapes(args, args.preset or [])
    if args.exhaustive:
        budget = None
    elif args.budget is not None:
        budget = args.budget
    elif args.engine is not None and args.prune is None:
        budget = ENGINE_BUDGET
    else:
        budget = PRUNE_LEVELS[args.prune or DEFAULT_PRUNE_LEVEL]
    return TuneSettings(
        shapes=swept, m_grid=m_grid(args, args.interpret), out_root=out_root, engine=args.engine, baseline=baseline,
        backends=name_list(args.backends, "--backends"), out_dtype=args.out_dtype, prune=PruneSettings(budget=budget),
        keep=None if args.exhaustive else args.keep, screen_margin=args.screen_margin, tie=args.tie,
        interpret=args.interpret, timer=args.timer, log_path=log_path,
        resume=args.resume, workers=args.workers, timeouts=Timeouts(build_s=args.build_timeout, run_s=args.timeout),
        time_limit_s=args.time_limit,
        seed=args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little"),
        prebuild=not args.no_prebuild, gpus=args.gpus, ray=args.ray)


def print_outcome(outcome) -> None:
    """The choice per point and the status counts of each device, then one line on the whole run."""
    import pandas as pd

    from gemm.tuner.results.select import select
    from gemm.tuner.results.tables import choices_table, status_table

    settings, devices = outcome.settings, outcome.devices
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        for device in devices:
            if len(devices) > 1:
                print(f"\n{device.device_name}:")
            table = choices_table(select(device.rows, settings.tie), settings.shapes,
                                  None if settings.interpret else device.arch)
            if len(table):
                print(table.to_string(index=False))
            print()
            print(status_table(device.rows).to_string())
            print_baseline(device)
    done = (f"\nwall time {outcome.wall_s:.1f} s; {len(outcome.written)} config files written under "
            f"{settings.out_root}; ")
    if outcome.workers is None:
        print(done + f"worker restarts {outcome.restarts}; log {devices[0].log_path}")
        if outcome.savings:
            print(outcome.savings)
    else:
        logs = ", ".join(str(device.log_path) for device in devices)
        print(done + f"{outcome.workers} workers; lost workers {outcome.lost}; "
                     f"log{'s' if len(devices) > 1 else ''} {logs}")


def print_baseline(device) -> None:
    """An engine sweep's comparison with its baseline per M range, and where the per-point tables went."""
    if not device.baseline_points:
        return
    from gemm.tuner.engine.report import ranges_table

    print("\nagainst the baseline (speedup = baseline time / ours, the same run; file: after replacing slower "
          "entries by the baseline's, search: before):")
    print(ranges_table(list(device.baseline_points)).to_string(index=False))
    if device.report:
        print("per point: " + ", ".join(map(str, device.report)))


def run_tune(args) -> int:
    """``gemm tune``: exit 0 done, 1 stopped by an error, 2 usage, 3 time limit, 130 interrupted."""
    from gemm.cli.progress import make_progress
    from gemm.tuner.outputs import INTERRUPTED, TIME_LIMIT
    from gemm.tuner.search.runner import SweepError

    try:
        settings = settings_from_args(args)
        if settings.distributed:
            from gemm.tuner.distributed import driver as flow
        else:
            from gemm.tuner import tune as flow
        prepared = flow.prepare(settings, say)
    except ValueError as exc:  # UsageError, SetupError (RayUnavailable too), LogMismatchError, bad values
        say(f"gemm tune: {exc}")
        return EXIT_USAGE
    except OSError as exc:  # the results log cannot be made
        say(os_error_line("tune", exc))
        return EXIT_ERROR
    progress = make_progress(enabled=not args.no_progress)
    logs = "the logs keep" if settings.distributed else "the log keeps"
    try:
        outcome = flow.run(prepared, progress)
    except SweepError as exc:
        say(f"gemm tune: stopped: {exc}\n{logs} every finished row; fix the error and rerun with --resume")
        return EXIT_ERROR
    except OSError as exc:  # e.g. a full disk while writing the log or a config file
        say(f"{os_error_line('tune', exc)}; {logs} every row written before, rerun with --resume to finish")
        return EXIT_ERROR
    finally:
        progress.close()
    print_outcome(outcome)
    if outcome.stopped == TIME_LIMIT:
        say("gemm tune: time limit reached; rerun the same command with --resume to finish the sweep")
        return EXIT_INCOMPLETE
    if outcome.stopped == INTERRUPTED:
        say("gemm tune: interrupted; rerun the same command with --resume to finish the sweep")
        return EXIT_INTERRUPTED
    return EXIT_OK


def run_presets(args) -> int:
    """``gemm presets``: every preset's layer shapes, and the default M grid."""
    from gemm.tuner.presets import DEFAULT_M_GRID

    for name, preset in PRESETS.items():
        marker = " (default)" if name == DEFAULT_PRESET else ""
        print(f"{name}{marker}:")
        for shape in preset:
            print(f"  N={shape.n:<6} K={shape.k:<6} {shape.name}")
    print(f"default M grid: {','.join(map(str, DEFAULT_M_GRID))}")
    return EXIT_OK
