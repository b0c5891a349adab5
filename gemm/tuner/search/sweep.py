"""The sweep: for each shape, verify every kept candidate at every M, screen, then time the best few.

Per shape (N, K):

1. constraint rejections are logged as INVALID rows (stage ``space``);
2. **verify** (parallel, all workers): each candidate is built and checked
   against the reference at every M where it was kept, one job per candidate
   so a worker compiles it once and reuses it across M; failures are logged;
3. per M, **screen** (one worker, so timings do not disturb each other): one
   short cold-L2 timing of every verified candidate;
4. per M, **final**: careful timing of each backend's best ``keep`` screened
   candidates within ``screen_margin`` of that backend's best (plus the best
   plain Triton config, which engine exports fall back to, and the point's
   pinned candidates, e.g. a baseline's entry); the rest stop here -- that is
   the early stop of clearly losing candidates.

Every row is appended to the results log as it arrives. A resumed sweep skips
whatever the log already settles: a candidate with a VERIFY failure or a
SCREEN row is not verified again, one with a SCREEN (FINAL) row is not
screened (timed) again, and finalists are recomputed from the logged screening.
A candidate that timed out at one M of a shape is not retried at its other Ms.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time
from typing import Callable, Iterable

from gemm.configs.engines import is_plain_triton
from gemm.problem import GemmProblem
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.log import ResultsLog
from gemm.tuner.results.measurement import Measurement, Stage, Status
from gemm.tuner.search.plan import SweepPlan
from gemm.tuner.search.space import Candidate, PointSpace
from gemm.tuner.search.worker import Item


class TimeLimitReached(RuntimeError):
    """The sweep stopped at its time limit; the log holds everything finished so far."""


class Progress:
    """What a sweep reports to a progress display; the default shows no progress.

    ``write`` is a line for people (a finished shape, a skipped step): a display prints it beside its
    progress; the default prints it on stderr, so no such line is lost.
    """

    def add_total(self, n: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def _final_candidates(screened: list[Measurement], keep: int | None, margin: float) -> list[tuple[str, str]]:
    """Candidate keys to time carefully at one point, from its OK screening rows."""
    by_backend: dict[str, list[Measurement]] = collections.defaultdict(list)
    for row in screened:
        by_backend[row.backend].append(row)
    chosen: list[tuple[str, str]] = []
    for rows in by_backend.values():
        rows.sort(key=lambda r: (r.us, r.params_key))
        if keep is None:
            chosen += [r.candidate_key for r in rows]
            continue
        limit = rows[0].us * (1 + margin)
        chosen += [r.candidate_key for r in rows[:keep] if r.us <= limit]
    plain = sorted((r for r in screened if is_plain_triton(r.backend, r.params)), key=lambda r: (r.us, r.params_key))
    if plain and plain[0].candidate_key not in chosen:
        chosen.append(plain[0].candidate_key)
    return chosen


class Sweep:
    """Runs a plan through a runner (``WorkerPool`` or ``InProcessRunner``) into a results log."""

    def __init__(self, plan: SweepPlan, log: ResultsLog, runner, existing: Iterable[Measurement] = (),
                 progress: Progress | None = None, deadline: float | None = None,
                 on_shape_done: Callable[[LayerShape, list[Measurement]], None] | None = None) -> None:
        self.plan = plan
        self.log = log
        self.runner = runner
        self.rows: dict[tuple, Measurement] = {row.key: row for row in existing}
        self.progress = progress or Progress()
        self.deadline = deadline
        self.on_shape_done = on_shape_done

    # ------------------------------------------------------------------ bookkeeping

    def _record(self, row: Measurement) -> None:
        if row.key in self.rows:
            return
        self.rows[row.key] = row
        self.log.append(row)

    def _row(self, candidate: Candidate, problem: GemmProblem, stage: Stage) -> Measurement | None:
        return self.rows.get((candidate.backend, candidate.params_json, problem.n, problem.k, problem.m, stage.value))

    def _check_time(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeLimitReached("the sweep reached its time limit")

    def shape_rows(self, n: int, k: int) -> list[Measurement]:
        return [row for row in self.rows.values() if row.n == n and row.k == k]

    # ------------------------------------------------------------------ stages

    def estimate_work(self) -> int:
        """Items the sweep expects to run (verify + screen + final), for a progress bar's total."""
        total = 0
        for spaces in self.plan.spaces.values():
            for space in spaces:
                todo = [c for c in space.candidates if self._row(c, space.problem, Stage.SCREEN) is None
                        and self._row(c, space.problem, Stage.VERIFY) is None]
                total += 2 * len(todo)  # verify, then screen
                total += self._expected_finals(space)
        return total

    def _expected_finals(self, space: PointSpace) -> int:
        if any(self._row(c, space.problem, Stage.FINAL) is not None for c in space.candidates):
            return 0
        keep = self.plan.settings.keep
        return len(space.candidates) if keep is None else min(keep + len(space.pinned), len(space.candidates))

    def run(self) -> list[Measurement]:
        """Sweep every shape; returns every row (the log's earlier ones included)."""
        self.progress.add_total(self.estimate_work())
        for shape in self.plan.settings.shapes:
            self._check_time()
            self.run_shape(shape)
            if self.on_shape_done is not None:
                self.on_shape_done(shape, self.shape_rows(shape.n, shape.k))
        return list(self.rows.values())

    def run_shape(self, shape: LayerShape) -> None:
        spaces = self.plan.spaces[(shape.n, shape.k)]
        m_max = max(self.plan.settings.m_grid)
        self.progress.note(f"N={shape.n} K={shape.k}")
        for space in spaces:
            for candidate, reason in space.rejected:
                self._record(Measurement(candidate.backend, candidate.params, space.problem.n, space.problem.k,
                                         space.problem.m, Stage.SPACE, Status.INVALID, reason))
        hung = {row.candidate_key: row.m for row in self.shape_rows(shape.n, shape.k) if row.status == Status.TIMEOUT}
        verified = self._verify(spaces, m_max, hung)
        by_m: dict[int, list[PointSpace]] = collections.defaultdict(list)
        for space in spaces:
            by_m[space.problem.m].append(space)
        for m in sorted(by_m):
            self._check_time()
            self._time_point(by_m[m], m_max, verified, hung)

    def _skip_hung(self, hung: dict[tuple[str, str], int]):
        def skip(item: Item) -> Measurement | None:
            self._check_time()
            where = hung.get((item.backend, item.params_json))
            if where is None or where == item.problem.m:
                return None
            return item.row(Status.TIMEOUT, f"not run: this candidate timed out at M={where} of this shape")
        return skip

    def _verify(self, spaces: list[PointSpace], m_max: int, hung: dict) -> dict[tuple, Measurement]:
        """Verify every unsettled candidate of the shape; returns the OK rows by (candidate key, M)."""
        per_candidate: dict[tuple[str, str], list[Item]] = {}
        for space in spaces:
            for candidate in space.candidates:
                problem = space.problem
                settled = (self._row(candidate, problem, Stage.SCREEN) is not None
                           or self._row(candidate, problem, Stage.VERIFY) is not None)
                if not settled:
                    item = Item(candidate.backend, candidate.params_json, problem, Stage.VERIFY, m_max)
                    per_candidate.setdefault(candidate.key, []).append(item)
        verified: dict[tuple, Measurement] = {}
        jobs = [sorted(items, key=lambda it: it.problem.m) for items in per_candidate.values()]

        def on_result(item: Item, row: Measurement) -> None:
            self.progress.advance()
            if row.status == Status.OK:
                verified[(row.candidate_key, row.m)] = row
            else:
                self.progress.add_total(-1)  # it will not be screened
                if row.status == Status.TIMEOUT:
                    hung.setdefault(row.candidate_key, row.m)
                self._record(row)

        self.runner.run(jobs, on_result, self._skip_hung(hung))
        return verified

    def _run_stage(self, items: list[Item], hung: dict, predicted: dict, rel_errors: dict) -> None:
        if not items:
            return

        def on_result(item: Item, row: Measurement) -> None:
            self.progress.advance()
            if row.status == Status.TIMEOUT:
                hung.setdefault(row.candidate_key, row.m)
            changes = {}
            if row.rel_error is None and row.candidate_key in rel_errors:
                changes["rel_error"] = rel_errors[row.candidate_key]
            if row.candidate_key in predicted:
                changes["predicted_us"] = predicted[row.candidate_key]
            if changes:
                row = dataclasses.replace(row, **changes)
            self._record(row)

        self.runner.run([items], on_result, self._skip_hung(hung))

    def _time_point(self, spaces: list[PointSpace], m_max: int, verified: dict, hung: dict) -> None:
        settings = self.plan.settings
        problem = spaces[0].problem
        predicted = {(s.backend, pj): us for s in spaces for pj, us in s.predicted.items()}
        rel_errors = {key: row.rel_error for (key, m), row in verified.items() if m == problem.m}
        candidates = [c for s in spaces for c in s.candidates]
        screen = [Item(c.backend, c.params_json, problem, Stage.SCREEN, m_max, settings.screen_reps)
                  for c in candidates
                  if (c.key, problem.m) in verified and self._row(c, problem, Stage.SCREEN) is None]
        self._run_stage(screen, hung, predicted, rel_errors)
        screened = [row for c in candidates
                    if (row := self._row(c, problem, Stage.SCREEN)) is not None and row.status == Status.OK]
        finalists = _final_candidates(screened, settings.keep, settings.screen_margin)
        screened_keys = {row.candidate_key for row in screened}
        finalists += [c.key for s in spaces for c in s.pinned if c.key in screened_keys and c.key not in finalists]
        expected = sum(self._expected_finals(s) for s in spaces)
        final = [Item(backend, params_json, problem, Stage.FINAL, m_max, settings.final_reps)
                 for backend, params_json in finalists
                 if self._row(Candidate(backend, params_json), problem, Stage.FINAL) is None]
        self.progress.add_total(len(final) - expected)
        self._run_stage(final, hung, predicted, rel_errors)
