"""Running one unit of a distributed sweep: one backend's candidates for one shape, every M, on one GPU.

``run_unit`` runs the ordinary sweep (``gemm.tuner.search.sweep``) on the unit's
slice of its device's plan, in whatever process the unit landed in (a local
worker pinned to one GPU, or a Ray task holding one GPU), with that
process's own pool of evaluation workers, and reports what happens through
``emit(kind, payload)`` instead of writing files:

``("row", Measurement)``  a finished row (only the driver writes the log);
``("total", n)`` / ``("advance", n)``  progress-bar changes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from gemm.arch import ArchSpec
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.measurement import Measurement
from gemm.tuner.search.plan import SweepPlan, SweepSettings
from gemm.tuner.search.pool_size import cap_workers, evaluation_workers, worker_threads
from gemm.tuner.search.runner import Timeouts
from gemm.tuner.search.space import PointSpace
from gemm.tuner.search.sweep import Progress, Sweep, TimeLimitReached
from gemm.tuner.search.worker import WorkerSettings

UNIT_DONE, UNIT_TIME_LIMIT = "done", "time_limit"


@dataclass(frozen=True)
class Unit:
    """One backend's candidates for one shape (every M), on one device name."""

    device_name: str
    shape: LayerShape
    backend: str

    @property
    def label(self) -> str:
        return f"N={self.shape.n} K={self.shape.k} {self.backend}"


@dataclass(frozen=True)
class UnitTask:
    """Everything a process needs to run one unit, picklable (no open files, no processes).

    ``spaces`` are the unit's point spaces from the device's plan; ``existing``
    the rows already logged for the unit (they are not redone). ``workers`` is
    the number of evaluation processes (0: evaluate in the unit's own process;
    None: the host's CPUs, one left free, shared among its ``gpus_per_host``
    GPUs). ``time_left_s`` is what remains of the sweep's time limit.
    """

    unit: Unit
    settings: SweepSettings
    arch: ArchSpec
    spaces: tuple[PointSpace, ...]
    existing: tuple[Measurement, ...]
    worker: WorkerSettings
    timeouts: Timeouts
    workers: int | None = None
    gpus_per_host: int = 1
    time_left_s: float | None = None
    prebuild: bool = False


class _EmittingLog:
    """What ``Sweep`` sees as its results log: each row goes to the driver instead of a file."""

    def __init__(self, emit: Callable[[str, Any], None]) -> None:
        self._emit = emit

    def append(self, row: Measurement) -> None:
        self._emit("row", row)


class _EmittingProgress(Progress):
    def __init__(self, emit: Callable[[str, Any], None]) -> None:
        self._emit = emit

    def add_total(self, n: int) -> None:
        if n:
            self._emit("total", n)

    def advance(self, n: int = 1) -> None:
        self._emit("advance", n)


def unit_plan(task: UnitTask) -> SweepPlan:
    shape = task.unit.shape
    return SweepPlan(task.settings, task.arch, {(shape.n, shape.k): list(task.spaces)})


def run_unit(task: UnitTask, emit: Callable[[str, Any], None]) -> str:
    """Sweep one unit in this process (and its evaluation workers); returns UNIT_DONE or UNIT_TIME_LIMIT.

    Rows and progress go to ``emit(kind, payload)``. ``CandidateError`` and
    ``WorkerStartError`` propagate, as in a plain sweep.
    """
    import torch

    from gemm.tuner.search.runner import InProcessRunner, WorkerPool

    cpus = os.cpu_count() or 1
    workers = evaluation_workers(task.workers, cpus, task.gpus_per_host, task.settings.interpret)
    if task.workers is None and task.worker.device.startswith("cuda"):
        workers, _ = cap_workers(workers, [task.unit.shape], max(task.settings.m_grid), task.settings.out_dtype)
    threads = worker_threads(cpus, task.gpus_per_host, workers)
    if workers == 0 and threads is not None:
        torch.set_num_threads(threads)  # this process evaluates; it shares the host with the other GPUs' ones
    worker = dataclasses.replace(task.worker, threads=threads if workers > 0 else None)
    plan = unit_plan(task)
    if task.prebuild:
        from gemm.tuner.search.prebuild import needs_prebuild, prebuild_kernels

        if needs_prebuild(plan):
            prebuild_kernels(plan, lambda text: print(text, file=sys.stderr, flush=True))
    deadline = None if task.time_left_s is None else time.monotonic() + task.time_left_s
    runner = WorkerPool(workers, worker, task.timeouts) if workers > 0 else InProcessRunner(worker)
    with runner:
        sweep = Sweep(plan, _EmittingLog(emit), runner, task.existing, _EmittingProgress(emit), deadline)
        try:
            sweep.run()
        except TimeLimitReached:
            return UNIT_TIME_LIMIT
    return UNIT_DONE
