"""Running evaluation jobs in worker processes that may hang or die.

A *job* is a list of Items one worker evaluates in order (so it reuses the
shape's inputs and, across M, the compiled kernel). ``WorkerPool.run``
keeps every worker busy, and when one misbehaves the sweep goes on:

* no answer in time (``Timeouts.build_s`` until the kernel is built,
  ``Timeouts.run_s`` from then on) -> the worker is killed, the item is
  recorded as TIMEOUT;
* the worker process dies (segfault, abort, ``os._exit``) -> LAUNCH_FAILED;
* the worker reports a broken CUDA context -> its result stands and it is
  replaced.

In each case a fresh worker takes the job's remaining items. An exception off
the allow-list (``gemm.tuner.worker.classify``) stops everything and is raised
here as ``CandidateError`` naming the candidate. ``InProcessRunner`` offers the
same interface without processes (no isolation, no timeouts), for debugging.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Callable, Sequence

from gemm.tuner.results.measurement import Measurement, Status
from gemm.tuner.search.worker import Evaluator, Item, Outcome, WorkerSettings, worker_main

ResultCallback = Callable[[Item, Measurement], None]
SkipCallback = Callable[[Item], "Measurement | None"]


class SweepError(RuntimeError):
    """The sweep cannot go on; the rows logged so far stay, and a fixed rerun with ``--resume`` continues."""


class WorkerStartError(SweepError):
    """A worker process died or hung before it was ready: the environment is broken, not a candidate."""


class CandidateError(SweepError):
    """Evaluating a candidate raised an exception that is not an expected failure (a bug to fix)."""

    def __init__(self, item: Item, detail: str) -> None:
        p = item.problem
        super().__init__(f"{item.backend} {item.params_json} at N={p.n} K={p.k} M={p.m} "
                         f"({item.stage.value}) raised an unexpected error:\n{detail}")
        self.item = item


@dataclass(frozen=True)
class Timeouts:
    """Seconds a worker may take to build a kernel, and to run it once built.

    The run budget includes Triton's JIT compile, which happens on a kernel's
    first launch; the build budget covers nvcc builds and a new worker's start.
    """

    build_s: float = 900.0
    run_s: float = 120.0

    def __post_init__(self) -> None:
        if self.build_s <= 0 or self.run_s <= 0:
            raise ValueError(f"timeouts must be positive, got build_s={self.build_s}, run_s={self.run_s}")


class _Slot:
    """One worker process and the job it is working on."""

    def __init__(self) -> None:
        self.process = None
        self.conn = None
        self.job_id: int | None = None
        self.items: list[Item] = []
        self.index = 0
        self.deadline = 0.0
        self.phase = "building"
        self.ready = False

    @property
    def busy(self) -> bool:
        return self.job_id is not None

    @property
    def current(self) -> Item:
        return self.items[self.index]


class WorkerPool:
    """``size`` spawned worker processes sharing a queue of jobs (see the module docstring)."""

    def __init__(self, size: int, settings: WorkerSettings, timeouts: Timeouts = Timeouts()) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got size={size}")
        self.settings = settings
        self.timeouts = timeouts
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot() for _ in range(size)]
        self._job_ids = itertools.count()

    # ------------------------------------------------------------------ process management

    def _start(self, slot: _Slot) -> None:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(target=worker_main, args=(child_conn, self.settings), daemon=True,
                                        name="gemm-tune-worker")
        process.start()
        child_conn.close()  # only the child holds its end: its death then reads as EOF here
        slot.process, slot.conn, slot.ready = process, parent_conn, False

    def _stop(self, slot: _Slot, kill: bool) -> int | None:
        """End the slot's process; returns its exit code."""
        process, conn = slot.process, slot.conn
        slot.process = slot.conn = None
        if process is None:
            return None
        if kill:
            process.kill()
        else:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        process.join(timeout=30 if kill else 10)
        if process.is_alive():
            process.kill()
            process.join(timeout=30)
        conn.close()
        return process.exitcode

    def _replace(self, slot: _Slot, kill: bool) -> int | None:
        code = self._stop(slot, kill)
        self.restarts += 1
        return code

    def close(self) -> None:
        for slot in self._slots:
            self._stop(slot, kill=False)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ scheduling

    def run(self, jobs: Sequence[Sequence[Item]], on_result: ResultCallback, skip: SkipCallback | None = None) -> None:
        """Evaluate every item of ``jobs``, calling ``on_result`` once per item, in completion order.

        ``skip(item)`` may return a measurement to record instead of running
        the item (it is asked when the item is about to be sent to a worker,
        e.g. to stop retrying a candidate that already hung at another M).
        """
        queue = collections.deque(list(job) for job in jobs if job)
        try:
            while queue or any(slot.busy for slot in self._slots):
                self._dispatch(queue, on_result, skip)
                busy = [slot for slot in self._slots if slot.busy]
                if not busy:
                    continue
                timeout = max(0.0, min(slot.deadline for slot in busy) - time.monotonic())
                waitables = [slot.conn for slot in busy] + [slot.process.sentinel for slot in busy]
                wait(waitables, timeout=timeout)
                for slot in busy:
                    self._service(slot, queue, on_result)
        except BaseException:
            for slot in self._slots:  # a job half-done in a worker must not leak into the next run
                if slot.busy:
                    self._stop(slot, kill=True)
                    slot.job_id = None
            raise

    def _dispatch(self, queue, on_result: ResultCallback, skip: SkipCallback | None) -> None:
        for slot in self._slots:
            while not slot.busy and queue:
                items = queue.popleft()
                if skip is not None:
                    kept = []
                    for item in items:
                        instead = skip(item)
                        if instead is None:
                            kept.append(item)
                        else:
                            on_result(item, instead)
                    items = kept
                if not items:
                    continue
                if slot.process is None:
                    self._start(slot)
                slot.job_id, slot.items, slot.index = next(self._job_ids), items, 0
                slot.phase, slot.deadline = "building", time.monotonic() + self.timeouts.build_s
                slot.conn.send((slot.job_id, items))

    def _service(self, slot: _Slot, queue, on_result: ResultCallback) -> None:
        """Handle what one busy worker said or did since the last look."""
        while slot.busy:
            try:
                if not slot.conn.poll():
                    break
                message = slot.conn.recv()
            except (EOFError, OSError):
                self._lost(slot, queue, on_result, Status.LAUNCH_FAILED, None)
                return
            self._handle(slot, message, queue, on_result)
        if not slot.busy:
            return
        if not slot.process.is_alive() and not slot.conn.poll():
            self._lost(slot, queue, on_result, Status.LAUNCH_FAILED, None)
        elif time.monotonic() >= slot.deadline:
            self._lost(slot, queue, on_result, Status.TIMEOUT, slot.phase)

    def _handle(self, slot: _Slot, message: tuple, queue, on_result: ResultCallback) -> None:
        kind, job_id = message[0], message[1]
        if kind == "ready":
            slot.ready = True
            return
        if job_id != slot.job_id:
            return  # a late message from a job already given up on
        if kind == "built":
            slot.phase, slot.deadline = "running", time.monotonic() + self.timeouts.run_s
        elif kind == "result":
            outcome: Outcome = message[3]
            item = slot.items[message[2]]
            slot.index = message[2] + 1
            slot.phase, slot.deadline = "building", time.monotonic() + self.timeouts.build_s
            on_result(item, outcome.measurement)
            if outcome.restart:
                self._replace(slot, kill=False)
                self._requeue_rest(slot, queue)
        elif kind == "done":
            slot.job_id, slot.items = None, []
        elif kind == "error":
            item = slot.items[message[2]]
            raise CandidateError(item, message[3])
        else:
            raise RuntimeError(f"unexpected message from a tuning worker: {message!r}")

    def _requeue_rest(self, slot: _Slot, queue) -> None:
        rest = slot.items[slot.index:]
        slot.job_id, slot.items, slot.index = None, [], 0
        if rest:
            queue.appendleft(rest)

    def _lost(self, slot: _Slot, queue, on_result: ResultCallback, status: Status, phase: str | None) -> None:
        """The worker hung or died on its current item: record it, replace the worker, requeue the rest."""
        item = slot.current
        ready = slot.ready
        code = self._replace(slot, kill=True)
        if not ready:
            raise WorkerStartError(
                f"a tuning worker {'died' if status != Status.TIMEOUT else 'hung'} before it was ready "
                f"(exit code {code}); see its error output above. If this is a script run with spawned "
                f"workers, guard its entry point with `if __name__ == '__main__':`")
        if status == Status.TIMEOUT:
            limit = self.timeouts.build_s if phase == "building" else self.timeouts.run_s
            message = f"no result within {limit:g} s while {phase}; the worker was killed and replaced"
        else:
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            message = f"the worker process died ({how}) while evaluating this candidate; it was replaced"
        slot.index += 1
        on_result(item, item.row(status, message))
        self._requeue_rest(slot, queue)


class InProcessRunner:
    """``WorkerPool``'s interface, evaluating in this process: no isolation and no timeouts."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.restarts = 0
        self._evaluator = Evaluator(settings)

    def run(self, jobs: Sequence[Sequence[Item]], on_result: ResultCallback, skip: SkipCallback | None = None) -> None:
        for job in jobs:
            for item in job:
                instead = skip(item) if skip is not None else None
                if instead is not None:
                    on_result(item, instead)
                    continue
                try:
                    outcome = self._evaluator.run(item)
                except Exception as exc:  # noqa: BLE001 -- re-raised with the candidate attached
                    import traceback

                    raise CandidateError(item, traceback.format_exc()) from exc
                on_result(item, outcome.measurement)
                if outcome.restart:
                    self.restarts += 1
                    self._evaluator = Evaluator(self.settings)

    def close(self) -> None:
        pass

    def __enter__(self) -> "InProcessRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
