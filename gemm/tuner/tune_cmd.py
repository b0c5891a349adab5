"""``gemm tune``: plan a sweep, run it in workers, log every row, write configs shape by shape."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gemm import envs
from gemm.tuner.memory import cap_workers
from gemm.tuner.presets import (
    DEFAULT_M_GRID, DEFAULT_PRESET, INTERPRET_M_GRID, INTERPRET_SHAPES, LayerShape, dedupe_shapes, parse_m_list,
    parse_shape, preset_shapes,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(ValueError):
    """A command-line value is wrong; the message says which and what is expected."""


@dataclass(frozen=True)
class Target:
    """Where the sweep runs: the device's spec, its config-file name, the tensors' device, the timer."""

    arch: object
    device_name: str
    device: str
    timer: str


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def resolve_target(args) -> Target:
    """The GPU (or, with ``--interpret``, the CPU interpreter stand-in) to tune on."""
    from gemm.arch import detect_arch, interpreter_arch
    from gemm.tuner.timing import DEFAULT_CPU_TIMER, DEFAULT_GPU_TIMER

    if args.interpret:
        arch = interpreter_arch()
        return Target(arch, arch.config_device_name, "cpu", args.timer or DEFAULT_CPU_TIMER)
    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "no CUDA GPU is visible on this machine, so there is nothing to tune.\n"
            "  - run `gemm tune` on a machine with an NVIDIA Hopper GPU (H100/H200/H800/H20), or\n"
            "  - run `gemm tune --interpret` for a tiny sweep on the CPU through the Triton interpreter "
            "(it checks the tool, its numbers say nothing about a GPU).")
    arch = detect_arch()
    return Target(arch, arch.config_device_name, "cuda", args.timer or DEFAULT_GPU_TIMER)


def resolve_shapes(args) -> list[LayerShape]:
    try:
        if args.shape:
            return dedupe_shapes([parse_shape(text) for text in args.shape])
        if args.interpret and not args.preset:
            return [LayerShape("interpreter", n, k) for n, k in INTERPRET_SHAPES]
        return preset_shapes(args.preset or DEFAULT_PRESET)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def resolve_m_grid(args) -> tuple[int, ...]:
    try:
        interpret = getattr(args, "interpret", False)  # gemm predict has no --interpret
        grid = parse_m_list(args.m) if args.m else (INTERPRET_M_GRID if interpret else DEFAULT_M_GRID)
        if args.m_extra:
            grid = tuple(sorted(set(grid) | set(parse_m_list(args.m_extra, "--m-extra"))))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return grid


def resolve_backends(args) -> list[str]:
    """Backends to sweep: the named ones (each must be usable), else every usable registered one."""
    from gemm.kernels import backend_names
    from gemm.tuner.space import resolve_backend

    explicit = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    wanted = explicit or (["triton"] if args.interpret else backend_names())
    usable = []
    for ref in wanted:
        try:
            backend = resolve_backend(ref)
            reason = backend.unavailable_reason()
        except (ImportError, ValueError) as exc:
            reason = str(exc)
        if reason is None:
            usable.append(ref)
        elif explicit:
            raise UsageError(f"--backends: {ref!r} cannot run here: {reason}")
        else:
            _say(f"gemm tune: skipping backend {ref!r}: {reason}")
    if not usable:
        raise UsageError("no usable backend on this machine")
    return usable


def default_workers(interpret: bool) -> int:
    """One worker on the interpreter; on a GPU enough to keep the CPUs compiling (one core left free)."""
    from gemm.tuner.unit_runner import evaluation_workers

    return evaluation_workers(None, os.cpu_count() or 2, 1, interpret)


def prebuild_cutlass(plan, out_dtype: str) -> None:
    """Compile every CUTLASS instantiation the plan needs with parallel nvcc, before any worker starts.

    Failures are only reported here: the sweep records them per candidate (COMPILE_FAILED).
    """
    try:
        from gemm.kernels.cutlass import aot
    except ImportError as exc:
        _say(f"gemm tune: CUTLASS kernels will be built on first use ({exc})")
        return
    from gemm.kernels.base import BackendError
    from gemm.tuner.space import resolve_backend

    backend = resolve_backend("cutlass")
    params = {backend.params_from_dict(c.params) for spaces in plan.spaces.values() for s in spaces
              if s.backend == "cutlass" for c in s.candidates}
    if not params:
        return
    start = time.monotonic()
    _say(f"gemm tune: building the CUTLASS kernels of {len(params)} candidates ahead of the sweep")

    def report(outcome) -> None:
        name = getattr(outcome.config, "name", outcome.config)
        if outcome.error is not None:
            _say(f"  {name}: failed ({type(outcome.error).__name__})")
        elif not outcome.result.cached:
            _say(f"  {name}: built in {outcome.result.seconds:.0f} s")

    try:
        paths = aot.build_kernels(sorted(params, key=repr), progress=report, out_dtype=out_dtype)
        _say(f"gemm tune: {len(paths)} CUTLASS kernels ready after {time.monotonic() - start:.0f} s")
    except BackendError as exc:
        first = str(exc).splitlines()[0]
        _say(f"gemm tune: some CUTLASS kernels failed to build ({first}); their candidates will be "
             f"recorded as COMPILE_FAILED")


class TqdmProgress:
    """Progress bar with ETA (tqdm, on stderr), for terminals."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="run", desc="tune", file=sys.stderr, dynamic_ncols=True, smoothing=0.05)

    def add_total(self, n: int) -> None:
        self.bar.total = max(self.bar.n, (self.bar.total or 0) + n)
        self.bar.refresh()

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def note(self, text: str) -> None:
        self.bar.set_description(text)

    def write(self, text: str) -> None:
        """A line on stderr above the bar."""
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class LineProgress:
    """Progress for logs and pipes: a plain line with ETA every ``every_s`` seconds (no carriage returns)."""

    def __init__(self, enabled: bool, every_s: float = 30.0) -> None:
        self.enabled, self.every_s = enabled, every_s
        self.total = self.done = 0
        self.label = ""
        self.start = self.last = time.monotonic()

    def add_total(self, n: int) -> None:
        self.total = max(self.done, self.total + n)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.every_s:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / self.done * max(0, self.total - self.done) if self.done else float("nan")
            _say(f"tune {self.label}: {self.done}/{self.total} runs, {elapsed / 60:.1f} min elapsed, "
                 f"ETA {eta / 60:.1f} min")

    def note(self, text: str) -> None:
        self.label = text

    def write(self, text: str) -> None:
        _say(text)

    def close(self) -> None:
        pass


