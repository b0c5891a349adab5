"""``gemm tune --gpus ...`` and ``gemm tune --ray [ADDRESS]``: the driver of a sweep spread over GPUs.

The driver plans the sweep per device name, opens one results log per device
name (named and fingerprinted as a plain sweep's, so either kind of run can
resume the other's log), and lets ``gemm.tuner.distributed.Scheduler`` hand
(shape, backend) units to one worker per GPU. Workers stream rows back; only
the driver appends them to the log, and it writes a shape's config file (a
locked merge with what is on disk) once every backend of the shape is done.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from gemm import envs
from gemm.tuner.tune_cmd import (
    EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Target, UsageError, _say, check_running_args,
    default_log_path, make_progress, open_results_log, prebuild_cutlass, resolve_backends, resolve_m_grid,
    resolve_shapes, sweep_fingerprint, sweep_settings, write_shape_config,
)


@dataclass(frozen=True)
class DeviceSetup:
    """One device name of the run: where and how it measures, and the backends usable on it."""

    target: Target
    backends: tuple[str, ...]


def _timer(args, gpu: bool) -> str:
    from gemm.tuner.timing import DEFAULT_CPU_TIMER, DEFAULT_GPU_TIMER

    return args.timer or (DEFAULT_GPU_TIMER if gpu else DEFAULT_CPU_TIMER)


def _interpreter_device(args) -> dict[str, DeviceSetup]:
    from gemm.arch import interpreter_arch

    arch = interpreter_arch()
    target = Target(arch, arch.config_device_name, "cpu", _timer(args, gpu=False))
    return {target.device_name: DeviceSetup(target, tuple(resolve_backends(args)))}


def _ray_gpu_devices(args, reports) -> dict[str, DeviceSetup]:
    """Per device name the cluster reported: the backends to sweep there (named ones must be usable)."""
    from gemm.kernels import backend_names

    explicit = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    devices = {}
    for name, report in reports.items():
        usable = []
        for ref in explicit or backend_names():
            reason = report.unavailable.get(ref)
            if reason is None:
                usable.append(ref)
            elif explicit:
                raise UsageError(f"--backends: {ref!r} cannot run on the cluster's {name}: {reason}")
            else:
                _say(f"gemm tune: skipping backend {ref!r} on {name}: {reason}")
        if not usable:
            raise UsageError(f"no usable backend on the cluster's {name}")
        devices[name] = DeviceSetup(Target(report.arch, name, "cuda", _timer(args, gpu=True)), tuple(usable))
    return devices


def _gpu_limit(args) -> int | None:
    if args.gpus is None:
        return None
    text = args.gpus.strip()
    if text.lower() == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--gpus with --ray takes 'all' or a count N (at most N tasks at a time), "
                         f"got {args.gpus!r}")
    return int(text)


def _setup(args):
    """(devices, executor factory, GPUs per host) for --ray or --gpus; raises UsageError/ValueError."""
    if args.ray is not None:
        from gemm.tuner import ray_backend

        limit = _gpu_limit(args)
        ray = ray_backend.connect(args.ray or None, args.interpret)
        if args.interpret:
            devices = _interpreter_device(args)
            slots = ray_backend.cpu_slots(ray, next(iter(devices)), limit)
        else:
            backends = tuple(b.strip() for b in args.backends.split(",") if b.strip()) if args.backends else None
            from gemm.kernels import backend_names

            slots, reports = ray_backend.gpu_slots(ray, backends or tuple(backend_names()), limit)
            devices = _ray_gpu_devices(args, reports)
        return devices, lambda: ray_backend.RayExecutor(ray, slots, args.interpret), 1, len(slots)
    from gemm.tuner.gpu_workers import LocalExecutor, local_gpus

    gpus = local_gpus(args.gpus, args.interpret, os.cpu_count() or 1)
    backends = tuple(resolve_backends(args))
    devices = {}
    for gpu in gpus:
        if gpu.device_name not in devices:
            device = "cpu" if args.interpret else "cuda"
            target = Target(gpu.arch, gpu.device_name, device, _timer(args, gpu=not args.interpret))
            devices[gpu.device_name] = DeviceSetup(target, backends)
    return devices, lambda: LocalExecutor(gpus), len(gpus), len(gpus)


def _log_path(args, out_root: Path, device_name: str, plan, several: bool) -> Path:
    if not args.log:
        return default_log_path(out_root, device_name, plan)
    path = Path(args.log)
    return path.with_name(f"{path.stem}-{device_name}{path.suffix}") if several else path


def _print_summary(runs, devices, shapes, tie: float, interpret: bool) -> None:
    import pandas as pd

    from gemm.tuner.report import choices_table, status_table
    from gemm.tuner.select import select

    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        for run in runs:
            rows = list(run.rows.values())
            if len(runs) > 1:
                print(f"\n{run.device_name}:")
            arch = None if interpret else devices[run.device_name].target.arch
            table = choices_table(select(rows, tie), shapes, arch)
            if len(table):
                print(table.to_string(index=False))
            print()
            print(status_table(rows).to_string())


def run_distributed(args) -> int:
    """``gemm tune`` with ``--gpus`` or ``--ray``; the exit codes of ``gemm tune``."""
    from gemm.configs import ConfigError
    from gemm.tuner.distributed import DeviceRun, DistributedError, Scheduler
    from gemm.tuner.unit_runner import UnitTask
    from gemm.tuner.ray_backend import RayUnavailable
    from gemm.tuner.report import shape_line
    from gemm.tuner.results import LogMismatchError
    from gemm.tuner.runner import Timeouts
    from gemm.tuner.select import select
    from gemm.tuner.sweep import SweepPlan, TimeLimitReached
    from gemm.tuner.worker import WorkerSettings

    started = time.monotonic()
    try:
        check_running_args(args)
        shapes = resolve_shapes(args)
        m_grid = resolve_m_grid(args)
        timeouts = Timeouts(build_s=args.build_timeout, run_s=args.timeout)
        devices, make_executor, gpus_per_host, slot_count = _setup(args)
        plans = {name: SweepPlan.build(sweep_settings(args, setup.target.timer, shapes, m_grid, setup.backends),
                                       setup.target.arch) for name, setup in devices.items()}
    except (UsageError, ValueError, RayUnavailable) as exc:
        _say(f"gemm tune: {exc}")
        return EXIT_USAGE

    out_root = Path(args.out) if args.out is not None else envs.config_root()
    runs: list[DeviceRun] = []
    try:
        for name, plan in plans.items():
            target = devices[name].target
            log_path = _log_path(args, out_root, name, plan, several=len(plans) > 1)
            log, existing = open_results_log(log_path, sweep_fingerprint(target, plan), args.resume)
            runs.append(DeviceRun(name, plan, log, {row.key: row for row in existing}))
            counts = plan.counts()
            backends = ", ".join(devices[name].backends)
            _say(f"gemm tune: {len(shapes)} shapes x {len(m_grid)} M on {name} with {backends}: "
                 f"{counts.get('kept', 0)} candidates to run, {counts.get('rejected', 0)} rejected by constraints, "
                 f"{counts.get('pruned', 0)} pruned by the cost model; log {log_path}")
    except LogMismatchError as exc:
        _say(f"gemm tune: {exc}")
        for run in runs:
            run.log.close()
        return EXIT_USAGE
    _say(f"gemm tune: {slot_count} GPU worker(s), one (shape, backend) unit at a time each"
         if not args.interpret else f"gemm tune: {slot_count} CPU stand-in worker(s)")

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    prebuild_in_tasks = args.ray is not None and not args.interpret and not args.no_prebuild

    def make_task(run: DeviceRun, unit, time_left_s):
        target = devices[run.device_name].target
        worker = WorkerSettings(device=target.device, timer=target.timer, l2_bytes=target.arch.l2_bytes, seed=seed)
        return UnitTask(unit, run.unit_settings(unit), run.plan.arch, run.unit_spaces(unit), run.unit_rows(unit),
                        worker, timeouts, args.workers, gpus_per_host, time_left_s, prebuild_in_tasks)

    progress = make_progress(enabled=not args.no_progress)
    written: list[Path] = []

    def on_shape_done(run: DeviceRun, shape) -> None:
        setup = devices[run.device_name]
        choices = select(run.shape_rows(shape), args.tie).get((shape.n, shape.k), {})
        try:
            path = write_shape_config(out_root, setup.target, shape, choices, run.plan.settings.out_dtype,
                                      run.plan.settings.block_shape)
        except ConfigError as exc:
            progress.write(f"gemm tune: could not write the config of N={shape.n} K={shape.k}: {exc}")
            path = None
        if path is not None:
            written.append(path)
        prefix = f"{run.device_name}: " if len(runs) > 1 else ""
        progress.write(prefix + shape_line(shape, choices) + (f" -> {path}" if path else ""))

    deadline = started + args.time_limit if args.time_limit else None
    code = EXIT_OK
    executor = None
    scheduler = None
    try:
        if args.ray is None and not args.interpret and not args.no_prebuild:
            for run in runs:
                if "cutlass" in run.plan.settings.backends:
                    prebuild_cutlass(run.plan, run.plan.settings.out_dtype)
        executor = make_executor()
        if hasattr(executor, "pids"):
            progress.write("gemm tune: workers " + ", ".join(f"{slot} (pid {pid})"
                                                             for slot, pid in executor.pids().items()))
        scheduler = Scheduler(runs, executor, make_task, progress, deadline, on_shape_done, progress.write)
        scheduler.run()
    except TimeLimitReached:
        code = EXIT_INCOMPLETE
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except DistributedError as exc:
        _say(f"gemm tune: stopped: {exc}\nthe logs keep every finished row; fix the error and rerun with --resume")
        code = EXIT_ERROR
    finally:
        progress.close()
        if executor is not None:
            executor.close()
        for run in runs:
            run.log.close()
    if code == EXIT_ERROR:
        return code

    _print_summary(runs, devices, shapes, args.tie, args.interpret)
    lost = scheduler.lost if scheduler is not None else 0
    logs = ", ".join(str(run.log.path) for run in runs)
    print(f"\nwall time {time.monotonic() - started:.1f} s; {len(written)} config files written under {out_root}; "
          f"{slot_count} workers; lost workers {lost}; log{'s' if len(runs) > 1 else ''} {logs}")
    if code == EXIT_INCOMPLETE:
        _say("gemm tune: time limit reached; rerun the same command with --resume to finish the sweep")
    elif code == EXIT_INTERRUPTED:
        _say("gemm tune: interrupted; rerun the same command with --resume to finish the sweep")
    return code
