"""The sweep's stages, resume after an interruption, time limits and the hung-candidate policy (in-process)."""

from __future__ import annotations

import collections

import pytest

from gemm.arch import interpreter_arch
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.log import Fingerprint, ResultsLog, read_log
from gemm.tuner.results.measurement import Stage, Status
from gemm.tuner.results.select import select
from gemm.tuner.search.plan import SweepPlan, SweepSettings
from gemm.tuner.search.runner import InProcessRunner
from gemm.tuner.search.space import PruneSettings
from gemm.tuner.search.sweep import Sweep, TimeLimitReached
from gemm.tuner.search.worker import WorkerSettings

GOOD = "fake_backends:GoodBackend"
MIXED = "fake_backends:SafeMixedBackend"
WORKER = WorkerSettings(device="cpu", timer="fake_backends:FakeTimer", seed=11)


def _settings(backends=(GOOD, MIXED), m_grid=(1, 4, 16), **changes) -> SweepSettings:
    values = dict(shapes=(LayerShape("a", 128, 256), LayerShape("b", 64, 128)), m_grid=m_grid, backends=backends,
                  timer="fake_backends:FakeTimer", prune=PruneSettings(budget=None), keep=2, screen_margin=1.5,
                  screen_reps=2, final_reps=3)
    values.update(changes)
    return SweepSettings(**values)


def _open_log(path, plan) -> ResultsLog:
    return ResultsLog.create(path, _fingerprint(plan))


def _fingerprint(plan) -> Fingerprint:
    return Fingerprint("CPU_interpreter", "CPU-interpreter", "t", "t", None, "0", plan.hash, (128, 128), "bfloat16")