def make_progress(enabled: bool):
    """A tqdm bar on a terminal, periodic lines otherwise (or nothing when disabled)."""
    if enabled and sys.stderr.isatty():
        return TqdmProgress()
    return LineProgress(enabled)


def write_shape_config(out_root: Path, target: Target, shape: LayerShape, choices: dict, out_dtype: str,
                       block_shape: tuple[int, int]) -> Path | None:
    """Write (merge) the config file of one shape from its choices; None when no entry is writable."""
    from gemm.configs import Provenance

    return write_choices(out_root, target.device_name, target.arch.name, shape.n, shape.k, choices, out_dtype,
                         block_shape, Provenance.current("measured"))


def write_choices(out_root: Path, device_name: str, arch_name: str, n: int, k: int, choices: dict, out_dtype: str,
                  block_shape: tuple[int, int], provenance) -> Path | None:
    """Write (merge) ``choices`` ({M: select.Choice}) as the config of (N, K); None when no entry is writable."""
    from gemm.configs import ConfigEntry, ConfigFile, write_config
    from gemm.tuner.space import is_registered

    entries = {m: ConfigEntry(c.backend, dict(c.params), round(c.us, 3), c.engine_triton)
               for m, c in choices.items() if is_registered(c.backend)}
    if not entries:
        return None
    config = ConfigFile(device_name, arch_name, n, k, tuple(block_shape), out_dtype, provenance, entries)
    return write_config(out_root, config)


