"""Tuning on several GPUs: the driver's scheduler of (shape, backend) units.

The unit of work is one (shape, backend) with every M of the grid, for one
device name: a GPU that takes it compiles each of the unit's kernels once and
reuses it across M, and runs it alone, so timing never shares a GPU with
other work. ``gemm.tuner.distributed.unit.run_unit`` runs a unit wherever it lands
and streams its rows and progress back as events (``row``, ``total``,
``advance``).

The driver's ``Scheduler`` keeps one queue of units per device name and hands
them to idle *slots* (one per GPU) of an executor (``gemm.tuner.distributed.local``
for one machine, ``gemm.tuner.distributed.ray_cluster`` for a cluster). Executors report
``Event``s: the unit events above, ``finished`` (payload "done" or
"time_limit"), ``lost`` (the slot's worker died: its unit goes back on the
queue, preferring another slot, and resumes from the rows already logged)
and ``error`` (an unexpected exception: everything stops). A unit lost
``MAX_UNIT_LOSSES`` times stops the sweep too: it is taking its workers down.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from gemm.tuner.distributed.unit import UNIT_TIME_LIMIT, Unit, UnitTask
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.log import ResultsLog
from gemm.tuner.results.measurement import Measurement
from gemm.tuner.search.plan import SweepPlan, SweepSettings
from gemm.tuner.search.runner import SweepError
from gemm.tuner.search.space import PointSpace
from gemm.tuner.search.sweep import Progress, Sweep, TimeLimitReached

MAX_UNIT_LOSSES = 3


class DistributedError(SweepError):
    """The distributed sweep cannot go on (an unexpected error, or a unit that keeps killing its workers)."""


# --------------------------------------------------------------------------- the driver side


@dataclass(frozen=True)
class Slot:
    """One GPU (or, with ``--interpret``, one simulated GPU) that runs one unit at a time."""

    id: str
    device_name: str


@dataclass(frozen=True)
class Event:
    """Something an executor's slot reported: see the module docstring for the kinds."""

    slot: str
    kind: str
    payload: Any = None


class Executor(Protocol):
    def slots(self) -> list[Slot]:
        """The slots that can take work now (a slot whose machine is gone is no longer listed)."""

    def start(self, slot: str, task: UnitTask) -> None:
        """Begin ``task`` on an idle slot."""

    def poll(self, timeout: float) -> list[Event]:
        """Events since the last poll, waiting up to ``timeout`` seconds for the first."""

    def close(self) -> None:
        """Stop every worker (killing busy ones)."""


@dataclass
class DeviceRun:
    """One device name's sweep as the driver keeps it: its plan, its log and every row logged."""

    device_name: str
    plan: SweepPlan
    log: ResultsLog
    rows: dict[tuple, Measurement] = field(default_factory=dict)

    def record(self, row: Measurement) -> bool:
        """Append a streamed row to the log unless it is there already (a resent row); True if new."""
        if row.key in self.rows:
            return False
        self.rows[row.key] = row
        self.log.append(row)
        return True

    def units(self) -> list[Unit]:
        return [Unit(self.device_name, shape, backend)
                for shape in self.plan.settings.shapes for backend in self.plan.settings.backends]

    def unit_rows(self, unit: Unit) -> tuple[Measurement, ...]:
        n, k = unit.shape.n, unit.shape.k
        return tuple(r for r in self.rows.values() if r.n == n and r.k == k and r.backend == unit.backend)

    def shape_rows(self, shape: LayerShape) -> list[Measurement]:
        return [r for r in self.rows.values() if r.n == shape.n and r.k == shape.k]

    def unit_spaces(self, unit: Unit) -> tuple[PointSpace, ...]:
        return tuple(s for s in self.plan.spaces[(unit.shape.n, unit.shape.k)] if s.backend == unit.backend)

    def unit_settings(self, unit: Unit) -> SweepSettings:
        return dataclasses.replace(self.plan.settings, shapes=(unit.shape,), backends=(unit.backend,))

    def estimate(self, unit: Unit) -> int:
        """Runs the unit still needs, as its own sweep will count them."""
        sub = SweepPlan(self.unit_settings(unit), self.plan.arch,
                        {(unit.shape.n, unit.shape.k): list(self.unit_spaces(unit))})
        return Sweep(sub, self.log, None, self.unit_rows(unit)).estimate_work()


@dataclass
class _InFlight:
    """A dispatched unit's share of the progress bar: its queued estimate stands until its own sweep
    reports a total (so the bar's total does not dip meanwhile), then what it reports."""

    unit: Unit
    placeholder: int
    total: int = 0
    advanced: int = 0


TaskFactory = Callable[[DeviceRun, Unit, float | None], UnitTask]
ShapeDone = Callable[[DeviceRun, LayerShape], None]