class CountingRunner(InProcessRunner):
    """In-process runner that counts evaluations per stage and can stop (like a kill) after ``stop_after``."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__(WORKER)
        self.stop_after = stop_after
        self.calls = collections.Counter()

    def run(self, jobs, on_result, skip=None):
        def counted(item, row):
            if self.stop_after is not None and sum(self.calls.values()) >= self.stop_after:
                raise KeyboardInterrupt
            self.calls[item.stage] += 1
            on_result(item, row)

        super().run(jobs, counted, skip)


def _sweep(tmp_path, settings, runner=None, name="log.jsonl"):
    plan = SweepPlan.build(settings, interpreter_arch())
    log = _open_log(tmp_path / name, plan)
    sweep = Sweep(plan, log, runner or CountingRunner())
    with log:
        rows = sweep.run()
    return plan, rows


def test_every_candidate_gets_its_stage_rows(tmp_path):
    shapes_done = []
    settings = _settings()
    plan = SweepPlan.build(settings, interpreter_arch())
    with _open_log(tmp_path / "log.jsonl", plan) as log:
        Sweep(plan, log, CountingRunner(), on_shape_done=lambda s, rows: shapes_done.append((s.n, len(rows)))).run()
    _, rows = read_log(tmp_path / "log.jsonl")
    assert [n for n, _ in shapes_done] == [128, 64] and all(count > 0 for _, count in shapes_done)
    by = collections.defaultdict(set)
    for row in rows:
        by[(row.backend, row.params.get("behaviour"), row.params.get("variant"))].add((row.stage, row.status))
    assert by[(MIXED, "invalid", 0)] == {(Stage.SPACE, Status.INVALID)}
    assert by[(MIXED, "compile_fail", 0)] == {(Stage.VERIFY, Status.COMPILE_FAILED)}
    assert by[(MIXED, "launch_fail", 0)] == {(Stage.VERIFY, Status.LAUNCH_FAILED)}
    assert by[(MIXED, "wrong", 0)] == {(Stage.VERIFY, Status.WRONG_RESULT)}
    assert by[(MIXED, "nan", 0)] == {(Stage.VERIFY, Status.WRONG_RESULT)}
    assert by[(MIXED, "ok", 0)] == {(Stage.SCREEN, Status.OK), (Stage.FINAL, Status.OK)}
    # GoodBackend: variants 2 (1 us) and 0 (2 us) are the two finalists (keep=2); the rest stop at screening.
    assert by[(GOOD, "ok", 2)] == by[(GOOD, "ok", 0)] == {(Stage.SCREEN, Status.OK), (Stage.FINAL, Status.OK)}
    for variant in (1, 3, 4):
        assert by[(GOOD, "ok", variant)] == {(Stage.SCREEN, Status.OK)}
    # One row per candidate, point and stage; 2 shapes x 3 M.
    assert len({r.key for r in rows}) == len(rows)
    assert {(r.n, r.m) for r in rows} == {(n, m) for n in (128, 64) for m in (1, 4, 16)}
    ok_rows = [r for r in rows if r.status == Status.OK]
    assert all(r.rel_error is not None and r.rel_error < 1e-2 for r in ok_rows)
    choices = select(rows)
    assert set(choices) == {(128, 256), (64, 128)}
    for per_m in choices.values():
        assert all(c.backend == GOOD and c.params["variant"] == 2 and c.us == 1.0 for c in per_m.values())


def test_screen_margin_and_keep_limit_finalists(tmp_path):
    _, rows = _sweep(tmp_path, _settings(backends=(GOOD,), keep=3, screen_margin=0.6))
    finals = {r.params["variant"] for r in rows if r.stage == Stage.FINAL}
    assert finals == {2}  # 1 us best; 2 us is beyond 1.6 us


def test_exhaustive_times_every_verified_candidate(tmp_path):
    _, rows = _sweep(tmp_path, _settings(backends=(GOOD,), keep=None))
    finals = collections.Counter(r.point for r in rows if r.stage == Stage.FINAL)
    assert set(finals.values()) == {5}


@pytest.mark.parametrize("stop_after", [2, 9, 25, 47, 100])
def test_resume_after_interruption_loses_and_repeats_nothing(tmp_path, stop_after):
    settings = _settings()
    clean_plan, clean_rows = _sweep(tmp_path, settings, name="clean.jsonl")
    clean_runner_calls = sum(1 for r in clean_rows if r.stage in (Stage.SCREEN, Stage.FINAL))

    plan = SweepPlan.build(settings, interpreter_arch())
    path = tmp_path / "killed.jsonl"
    with _open_log(path, plan) as log:
        with pytest.raises(KeyboardInterrupt):
            Sweep(plan, log, CountingRunner(stop_after=stop_after)).run()
    _, before = read_log(path)

    log, existing = ResultsLog.resume(path, _fingerprint(plan))
    runner = CountingRunner()
    with log:
        Sweep(plan, log, runner, existing).run()
    _, after = read_log(path)
    keys = [r.key for r in after]
    assert len(keys) == len(set(keys))  # nothing repeated
    assert set(keys) == {r.key for r in clean_rows}  # nothing lost
    assert {r.key for r in before} <= set(keys)
    timed_before = sum(1 for r in before if r.stage in (Stage.SCREEN, Stage.FINAL))
    # Timing work already logged is not redone.
    assert runner.calls[Stage.SCREEN] + runner.calls[Stage.FINAL] == clean_runner_calls - timed_before
    assert select(after) == select(clean_rows)


def test_time_limit_stops_before_work(tmp_path):
    settings = _settings(backends=(GOOD,))
    plan = SweepPlan.build(settings, interpreter_arch())
    runner = CountingRunner()
    with _open_log(tmp_path / "log.jsonl", plan) as log:
        with pytest.raises(TimeLimitReached):
            Sweep(plan, log, runner, deadline=0.0).run()
    assert sum(runner.calls.values()) == 0


class FakeTimeoutRunner(CountingRunner):
    """Acts like a worker pool on a hanging candidate: its result is TIMEOUT (without waiting)."""

    def run(self, jobs, on_result, skip=None):
        for job in jobs:
            for item in job:
                instead = skip(item) if skip else None
                if instead is not None:
                    on_result(item, instead)
                elif item.params.get("behaviour") == "hang":
                    on_result(item, item.row(Status.TIMEOUT, "no result within 1 s"))
                else:
                    super().run([[item]], on_result)


def test_a_hung_candidate_is_not_retried_at_other_m(tmp_path):
    settings = _settings(backends=("fake_backends:FakeHangBackend",))
    _, rows = _sweep(tmp_path, settings, runner=FakeTimeoutRunner())
    hang = sorted((r.n, r.m, r.message) for r in rows if r.params["behaviour"] == "hang")
    for n in (128, 64):
        ms = [(m, msg) for nn, m, msg in hang if nn == n]
        assert ms[0] == (1, "no result within 1 s")
        assert all(msg.startswith("not run: this candidate timed out at M=1") for _, msg in ms[1:])
        assert [m for m, _ in ms] == [1, 4, 16]
    assert all(r.status == Status.TIMEOUT for r in rows if r.params["behaviour"] == "hang")


def test_plan_hash_tracks_the_search(tmp_path):
    arch = interpreter_arch()
    base = SweepPlan.build(_settings(), arch).hash
    assert SweepPlan.build(_settings(), arch).hash == base
    assert SweepPlan.build(_settings(m_grid=(1, 4)), arch).hash != base
    assert SweepPlan.build(_settings(keep=3), arch).hash != base
    assert SweepPlan.build(_settings(backends=(GOOD,)), arch).hash != base


def test_settings_are_checked():
    with pytest.raises(ValueError, match="m_grid"):
        _settings(m_grid=(0, 4))
    with pytest.raises(ValueError, match="keep"):
        _settings(keep=0)
    with pytest.raises(ValueError, match="backend"):
        _settings(backends=())
