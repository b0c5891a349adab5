"""The driver of a sweep spread over GPUs (``gemm tune --gpus ...`` / ``--ray [ADDRESS]``).

The driver plans the sweep per device name, opens one results log per device
name (named and fingerprinted as a plain sweep's, so either kind of run can
resume the other's log), and lets ``gemm.tuner.distributed.scheduler.Scheduler``
hand (shape, backend) units to one worker per GPU. Workers stream rows back;
only the driver appends them to the log, and it writes a shape's config file
(a locked merge with what is on disk) once every backend of the shape is done.

As ``gemm.tuner.tune``: ``prepare`` (SetupError, RayUnavailable among them,
ValueError or LogMismatchError for what cannot start), then ``run`` (a
``TuneOutcome``; ``DistributedError`` propagates after the logs are closed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gemm.tuner.distributed.placement import DeviceSetup, place
from gemm.tuner.distributed.scheduler import DeviceRun
from gemm.tuner.outputs import (
    INTERRUPTED, TIME_LIMIT, DeviceOutcome, TuneOutcome, default_log_path, open_results_log, plan_line,
    shape_choices, sweep_fingerprint, write_baseline_report, write_shape_config,
)
from gemm.tuner.search.plan import SweepPlan
from gemm.tuner.search.sweep import Progress
from gemm.tuner.settings import TuneSettings


@dataclass
class PreparedRun:
    """A planned distributed sweep with its logs open (not frozen: it holds them)."""

    settings: TuneSettings
    devices: dict[str, DeviceSetup]
    runs: list[DeviceRun]
    make_executor: Callable[[], object]
    gpus_per_host: int
    slot_count: int
    started: float


def _log_path(settings: TuneSettings, device_name: str, plan: SweepPlan, several: bool) -> Path:
    """The device's log: the default name, or ``--log`` (with the device name added when there are several)."""
    if settings.log_path is None:
        return default_log_path(settings.out_root, device_name, plan)
    path = settings.log_path
    return path.with_name(f"{path.stem}-{device_name}{path.suffix}") if several else path


def prepare(settings: TuneSettings, say: Callable[[str], None]) -> PreparedRun:
    """Workers, device names, plans and open logs of a distributed sweep (see the module docstring)."""
    started = time.monotonic()
    placement = place(settings, say)
    plans = {name: SweepPlan.build(settings.sweep_settings(setup.target.timer, setup.backends, name),
                                   setup.target.arch)
             for name, setup in placement.devices.items()}
    runs: list[DeviceRun] = []
    try:
        for name, plan in plans.items():
            target = placement.devices[name].target
            log_path = _log_path(settings, name, plan, several=len(plans) > 1)
            log, existing = open_results_log(log_path, sweep_fingerprint(target, plan), settings.resume, say)
            runs.append(DeviceRun(name, plan, log, {row.key: row for row in existing}))
            say(plan_line(plan, name, log_path))
    except BaseException:
        for run_ in runs:
            run_.log.close()
        raise
    say(f"gemm tune: {placement.slot_count} GPU worker(s), one (shape, backend) unit at a time each"
        if not settings.interpret else f"gemm tune: {placement.slot_count} CPU stand-in worker(s)")
    return PreparedRun(settings, placement.devices, runs, placement.make_executor, placement.gpus_per_host,
                       placement.slot_count, started)


def run(prepared: PreparedRun, progress: Progress) -> TuneOutcome:
    """Run every unit on the workers, writing each shape's config once all its backends are done."""
    from gemm.configs import ConfigError
    from gemm.tuner.distributed.scheduler import Scheduler
    from gemm.tuner.distributed.unit import UnitTask
    from gemm.tuner.engine.compare import replacement_notes
    from gemm.tuner.results.tables import shape_line
    from gemm.tuner.search.prebuild import needs_prebuild, prebuild_kernels
    from gemm.tuner.search.sweep import TimeLimitReached
    from gemm.tuner.search.worker import WorkerSettings

    settings, devices, runs = prepared.settings, prepared.devices, prepared.runs
    # On a cluster each task builds its own unit's kernels: the driver's machine may have no nvcc, or no GPU.
    prebuild_in_tasks = settings.ray is not None and not settings.interpret and settings.prebuild

    def make_task(run_: DeviceRun, unit, time_left_s):
        target = devices[run_.device_name].target
        worker = WorkerSettings(device=target.device, timer=target.timer, l2_bytes=target.arch.l2_bytes,
                                seed=settings.seed)
        return UnitTask(unit, run_.unit_settings(unit), run_.plan.arch, run_.unit_spaces(unit),
                        run_.unit_rows(unit), worker, settings.timeouts, settings.workers, prepared.gpus_per_host,
                        time_left_s, prebuild_in_tasks)

    written: list[Path] = []
    compared: dict[str, list] = {run_.device_name: [] for run_ in runs}

    def on_shape_done(run_: DeviceRun, shape) -> None:
        choices, points = shape_choices(run_.shape_rows(shape), settings.tie, run_.plan, shape)
        compared[run_.device_name].extend(points)
        for line in replacement_notes(points, run_.plan.settings.engine.baseline.label) if points else ():
            progress.write(f"gemm tune: {run_.device_name}: {line}")
        try:
            path = write_shape_config(settings.out_root, devices[run_.device_name].target, shape, choices,
                                      run_.plan)
        except ConfigError as exc:
            progress.write(f"gemm tune: could not write the config of N={shape.n} K={shape.k}: {exc}")
            path = None
        if path is not None:
            written.append(path)
        prefix = f"{run_.device_name}: " if len(runs) > 1 else ""
        progress.write(prefix + shape_line(shape, choices) + (f" -> {path}" if path else ""))

    deadline = prepared.started + settings.time_limit_s if settings.time_limit_s else None
    stopped, executor, scheduler = None, None, None
    try:
        if settings.ray is None and not settings.interpret and settings.prebuild:
            for run_ in runs:
                if needs_prebuild(run_.plan):
                    prebuild_kernels(run_.plan, progress.write)
        executor = prepared.make_executor()
        if hasattr(executor, "pids"):
            progress.write("gemm tune: workers " + ", ".join(f"{slot} (pid {pid})"
                                                             for slot, pid in executor.pids().items()))
        scheduler = Scheduler(runs, executor, make_task, progress, deadline, on_shape_done, progress.write)
        scheduler.run()
    except TimeLimitReached:
        stopped = TIME_LIMIT
    except KeyboardInterrupt:
        stopped = INTERRUPTED
    finally:
        if executor is not None:
            executor.close()
        for run_ in runs:
            run_.log.close()
    reports = {r.device_name: write_baseline_report(settings.out_root, r.device_name, r.plan, compared[r.device_name],
                                                    r.log.path)
               for r in runs}
    outcomes = tuple(DeviceOutcome(r.device_name, devices[r.device_name].target.arch, tuple(r.rows.values()),
                                   r.log.path, tuple(compared[r.device_name]), reports[r.device_name] or ())
                     for r in runs)
    return TuneOutcome(settings, outcomes, tuple(written), time.monotonic() - prepared.started,
                       stopped, workers=prepared.slot_count, lost=scheduler.lost if scheduler is not None else 0)
