"""``gemm bench`` on the CPU: its options, the message without a GPU, and what a run writes (CSV, ceilings,
markdown summary, plots) with a stand-in rig whose kernels and timer are fakes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time

import pandas as pd
import pytest
import torch

from gemm.bench.measure import Ceilings, Timing, make_input_sets
from gemm.bench.peers import PeerCall
from gemm.bench.tables import COLUMNS
from gemm.cli import build_parser, main
from gemm.reference import reference_matmul

# Microseconds the fake timer reports per peer; "ours" is the tuned op.
TIMES = {"classic_default": 30.0, "cublas_blockwise": 12.0, "cublas_per_tensor": 8.0, "bf16_matmul": 15.0,
         "tuned_op": 10.0, "triton_heuristic": 11.0, "cutlass_default": 9.0, "sm90_default": 13.0,
         "sm90_sweep": 7.0}


class FakeKernel:
    """A GEMM that computes the reference (or zeros, when ``wrong``) and takes ``us`` per call."""

    def __init__(self, us: float, wrong: bool = False) -> None:
        self.us, self.wrong = us, wrong

    def __call__(self, a, b, a_scale, b_scale):
        out = reference_matmul(a, b, a_scale, b_scale)
        return torch.zeros_like(out) if self.wrong else out


class FakeRig:
    """A CPU stand-in for the GPU: fixed ceilings, CPU inputs, fake kernels and their fixed times.

    cuBLAS blockwise computes a wrong result at M=16; CUTLASS's one space candidate failed to build.
    """

    label, device_name, l2_bytes = "H200", "NVIDIA H200", 2**16

    def __init__(self, pause_s: float = 0.0) -> None:
        self.pause_s = pause_s
        self.calls_seen = []

    def ceilings(self) -> Ceilings:
        return Ceilings(1000.0, 500.0, 4.0, 8192)

    def inputs(self, problem, copies):
        return make_input_sets(problem.m, problem.n, problem.k, copies, device="cpu")

    def time(self, fn, arg_sets) -> Timing:
        return Timing(fn.us, 0.01)

    def calls(self, problem, sets, settings):
        self.calls_seen.append((problem.m, problem.n, problem.k, settings.tuned, settings.sweep, settings.cutlass,
                                settings.sm90))
        peers = ["classic_default", "cublas_blockwise", "cublas_per_tensor", "bf16_matmul"]
        peers += ["tuned_op"] if settings.tuned else []
        for peer in peers + ["triton_heuristic"]:
            wrong = peer == "cublas_blockwise" and problem.m == 16
            yield PeerCall(peer, "", FakeKernel(TIMES[peer], wrong), sets, verify=peer != "bf16_matmul")
        if settings.cutlass:
            yield PeerCall("cutlass_default", "128x128", FakeKernel(TIMES["cutlass_default"]), sets)
            yield PeerCall("cutlass_sweep", "64x128", RuntimeError("nvcc failed"), sets)
        if settings.sm90:
            yield PeerCall("sm90_default", "128x128", FakeKernel(TIMES["sm90_default"]), sets)
            yield PeerCall("sm90_sweep", "64x16,swab", FakeKernel(TIMES["sm90_sweep"]), sets)

    def release(self) -> None:
        time.sleep(self.pause_s)


@pytest.fixture
def rig(monkeypatch):
    from gemm.cli import bench

    fake = FakeRig()
    monkeypatch.setattr(bench, "gpu_rig", lambda: fake)
    return fake


def test_options_parse_into_what_to_time():
    args = build_parser().parse_args(["bench", "--preset", "deepseek-v3-tp8", "deepseek-v3-tp1", "--m", "1,16",
                                      "--m-extra", "8192", "--cutlass", "--triton-sweep", "--time-limit", "60",
                                      "--out", "somewhere", "--no-plots"])
    assert args.preset == ["deepseek-v3-tp8", "deepseek-v3-tp1"] and args.m == "1,16" and args.m_extra == "8192"
    assert args.cutlass and args.triton_sweep and args.no_plots and args.time_limit == 60.0
    assert args.out == "somewhere" and args.report is None
    defaults = build_parser().parse_args(["bench"])
    assert defaults.out == "bench_out" and not defaults.cutlass and not defaults.triton_sweep


@pytest.mark.parametrize("options, expected", [
    (["--m", "0"], "--m expects comma-separated positive integers"),
    (["--shape", "7168"], "--shape expects N,K"),
    (["--time-limit", "0"], "argument --time-limit: expected a finite number > 0 (seconds)"),
    (["--report", "H200=x", "--m", "16"], "--report summarizes earlier runs; it takes no --m"),
])
def test_bad_options_exit_2_with_a_message(options, expected, capsys, tmp_path):
    assert main(["bench", "--out", str(tmp_path / "out"), *options]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_without_gpu_says_so_and_exits_2(capsys, tmp_path):
    assert main(["bench", "--shape", "256,256", "--m", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and "gemm bench --report DEVICE=DIR" in err
    assert not (tmp_path / "out").exists()


def test_a_run_writes_rows_best_times_ceilings_summary_and_plot(rig, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "--shape", "256,256", "--shape", "512,256", "--m", "1,16", "--cutlass",
                 "--out", str(out)]) == 0
    assert [c[:3] for c in rig.calls_seen] == [(1, 256, 256), (16, 256, 256), (1, 512, 256), (16, 512, 256)]
    # tuned op always, no sweep, CUTLASS asked, no Hopper kernel
    assert all(c[3:] == (True, False, True, False) for c in rig.calls_seen)

    rows = pd.read_csv(out / "bench_rows.csv")
    assert list(rows.columns) == list(COLUMNS) and len(rows) == 4 * 8
    status = rows.set_index(["N", "M", "peer"]).status
    assert status[(256, 16, "cublas_blockwise")] == "WRONG_RESULT"
    assert status[(512, 1, "cutlass_sweep")] == "FAILED: nvcc failed"
    assert (status.drop(["cublas_blockwise", "cutlass_sweep"], level="peer") == "OK").all()
    tuned = rows[rows.peer == "tuned_op"].iloc[0]
    assert tuned.us == 10.0 and tuned.tflops == pytest.approx(2 * 1 * 256 * 256 / 10.0 / 1e6)
    assert math.isfinite(tuned.rel_err) and tuned.rel_err < 1e-6

    best = pd.read_csv(out / "bench_best.csv").set_index(["N", "K", "M"])
    assert best.loc[(256, 256, 1), "ours"] == 9.0  # CUTLASS default: the fastest of our backends
    assert math.isnan(best.loc[(256, 256, 16), "cublas_blockwise"])

    info = json.loads((out / "ceilings.json").read_text())
    assert info["device"] == "NVIDIA H200" and info["fp8_tflops"] == 1000.0
    assert info["command"] == f"gemm bench --shape 256,256 --shape 512,256 --m 1,16 --cutlass --out {out}"

    md = (out / "performance.md").read_text()
    assert f"gemm bench --report H200={out} --out {out}" in md
    assert "## H200" in md and "Ours = tuned op (shipped configs)" in md
    # cuBLAS blockwise verified at M=1 only: 12 / 10 on both shapes.
    line = next(line for line in md.splitlines() if line.startswith("| cuBLAS blockwise |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "1.200" and cells[4] == "1.200" and cells[5] == "2"
    assert "Left out for cuBLAS blockwise (2 points without a verified result)" in md
    text = capsys.readouterr().out
    assert "geomean speed-up of the tuned op over each peer" in text
    assert f"wrote {out / 'performance.md'}" in text
    if importlib.util.find_spec("matplotlib") is not None:
        png = out / "performance" / "h200_tflops.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "](performance/h200_tflops.png)" in md


def test_sm90_peers_are_our_backends_and_recorded_in_the_command(rig, tmp_path):
    out = tmp_path / "out"
    assert main(["bench", "--shape", "256,256", "--m", "1", "--sm90", "--no-plots", "--out", str(out)]) == 0
    assert rig.calls_seen == [(1, 256, 256, True, False, False, True)]
    rows = pd.read_csv(out / "bench_rows.csv")
    assert set(rows.peer) >= {"sm90_default", "sm90_sweep"} and (rows.status == "OK").all()
    best = pd.read_csv(out / "bench_best.csv").set_index(["N", "K", "M"])
    assert best.loc[(256, 256, 1), "ours"] == 7.0  # the Hopper kernel's sweep: the fastest of our backends
    assert json.loads((out / "ceilings.json").read_text())["command"].endswith("--sm90 --no-plots --out " + str(out))
    md = (out / "performance.md").read_text()
    assert "Hopper kernel, best of pruned space" in md and "Hopper kernel, default params" in md


def test_time_limit_keeps_what_was_timed_and_exits_3(monkeypatch, tmp_path, capsys):
    from gemm.cli import bench

    monkeypatch.setattr(bench, "gpu_rig", lambda: FakeRig(pause_s=1.0))
    out = tmp_path / "out"
    assert main(["bench", "--shape", "256,256", "--m", "1,16,64", "--time-limit", "0.5", "--no-plots",
                 "--out", str(out)]) == 3
    assert "time limit reached; skipping M=16 N=256 K=256 and the 1 points after it" in capsys.readouterr().err
    rows = pd.read_csv(out / "bench_rows.csv")
    assert set(rows.M) == {1}
    assert (out / "performance.md").is_file() and not (out / "performance").exists()


def test_without_matplotlib_the_summary_is_written_without_plots(rig, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    out = tmp_path / "out"
    assert main(["bench", "--shape", "256,256", "--m", "1", "--out", str(out)]) == 0
    assert "matplotlib is not installed, so no plots are drawn" in capsys.readouterr().err
    md = (out / "performance.md").read_text()
    assert "![" not in md and not (out / "performance").exists()
    assert main(["bench", "--report", f"H200={out}", "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "performance.md").is_file()
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_console_summary_names_ours_only_when_two_backends_were_timed():
    from gemm.bench.run import console_summary

    index = pd.MultiIndex.from_tuples([(7168, 2048, 1), (7168, 2048, 1024)], names=["N", "K", "M"])
    table = pd.DataFrame({"tuned_op": [8.5, 30.7], "cublas_per_tensor": [6.9, 27.5], "triton_heuristic": [8.6, 61.3],
                          "floor_us": [3.4, 22.5]}, index=index)
    table["ours"] = table["triton_heuristic"]  # one backend timed: "ours" is that backend under another name
    text = console_summary(table, None)
    assert "\ntriton_heuristic" in text and "\nours" not in text
    table["triton_sweep"], table["ours"] = [8.0, 40.0], [8.0, 40.0]
    assert "\nours" in console_summary(table, None)


@pytest.mark.parametrize("calls_of,peer", [("cutlass_calls", "cutlass_default"), ("sm90_calls", "sm90_default")])
def test_a_backend_that_cannot_run_is_recorded_as_failed_not_left_out(monkeypatch, calls_of, peer):
    from gemm.bench import peers
    from gemm.kernels.cutlass.backend import CutlassBackend
    from gemm.kernels.sm90.backend import Sm90Backend
    from gemm.problem import GemmProblem

    for backend in (CutlassBackend, Sm90Backend):
        monkeypatch.setattr(backend, "unavailable_reason", lambda self: "nvcc not found")
    args = (GemmProblem(16, 256, 256), None, [("a", "b", "sa", "sb")]) + ((12,) if calls_of == "sm90_calls" else ())
    (call,) = getattr(peers, calls_of)(*args)
    assert call.peer == peer and isinstance(call.fn, Exception) and "nvcc not found" in str(call.fn)