def pruning_savings(counts: dict, rows, wall_s: float, resumed_rows: int) -> str | None:
    """One line: candidates the cost model pruned and the sweep time that saved, at this sweep's measured
    seconds per evaluated candidate (None when nothing was pruned or nothing ran in this process)."""
    pruned = counts.get("pruned", 0)
    from gemm.tuner.results import Stage

    evaluated = len({(r.backend, r.params_key, r.n, r.k, r.m) for r in rows if r.stage != Stage.SPACE})
    if not pruned or not evaluated or resumed_rows:
        return None
    per_candidate = wall_s / evaluated
    return (f"pruning: the cost model kept {counts.get('kept', 0)} of {counts.get('kept', 0) + pruned} valid "
            f"candidates; at this sweep's {per_candidate:.2f} s per candidate it saved about "
            f"{pruned * per_candidate / 60:.1f} min")


def check_running_args(args) -> None:
    """UsageError for a bad --workers or --time-limit."""
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be >= 0 (0: evaluate in this process), got {args.workers}")
    if args.time_limit is not None and args.time_limit <= 0:
        raise UsageError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")


def sweep_settings(args, timer: str, shapes, m_grid, backends):
    """The SweepSettings the command line asks for (ValueError for a bad value)."""
    from gemm.tuner.space import DEFAULT_PRUNE_LEVEL, PRUNE_LEVELS, PruneSettings
    from gemm.tuner.sweep import SweepSettings

    if args.exhaustive:
        budget = None
    elif args.budget is not None:
        budget = args.budget
    else:
        budget = PRUNE_LEVELS[getattr(args, "prune", None) or DEFAULT_PRUNE_LEVEL]
    return SweepSettings(
        shapes=tuple(shapes), m_grid=m_grid, backends=tuple(backends), timer=timer,
        out_dtype=args.out_dtype, prune=PruneSettings(budget=budget),
        keep=None if args.exhaustive else args.keep, screen_margin=args.screen_margin,
        screen_reps=2 if args.interpret else 5, final_reps=3 if args.interpret else 50,
        interpret=args.interpret)


def sweep_fingerprint(target: Target, plan):
    """The log header of a sweep of ``plan`` on ``target`` with this software."""
    from gemm.configs.schema import Provenance
    from gemm.tuner.results import Fingerprint

    provenance = Provenance.current("measured")
    return Fingerprint(target.device_name, target.arch.name, provenance.torch, provenance.triton,
                       provenance.cutlass, provenance.tool_version, plan.hash, plan.settings.block_shape,
                       plan.settings.out_dtype)


def default_log_path(out_root: Path, device_name: str, plan) -> Path:
    return out_root / "logs" / f"tune-{device_name}-{plan.hash[:12]}.jsonl"


def open_results_log(log_path: Path, fingerprint, resume: bool):
    """(open log, rows already there): resumed when asked and present, else new. Raises LogMismatchError."""
    from gemm.tuner.results import ResultsLog

    if resume and log_path.exists():
        log, existing = ResultsLog.resume(log_path, fingerprint)
        _say(f"gemm tune: resuming {log_path} ({len(existing)} rows already there)")
        return log, existing
    if resume:
        _say(f"gemm tune: no log at {log_path} to resume; starting a new sweep")
    return ResultsLog.create(log_path, fingerprint), []


