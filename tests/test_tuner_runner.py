"""The worker pool and the evaluator: statuses from failing candidates, timeouts, restarts, verification."""

from __future__ import annotations

import math

import pytest
import torch

from gemm.problem import GemmProblem
from gemm.tuner.results.measurement import Stage, Status, canonical_params
from gemm.tuner.search.runner import CandidateError, InProcessRunner, Timeouts, WorkerPool, WorkerStartError
from gemm.tuner.search.worker import Evaluator, Item, WorkerSettings, check_output, classify

FAKE_TIMER = "fake_backends:FakeTimer"
PROBLEM = GemmProblem(4, 128, 256)


def _item(backend: str, behaviour: str, stage=Stage.VERIFY, problem=PROBLEM, us=5.0) -> Item:
    params = canonical_params({"behaviour": behaviour, "us": us, "variant": 0})
    return Item(backend, params, problem, stage, m_max=16, reps=3)


def _collect(runner, jobs):
    results = []
    runner.run(jobs, lambda item, row: results.append((item, row)))
    return results


def test_pool_turns_failures_into_statuses_and_survives_hangs_and_crashes():
    behaviours = ["ok", "compile_fail", "launch_fail", "wrong", "nan", "hang", "ok", "crash", "cuda_error", "ok"]
    expected = {"ok": Status.OK, "compile_fail": Status.COMPILE_FAILED, "launch_fail": Status.LAUNCH_FAILED,
                "wrong": Status.WRONG_RESULT, "nan": Status.WRONG_RESULT, "hang": Status.TIMEOUT,
                "crash": Status.LAUNCH_FAILED, "cuda_error": Status.LAUNCH_FAILED}
    # One job: items after the hang and the crash must still be evaluated, by replacement workers.
    job = [_item("fake_backends:MixedBackend", b, us=float(i)) for i, b in enumerate(behaviours)]
    settings = WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=1)
    with WorkerPool(1, settings, Timeouts(build_s=120, run_s=4)) as pool:
        results = _collect(pool, [job])
        assert pool.restarts == 3  # hang (killed), crash (died), CUDA error (asked to be replaced)
    assert len(results) == len(behaviours)
    by_behaviour = {}
    for item, row in results:
        by_behaviour.setdefault(item.params["behaviour"], []).append(row)
    for behaviour, rows in by_behaviour.items():
        assert {r.status for r in rows} == {expected[behaviour]}, (behaviour, rows)
    (hang,) = by_behaviour["hang"]
    assert "no result within 4 s" in hang.message
    (crash,) = by_behaviour["crash"]
    assert "died" in crash.message and "signal 11" in crash.message
    (cuda,) = by_behaviour["cuda_error"]
    assert "illegal memory access" in cuda.message
    assert all(r.rel_error is not None and r.rel_error < 1e-2 for r in by_behaviour["ok"])
    assert "relative error" in by_behaviour["wrong"][0].message


def test_pool_spreads_jobs_over_workers_and_times_in_order():
    settings = WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=2)
    jobs = [[_item("fake_backends:GoodBackend", "ok", Stage.SCREEN, GemmProblem(m, 128, 256), us=float(m))
             for m in (1, 2)] for _ in range(3)]
    with WorkerPool(2, settings, Timeouts(build_s=120, run_s=30)) as pool:
        results = _collect(pool, jobs)
        assert pool.restarts == 0
    assert len(results) == 6
    for item, row in results:
        assert row.status == Status.OK and row.stage == Stage.SCREEN
        assert row.us == float(item.problem.m)
        assert math.isclose(row.tflops, item.problem.flops / (row.us * 1e-6) / 1e12)


def test_unexpected_exception_stops_the_pool_with_the_candidate_named():
    settings = WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=3)
    job = [_item("fake_backends:UnexpectedBackend", "ok"), _item("fake_backends:UnexpectedBackend", "unexpected")]
    with WorkerPool(1, settings, Timeouts(build_s=120, run_s=30)) as pool:
        with pytest.raises(CandidateError) as info:
            _collect(pool, [job])
    assert "unexpected" in str(info.value) and "KeyError" in str(info.value)
    assert info.value.item.params["behaviour"] == "unexpected"


def test_in_process_runner_matches_statuses_and_raises_unexpected():
    runner = InProcessRunner(WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=4))
    job = [_item("fake_backends:MixedBackend", b) for b in ("ok", "compile_fail", "launch_fail", "bad_row")]
    statuses = [row.status for _, row in _collect(runner, [job])]
    assert statuses == [Status.OK, Status.COMPILE_FAILED, Status.LAUNCH_FAILED, Status.WRONG_RESULT]
    with pytest.raises(CandidateError, match="KeyError"):
        _collect(runner, [[_item("fake_backends:UnexpectedBackend", "unexpected")]])


def test_skip_callback_replaces_items():
    runner = InProcessRunner(WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=5))
    job = [_item("fake_backends:GoodBackend", "ok", problem=GemmProblem(m, 128, 256)) for m in (1, 2, 4)]
    results = []
    runner.run([job], lambda item, row: results.append(row),
               skip=lambda item: item.row(Status.TIMEOUT, "skipped") if item.problem.m == 2 else None)
    assert [(r.m, r.status) for r in results] == [(1, Status.OK), (2, Status.TIMEOUT), (4, Status.OK)]


def test_timing_stage_checks_the_timed_output():
    evaluator = Evaluator(WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=6))
    good = evaluator.run(_item("fake_backends:MixedBackend", "ok", Stage.FINAL)).measurement
    assert good.status == Status.OK and good.us == 5.0 and good.reps == 3
    wrong = evaluator.run(_item("fake_backends:MixedBackend", "wrong", Stage.FINAL)).measurement
    assert wrong.status == Status.WRONG_RESULT and wrong.us is None and "timed run" in wrong.message


