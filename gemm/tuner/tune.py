"""A sweep on this machine's GPU (or the CPU interpreter): plan it, run it in workers, log every row,
write configs shape by shape.

``prepare`` settles everything before work starts (device, backends, plan,
results log) and raises ``SetupError``/``LogMismatchError`` for what cannot
start; ``run`` sweeps and returns a ``TuneOutcome``. A sweep stopped by its
time limit or an interrupt returns normally (``outcome.stopped``);
``CandidateError`` and ``WorkerStartError`` (``SweepError``) propagate after
the log is closed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from gemm.tuner.outputs import (
    INTERRUPTED, TIME_LIMIT, DeviceOutcome, TuneOutcome, default_log_path, open_results_log, plan_line,
    pruning_savings, shape_choices, sweep_fingerprint, write_baseline_report, write_shape_config,
)
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.log import ResultsLog
from gemm.tuner.results.measurement import Measurement
from gemm.tuner.search.plan import SweepPlan
from gemm.tuner.search.sweep import Progress
from gemm.tuner.settings import TuneSettings
from gemm.tuner.target import Target, local_target, usable_backends


@dataclass
class PreparedTune:
    """A planned sweep with its log open: what ``run`` needs (not frozen: it holds the open log)."""

    settings: TuneSettings
    target: Target
    plan: SweepPlan
    log: ResultsLog
    existing: list[Measurement]
    workers: int
    started: float


def _workers(settings: TuneSettings, target: Target, say: Callable[[str], None]) -> int:
    """Evaluation processes: as asked, else one per CPU but one (fewer if the GPU's memory says so)."""
    from gemm.tuner.search.pool_size import cap_workers, evaluation_workers

    workers = evaluation_workers(settings.workers, os.cpu_count() or 2, 1, settings.interpret)
    if target.device.startswith("cuda") and workers > 1:
        fitted, note = cap_workers(workers, settings.shapes, max(settings.m_grid), settings.out_dtype)
        if note is not None and settings.workers is None:
            workers = fitted
            say(f"gemm tune: {note}")
        elif note is not None:
            say(f"gemm tune: warning: --workers {workers} may run out of GPU memory (the memory would allow {note})")
    return workers


def prepare(settings: TuneSettings, say: Callable[[str], None]) -> PreparedTune:
    """Device, backends, plan and open log of a sweep; SetupError/ValueError/LogMismatchError if it cannot start."""
    started = time.monotonic()
    target = local_target(settings.interpret, settings.timer)
    backends = usable_backends(settings.engine_backends, settings.interpret, say)
    plan = SweepPlan.build(settings.sweep_settings(target.timer, backends, target.device_name), target.arch)
    log_path = settings.log_path or default_log_path(settings.out_root, target.device_name, plan)
    log, existing = open_results_log(log_path, sweep_fingerprint(target, plan), settings.resume, say)
    say(plan_line(plan, target.device_name, log_path))
    try:
        workers = _workers(settings, target, say)
    except BaseException:
        log.close()
        raise
    return PreparedTune(settings, target, plan, log, existing, workers, started)


def run(prepared: PreparedTune, progress: Progress) -> TuneOutcome:
    """Sweep ``prepared``'s plan, writing each shape's config as it finishes; lines for people go to
    ``progress.write``. The log is closed when this returns or raises."""
    from gemm.configs import ConfigError
    from gemm.tuner.engine.compare import replacement_notes
    from gemm.tuner.results.tables import shape_line
    from gemm.tuner.search.prebuild import needs_prebuild, prebuild_kernels
    from gemm.tuner.search.runner import InProcessRunner, WorkerPool
    from gemm.tuner.search.sweep import Sweep, TimeLimitReached
    from gemm.tuner.search.worker import WorkerSettings

    settings, target, plan, workers = prepared.settings, prepared.target, prepared.plan, prepared.workers
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    worker_settings = WorkerSettings(device=target.device, timer=target.timer, l2_bytes=target.arch.l2_bytes,
                                     seed=settings.seed, threads=threads)
    written, compared = [], []

    def on_shape_done(shape: LayerShape, rows) -> None:
        choices, points = shape_choices(rows, settings.tie, plan, shape)
        compared.extend(points)
        if points:
            for line in replacement_notes(points, plan.settings.engine.baseline.label):
                progress.write(f"gemm tune: {line}")
        try:
            path = write_shape_config(settings.out_root, target, shape, choices, plan)
        except ConfigError as exc:
            progress.write(f"gemm tune: could not write the config of N={shape.n} K={shape.k}: {exc}")
            path = None
        if path is not None:
            written.append(path)
        progress.write(shape_line(shape, choices) + (f" -> {path}" if path else ""))

    deadline = prepared.started + settings.time_limit_s if settings.time_limit_s else None
    runner = None
    stopped = None
    try:
        runner = WorkerPool(workers, worker_settings, settings.timeouts) if workers > 0 \
            else InProcessRunner(worker_settings)
        sweep = Sweep(plan, prepared.log, runner, prepared.existing, progress, deadline, on_shape_done)
        try:
            if needs_prebuild(plan) and not settings.interpret and settings.prebuild:
                prebuild_kernels(plan, progress.write)
            rows = sweep.run()
        except TimeLimitReached:
            rows, stopped = list(sweep.rows.values()), TIME_LIMIT
        except KeyboardInterrupt:
            rows, stopped = list(sweep.rows.values()), INTERRUPTED
    finally:
        if runner is not None:
            runner.close()
        prepared.log.close()
    wall_s = time.monotonic() - prepared.started
    report = write_baseline_report(settings.out_root, target.device_name, plan, compared, prepared.log.path)
    device = DeviceOutcome(target.device_name, target.arch, tuple(rows), prepared.log.path, tuple(compared),
                           report or ())
    return TuneOutcome(settings, (device,), tuple(written), wall_s, stopped,
                       restarts=getattr(runner, "restarts", 0),
                       savings=pruning_savings(plan.counts(), rows, wall_s, len(prepared.existing)))
