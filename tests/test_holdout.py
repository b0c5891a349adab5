"""Leave-one-shape-out scoring of the predicted choice (gemm.tuner.model.holdout, scripts/leave_one_shape_out.py)
and the summary of scripts/check_untuned_gpu.py, on small synthetic logs and tables."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from gemm.arch import get_arch
from gemm.kernels import get_backend
from gemm.problem import GemmProblem
from gemm.tuner.model import choice, holdout
from gemm.tuner.model.fitted import FittedModel, default_model, predict_with, prior_model
from gemm.tuner.results.log import Fingerprint, ResultsLog
from gemm.tuner.results.measurement import Measurement, canonical_params
from script_modules import load_script

H200 = get_arch("H200")
FINGERPRINT = Fingerprint("NVIDIA_H200", "H200", "t", "t", None, "0", "hash", (128, 128), "bfloat16")




def _write(path: Path, rows: list[Measurement]) -> Path:
    with ResultsLog.create(path, FINGERPRINT) as log:
        for row in rows:
            log.append(row)
    return path


def _row(backend: str, params: dict, n: int, k: int, m: int, us: float, stage: str = "final") -> Measurement:
    return Measurement(backend, params, n, k, m, stage, "OK", us=us)


def _every_candidate(model: FittedModel, n: int, k: int, ms) -> list[Measurement]:
    """Rows timing every checked candidate of every modelled backend as ``model`` predicts it (a perfect log)."""
    rows = []
    for m in ms:
        problem = GemmProblem(m, n, k)
        for ranked in choice.rank(problem, H200, model):
            params = ranked.params.to_dict()
            rows.append(_row(ranked.backend.name, params, n, k, m, predict_with(model, ranked.backend.name,
                                                                                 problem, params, H200)))
    return rows


def test_a_later_log_replaces_a_point_and_a_final_time_beats_a_screen_time(tmp_path):
    a, b = {"x": 1}, {"x": 2}
    first = _write(tmp_path / "first.jsonl", [
        _row("cublas", a, 512, 1024, 16, 10.0, "screen"), _row("cublas", a, 512, 1024, 16, 12.0, "final"),
        _row("cublas", a, 512, 1024, 64, 20.0, "screen")])
    second = _write(tmp_path / "second.jsonl", [_row("cublas", b, 512, 1024, 64, 15.0, "screen")])
    arch, points = holdout.logged_points([first, second])
    assert arch.name == "H200"
    assert points[(512, 1024, 16)][("cublas", canonical_params(a))].us == 12.0
    assert list(points[(512, 1024, 64)]) == [("cublas", canonical_params(b))]  # the later log's point only


def test_a_choice_not_logged_stands_as_its_slowest_nearest_neighbour():
    def logged(params, us):
        return ("triton", canonical_params(params)), holdout.Logged("triton", params, us, "final")

    candidates = dict([logged({"a": 1, "b": 1}, 5.0), logged({"a": 1, "b": 2}, 9.0), logged({"a": 2, "b": 2}, 7.0),
                       logged({"a": 3, "b": 3}, 1.0)])
    found, distance = holdout.measured(candidates, "triton", {"a": 1, "b": 1})
    assert (found.us, distance) == (5.0, 0)
    found, distance = holdout.measured(candidates, "triton", {"a": 2, "b": 1})
    assert (found.us, distance) == (7.0, 1)  # {a1 b1} (5 us) and {a2 b2} (7 us) differ in one param: the slower
    assert holdout.measured(candidates, "cutlass", {"a": 1}) is None


def test_a_perfect_model_scores_one_and_another_model_what_its_pick_measured(tmp_path):
    truth = default_model()
    log = _write(tmp_path / "perfect.jsonl", _every_candidate(truth, 2112, 7168, (16, 1024)))
    arch, points = holdout.logged_points([log])
    records = holdout.score_shape(points, arch, truth, (2112, 7168))
    assert [r["M"] for r in records] == [16, 1024]
    assert all(r["predicted_speed"] == pytest.approx(1.0) and r["predicted_distance"] == 0 for r in records)
    prior = holdout.score_shape(points, arch, prior_model(), (2112, 7168))
    for record in prior:
        problem = GemmProblem(record["M"], 2112, 7168)
        top = choice.rank(problem, arch, prior_model())[0]
        measured = predict_with(truth, top.backend.name, problem, top.params.to_dict(), arch)
        assert record["predicted_us"] == pytest.approx(measured)
        assert record["predicted_speed"] == pytest.approx(record["best_us"] / measured) and record[
            "predicted_speed"] <= 1.0
        heuristic = get_backend("triton").default_params(problem, arch).to_dict()
        assert record["heuristic_us"] == pytest.approx(predict_with(truth, "triton", problem, heuristic, arch))


def test_summaries_group_by_m_range_and_shape():
    records = [{"N": 1, "K": 2, "M": m, "predicted_speed": s, "heuristic_speed": 0.5, "defaults_speed": 1.0,
                "predicted_distance": d} for m, s, d in ((1, 1.0, 0), (64, 0.81, 0), (96, 0.5, 1), (256, 0.9, 0),
                                                         (4096, 0.64, 0))]
    by_range, by_shape = holdout.summaries(records)
    rows = {r.m_range: r for r in by_range.itertuples()}
    assert list(rows) == ["M <= 64", "128 <= M <= 512", "M >= 1024", "all"]  # M = 96 in "all" only
    assert rows["M <= 64"].predicted_geomean == pytest.approx(0.9)
    assert rows["all"].points == 5 and rows["all"].predicted_worst == 0.5
    assert rows["all"].within_10pct == pytest.approx(0.4) and rows["all"].logged_itself == pytest.approx(0.8)
    assert by_shape.iloc[0].points == 5 and by_shape.iloc[0].heuristic_geomean == pytest.approx(0.5)


def test_the_script_refits_without_each_shape_and_writes_its_tables(tmp_path, capsys):
    script = load_script("leave_one_shape_out")
    truth = default_model()
    rows = [r for shape in ((2112, 7168), (7168, 2048)) for r in _every_candidate(truth, *shape, (64,))
            if r.backend == "cublas"]  # one cheap fit per shape
    log = _write(tmp_path / "cublas.jsonl", rows)
    models = script.fitted_models([log], [(2112, 7168), (7168, 2048), (1, 1)], jobs=1)
    assert set(models) == {None, (2112, 7168), (7168, 2048)}  # (1, 1) is in no fit log: scored with the full fit
    assert all(m.archs == ("H200",) for m in models.values())
    out = tmp_path / "out"
    assert script.main(["--logs", str(log), "--fit-logs", str(log), "--out", str(out), "--jobs", "1"]) == 0
    points = pd.read_csv(out / "points.csv")
    assert sorted(points.N) == [2112, 7168] and (points.best.str.startswith("cublas")).all()
    # Only cuBLAS was logged: a pick of another backend has no stand-in and no score.
    assert (points.predicted_speed.isna() == (points.predicted_backend != "cublas")).all()
    summary = (out / "summary.md").read_text()
    assert "| M <= 64 |" in summary and "nearest logged candidate" in summary
    assert script.main(["--from-points", str(out / "points.csv"), "--logs", str(log), "--fit-logs", str(log),
                        "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "summary.md").read_text().split("Reproduce")[0] == summary.split("Reproduce")[0]
    assert script.main(["--logs", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 2
    assert "no such log" in capsys.readouterr().err


def test_the_gpu_check_hides_the_tp4_only_shapes_and_summarizes_ratios(capsys):
    from gemm.tuner.presets import preset_shapes

    script = load_script("check_untuned_gpu")
    shapes = script.default_shapes()
    tp4 = {(s.n, s.k) for s in preset_shapes("deepseek-v3-tp4")}
    others = {(s.n, s.k) for name in ("deepseek-v3-tp8", "deepseek-v3-tp1") for s in preset_shapes(name)}
    assert shapes and set(shapes) <= tp4 and not set(shapes) & others
    points = [(512, 1024, 16), (512, 1024, 2048)]
    times = {"untuned_op": (10.0, 100.0), "tuned_op": (8.0, 100.0), "cublas_per_tensor": (5.0, 50.0),
             "triton_heuristic": (10.0, 200.0)}
    rows = pd.DataFrame([dict(M=m, N=n, K=k, peer=peer, config=f"{peer}-cfg", status="OK", us=us[i])
                         for peer, us in times.items() for i, (n, k, m) in enumerate(points)])
    table = rows.pivot_table(index=["N", "K", "M"], columns="peer", values="us")
    text, frame = script.summary(table, rows, "NVIDIA H200", [(512, 1024)], 60.0)
    assert frame.loc[frame.M == 16, "untuned_op/tuned_op"].item() == pytest.approx(0.8)
    assert frame.loc[frame.M == 2048, "untuned_op/triton_heuristic"].item() == pytest.approx(2.0)
    assert (frame.untuned_op_config == "untuned_op-cfg").all()
    line = next(line for line in text.splitlines() if line.startswith("| untuned_op vs tuned_op"))
    assert line.split("|")[1:-1] == [" untuned_op vs tuned_op ", " 0.800 ", " - ", " 1.000 ",
                                     f" {math.sqrt(0.8):.3f} "]
    if not __import__("torch").cuda.is_available():
        assert script.main(["--m", "1", "--out", "/nonexistent/never-written"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert script.main(["--shape", "1,2,3"]) == 2


def test_the_gpu_check_runs_end_to_end_on_a_stand_in_rig(tmp_path, monkeypatch):
    """scripts/check_untuned_gpu.py's main flow with the GPU replaced: each of its four peers verified and
    timed at every point, the untuned op built from the choice made with no config directory."""
    import torch

    import gemm
    import gemm.bench.peers as peers
    import gemm.kernels.triton_fp8 as triton_fp8
    from fake_backends import FakeBackend, FakeParams
    from gemm.bench.measure import Ceilings, Timing, make_input_sets
    from gemm.bench.peers import PeerCall
    from gemm.reference import reference_matmul

    script = load_script("check_untuned_gpu")

    def exact(a, b, sa, sb):
        return reference_matmul(a, b, sa, sb).to(torch.bfloat16)

    exact.us = 4.0
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(script, "prebuild_choices", lambda points, index, say: chosen.append(len(points)))
    monkeypatch.setattr(script, "untuned_choice", lambda problem, index: (FakeBackend(), FakeParams("ok", 5.0)))
    monkeypatch.setattr(peers, "external_peers", lambda problem, sets: [
        PeerCall("cublas_per_tensor", "", exact, sets), PeerCall("bf16_matmul", "", exact, sets)])
    monkeypatch.setattr(peers, "tuned_config", lambda problem: "fake:tuned")
    monkeypatch.setattr(gemm, "w8a8_block_fp8_matmul", exact)
    monkeypatch.setattr(triton_fp8, "launch", lambda *xs: exact(*xs[:4]))
    untuned_rig = script.rig_class()

    class StandIn(untuned_rig):
        label, device_name, l2_bytes = "H200", "NVIDIA H200", 2**16

        def __init__(self):
            self.arch = H200

        def ceilings(self):
            return Ceilings(1000.0, 500.0, 4.0, 8192)

        def inputs(self, problem, copies):
            return make_input_sets(problem.m, problem.n, problem.k, copies, device="cpu")

        def time(self, fn, arg_sets):
            return Timing(getattr(fn, "fake_us", getattr(fn, "us", 8.0)), 0.0)

        def release(self):
            pass

    monkeypatch.setattr(script, "rig_class", lambda: StandIn)
    out = tmp_path / "untuned"
    assert script.main(["--shape", "256,256", "--m", "1,2048", "--out", str(out)]) == 0
    assert chosen == [2]
    frame = pd.read_csv(out / "untuned.csv")
    assert sorted(frame.M) == [1, 2048] and (frame.untuned_op == 5.0).all() and (frame.tuned_op == 4.0).all()
    assert (frame["untuned_op/tuned_op"] == 0.8).all() and (frame.untuned_op_config == "fake:" + FakeParams(
        "ok", 5.0).short()).all()
    assert "| untuned_op vs tuned_op | 0.800 | - | 0.800 | 0.800 |" in (out / "summary.md").read_text()
    assert {"bench_rows.csv", "bench_best.csv", "ceilings.json"} <= {p.name for p in out.iterdir()}