class Scheduler:
    """Hands units to slots, streams their rows into each device's log, requeues lost units.

    ``make_task(run, unit, time_left_s)`` builds what a slot runs;
    ``on_shape_done(run, shape)`` is called once every backend of a shape has
    finished on that device (the place to write its config file);
    ``say`` prints a line for people.
    """

    def __init__(self, runs: Iterable[DeviceRun], executor: Executor, make_task: TaskFactory,
                 progress: Progress | None = None, deadline: float | None = None,
                 on_shape_done: ShapeDone | None = None, say: Callable[[str], None] = lambda text: None,
                 max_unit_losses: int = MAX_UNIT_LOSSES) -> None:
        self.runs = {run.device_name: run for run in runs}
        self.executor = executor
        self.make_task = make_task
        self.progress = progress or Progress()
        self.deadline = deadline
        self.on_shape_done = on_shape_done
        self.say = say
        self.max_unit_losses = max_unit_losses
        self.queues: dict[str, collections.deque[Unit]] = {name: collections.deque() for name in self.runs}
        self.in_flight: dict[str, _InFlight] = {}
        self.losses: collections.Counter[Unit] = collections.Counter()
        self.avoid: dict[Unit, set[str]] = collections.defaultdict(set)
        self.finished_on: dict[Unit, str] = {}
        self.lost = 0
        self._queued_estimate: dict[Unit, int] = {}
        self._pending: dict[tuple[str, int, int], set[str]] = {}
        self._stopping = False

    # ------------------------------------------------------------------ queue

    def _enqueue(self, unit: Unit, front: bool = False) -> None:
        estimate = self.runs[unit.device_name].estimate(unit)
        self._queued_estimate[unit] = estimate
        self.progress.add_total(estimate)
        queue = self.queues[unit.device_name]
        queue.appendleft(unit) if front else queue.append(unit)

    def _plan_queues(self) -> None:
        for run in self.runs.values():
            units = run.units()
            for unit in units:
                self._pending.setdefault((unit.device_name, unit.shape.n, unit.shape.k), set()).add(unit.backend)
            # Longest first, so the last units to finish are short ones and no GPU idles long at the end.
            for unit in sorted(units, key=run.estimate, reverse=True):
                self._enqueue(unit)

    def _time_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _pick(self, slot: Slot, live: list[Slot]) -> Unit | None:
        queue = self.queues.get(slot.device_name)
        if not queue:
            return None
        peers = {s.id for s in live if s.device_name == slot.device_name}
        for unit in queue:
            # A lost unit prefers a slot it has not died on; where every live slot has lost it, any will do.
            if slot.id not in self.avoid[unit] or peers <= self.avoid[unit]:
                queue.remove(unit)
                return unit
        return None

    def _dispatch(self) -> None:
        if self._stopping:
            return
        live = self.executor.slots()
        for slot in live:
            if slot.id in self.in_flight:
                continue
            unit = self._pick(slot, live)
            if unit is None:
                continue
            run = self.runs[unit.device_name]
            self.in_flight[slot.id] = _InFlight(unit, self._queued_estimate.pop(unit))
            self.executor.start(slot.id, self.make_task(run, unit, self._time_left()))

    # ------------------------------------------------------------------ events

    def _handle(self, event: Event) -> None:
        state = self.in_flight.get(event.slot)
        if event.kind == "error":
            where = f" while tuning {state.unit.label}" if state else ""
            raise DistributedError(f"{event.slot}{where}: {event.payload}")
        if state is None:
            return  # a late event from a unit already given up on
        if event.kind == "row":
            self.runs[state.unit.device_name].record(event.payload)
        elif event.kind == "total":
            state.total += event.payload
            self.progress.add_total(event.payload - state.placeholder)  # the unit's own count replaces it
            state.placeholder = 0
        elif event.kind == "advance":
            state.advanced += event.payload
            self.progress.advance(event.payload)
        elif event.kind == "finished":
            self._finished(event.slot, state, event.payload)
        elif event.kind == "lost":
            self._lost(event.slot, state, str(event.payload))
        else:
            raise DistributedError(f"unexpected event from {event.slot}: {event!r}")

    def _close_books(self, slot: str, state: _InFlight) -> None:
        del self.in_flight[slot]
        # What this run of the unit left undone leaves the bar (a requeue adds a fresh estimate).
        self.progress.add_total(-(state.placeholder + state.total - state.advanced))

    def _finished(self, slot: str, state: _InFlight, outcome: str) -> None:
        self._close_books(slot, state)
        unit = state.unit
        if outcome == UNIT_TIME_LIMIT:
            self._stopping = True
            self._enqueue(unit, front=True)
            return
        self.finished_on[unit] = slot
        if self.losses[unit]:
            self.say(f"gemm tune: {unit.label} finished on {slot} after {self.losses[unit]} lost worker(s)")
        pending = self._pending[(unit.device_name, unit.shape.n, unit.shape.k)]
        pending.discard(unit.backend)
        if not pending and self.on_shape_done is not None:
            self.on_shape_done(self.runs[unit.device_name], unit.shape)

    def _lost(self, slot: str, state: _InFlight, message: str) -> None:
        self._close_books(slot, state)
        unit = state.unit
        self.lost += 1
        self.losses[unit] += 1
        self.avoid[unit].add(slot)
        if self.losses[unit] >= self.max_unit_losses:
            raise DistributedError(
                f"{unit.label} on {unit.device_name} lost its worker {self.losses[unit]} times (last on {slot}: "
                f"{message}); a candidate may be taking its process down: run with --workers >= 1 so each "
                f"candidate runs in a process of its own")
        self.say(f"gemm tune: {slot} lost its worker while tuning {unit.label} ({message}); "
                 f"the unit goes back on the queue and resumes from its logged rows")
        self._enqueue(unit, front=True)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Run every unit; raises TimeLimitReached when the deadline stopped the sweep, DistributedError
        when it cannot go on."""
        self._plan_queues()
        total_units = sum(len(q) for q in self.queues.values())
        while any(self.queues.values()) or self.in_flight:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self._stopping = True
            self._dispatch()
            if not self.in_flight:
                if self._stopping:
                    break
                stranded = [name for name, q in self.queues.items() if q]
                raise DistributedError(f"no GPU is left to run the remaining units of {', '.join(stranded)}")
            self.progress.note(f"{len(self.finished_on)}/{total_units} units")
            timeout = 1.0 if self.deadline is None else min(1.0, max(0.05, self.deadline - time.monotonic()))
            for event in self.executor.poll(timeout):
                self._handle(event)
        if self._stopping and any(self.queues.values()):
            raise TimeLimitReached("the sweep reached its time limit")