def test_running_out_of_memory_is_retried_before_it_counts_against_the_candidate(monkeypatch):
    from gemm.tuner.search import worker

    monkeypatch.setattr(worker, "OOM_PAUSE_S", 0.0)
    released = []
    evaluator = Evaluator(WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=9))
    evaluator.point_data(PROBLEM, 16)  # the shape's inputs are drawn (and memory released) before counting
    monkeypatch.setattr(evaluator, "release_gpu_memory", lambda: released.append(True))
    once = evaluator.run(_item("fake_backends:OutOfMemoryBackend", "oom_once", us=1.0))
    assert once.measurement.status == Status.OK and not once.out_of_memory
    assert released == [True]  # one retry, after the cached memory was given back
    always = evaluator.run(_item("fake_backends:OutOfMemoryBackend", "oom", us=2.0))
    assert always.measurement.status == Status.LAUNCH_FAILED and always.out_of_memory and not always.restart
    assert f"out of GPU memory after {worker.OOM_TRIES} tries" in always.measurement.message
    assert len(released) == 1 + worker.OOM_TRIES - 1
    wrapped = evaluator.run(_item("fake_backends:OutOfMemoryBackend", "oom_wrapped", us=3.0))
    assert wrapped.out_of_memory and wrapped.measurement.status == Status.LAUNCH_FAILED


def test_inputs_are_shared_across_m_and_fresh_per_seed():
    first = Evaluator(WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=7))
    (a4, b4, s4, _), ref4 = first.point_data(GemmProblem(4, 128, 256), 16)
    (a16, b16, s16, _), ref16 = first.point_data(GemmProblem(16, 128, 256), 16)
    assert torch.equal(a4.float(), a16[:4].float()) and torch.equal(ref4, ref16[:4])
    assert a16.float().abs().sum() > 0 and len(set(s16.flatten().tolist())) > 1  # not zeros, scales differ
    other = Evaluator(WorkerSettings(device="cpu", timer=FAKE_TIMER, seed=8))
    (a_other, *_), _ = other.point_data(GemmProblem(4, 128, 256), 16)
    assert not torch.equal(a4.float(), a_other.float())


def test_check_output_catches_a_wrong_row_the_global_error_misses():
    torch.manual_seed(0)
    ref = torch.randn(4096, 16)
    problem = GemmProblem(4096, 16, 128)
    out = ref.clone()
    out[17] *= 1.5  # one row off by 50%: the whole-matrix error is about 0.5 / 64
    err, problem_text = check_output(out.to(torch.bfloat16), ref, problem)
    assert err < 1e-2 and problem_text is not None and "row or column" in problem_text
    err, problem_text = check_output(ref.to(torch.bfloat16), ref, problem)
    assert problem_text is None and err < 1e-2


@pytest.mark.parametrize("out, expected", [
    (torch.full((4, 128), float("nan")), "NaN"),
    (torch.zeros(4, 64), "shape"),
    (torch.zeros(4, 128, dtype=torch.float16), "dtype"),
])
def test_check_output_rejects_bad_outputs(out, expected):
    ref = torch.randn(4, 128)
    if out.dtype == torch.float32:
        out = out.to(torch.bfloat16)
    _, problem_text = check_output(out, ref, GemmProblem(4, 128, 256))
    assert problem_text is not None and expected in problem_text


def test_classify_allow_list():
    from gemm.kernels.base import CompileError, LaunchError, UnsupportedProblem

    assert classify(UnsupportedProblem("x")) == (Status.INVALID, False)
    assert classify(CompileError("x")) == (Status.COMPILE_FAILED, False)
    assert classify(LaunchError("x")) == (Status.LAUNCH_FAILED, False)
    illegal_address = RuntimeError("CUDA error: an illegal memory access was encountered")
    assert classify(illegal_address) == (Status.LAUNCH_FAILED, True)
    assert classify(RuntimeError("Triton Error [CUDA]: misaligned address")) == (Status.LAUNCH_FAILED, True)
    assert classify(RuntimeError("something else")) is None
    assert classify(KeyError("bug")) is None


def test_timeouts_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        Timeouts(build_s=0)


def test_a_worker_that_cannot_start_stops_the_pool_instead_of_failing_every_candidate():
    # threads=0 makes torch.set_num_threads raise before the worker reports ready.
    settings = WorkerSettings(device="cpu", timer=FAKE_TIMER, threads=0)
    with WorkerPool(1, settings, Timeouts(build_s=120, run_s=30)) as pool:
        with pytest.raises(WorkerStartError, match="before it was ready"):
            _collect(pool, [[_item("fake_backends:GoodBackend", "ok")]])


def test_local_errors_over_row_blocks_match_the_whole_matrix(monkeypatch):
    import gemm.reference as reference
    from gemm.tuner.search.worker import _local_errors

    ref = torch.randn(33, 21)
    out = ref + 1e-3 * torch.randn(33, 21)
    out[5, 7] += 0.5  # one element far off: its row and column carry the worst local error
    whole = _local_errors(out, ref)
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", 50)  # blocks of 2 rows
    assert _local_errors(out, ref) == pytest.approx(whole, rel=1e-12)
    diff, den = (out.double() - ref.double()), ref.double()
    lines = [torch.linalg.vector_norm(diff, dim=d) / torch.linalg.vector_norm(den, dim=d)
             .clamp_min(0.1 * float(torch.linalg.vector_norm(den, dim=d).median())) for d in (0, 1)]
    assert whole == pytest.approx(max(float(x.max()) for x in lines), rel=1e-12)