def run_tune(args) -> int:
    if getattr(args, "gpus", None) is not None or getattr(args, "ray", None) is not None:
        from gemm.tuner.distributed_cmd import run_distributed

        return run_distributed(args)
    from gemm.configs import ConfigError
    from gemm.tuner.report import choices_table, shape_line, status_table
    from gemm.tuner.results import LogMismatchError
    from gemm.tuner.runner import CandidateError, InProcessRunner, Timeouts, WorkerPool, WorkerStartError
    from gemm.tuner.select import select
    from gemm.tuner.sweep import Sweep, SweepPlan, TimeLimitReached
    from gemm.tuner.worker import WorkerSettings

    started = time.monotonic()
    try:
        target = resolve_target(args)
        shapes = resolve_shapes(args)
        m_grid = resolve_m_grid(args)
        backends = resolve_backends(args)
        settings = sweep_settings(args, target.timer, shapes, m_grid, backends)
        timeouts = Timeouts(build_s=args.build_timeout, run_s=args.timeout)
        check_running_args(args)
    except (UsageError, ValueError) as exc:
        _say(f"gemm tune: {exc}")
        return EXIT_USAGE

    plan = SweepPlan.build(settings, target.arch)
    counts = plan.counts()
    fingerprint = sweep_fingerprint(target, plan)
    out_root = Path(args.out) if args.out is not None else envs.config_root()
    log_path = Path(args.log) if args.log else default_log_path(out_root, target.device_name, plan)
    try:
        log, existing = open_results_log(log_path, fingerprint, args.resume)
    except LogMismatchError as exc:
        _say(f"gemm tune: {exc}")
        return EXIT_USAGE

    _say(f"gemm tune: {len(shapes)} shapes x {len(m_grid)} M on {target.device_name} with {', '.join(backends)}: "
         f"{counts.get('kept', 0)} candidates to run, {counts.get('rejected', 0)} rejected by constraints, "
         f"{counts.get('pruned', 0)} pruned by the cost model; log {log_path}")
    workers = default_workers(args.interpret) if args.workers is None else args.workers
    if target.device.startswith("cuda") and workers > 1:
        fitted, note = cap_workers(workers, shapes, max(m_grid), settings.out_dtype)
        if note is not None and args.workers is None:
            workers = fitted
            _say(f"gemm tune: {note}")
        elif note is not None:
            _say(f"gemm tune: warning: --workers {workers} may run out of GPU memory (the memory would allow {note})")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    worker_settings = WorkerSettings(device=target.device, timer=target.timer, l2_bytes=target.arch.l2_bytes,
                                     seed=seed, threads=threads)
    runner = WorkerPool(workers, worker_settings, timeouts) if workers > 0 else InProcessRunner(worker_settings)
    progress = make_progress(enabled=not args.no_progress)
    written: list[Path] = []

    def on_shape_done(shape: LayerShape, rows) -> None:
        choices = select(rows, args.tie).get((shape.n, shape.k), {})
        try:
            path = write_shape_config(out_root, target, shape, choices, settings.out_dtype, settings.block_shape)
        except ConfigError as exc:
            progress.write(f"gemm tune: could not write the config of N={shape.n} K={shape.k}: {exc}")
            path = None
        if path is not None:
            written.append(path)
        progress.write(shape_line(shape, choices) + (f" -> {path}" if path else ""))

    deadline = started + args.time_limit if args.time_limit else None
    sweep = Sweep(plan, log, runner, existing, progress, deadline, on_shape_done)
    code = EXIT_OK
    try:
        if "cutlass" in backends and not args.interpret and not args.no_prebuild:
            prebuild_cutlass(plan, settings.out_dtype)
        rows = sweep.run()
    except TimeLimitReached:
        rows, code = list(sweep.rows.values()), EXIT_INCOMPLETE
    except KeyboardInterrupt:
        rows, code = list(sweep.rows.values()), EXIT_INTERRUPTED
    except (CandidateError, WorkerStartError) as exc:
        _say(f"gemm tune: stopped: {exc}\nthe log keeps every finished row; fix the error and rerun with --resume")
        return EXIT_ERROR
    finally:
        progress.close()
        runner.close()
        log.close()

    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        table = choices_table(select(rows, args.tie), shapes, None if args.interpret else target.arch)
        if len(table):
            print(table.to_string(index=False))
        print()
        print(status_table(rows).to_string())
    restarts = getattr(runner, "restarts", 0)
    wall_s = time.monotonic() - started
    print(f"\nwall time {wall_s:.1f} s; {len(written)} config files written under {out_root}; "
          f"worker restarts {restarts}; log {log_path}")
    saved = pruning_savings(counts, rows, wall_s, len(existing))
    if saved:
        print(saved)
    if code == EXIT_INCOMPLETE:
        _say("gemm tune: time limit reached; rerun the same command with --resume to finish the sweep")
    elif code == EXIT_INTERRUPTED:
        _say("gemm tune: interrupted; rerun the same command with --resume to finish the sweep")
    return code
