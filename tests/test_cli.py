"""The ``gemm`` command line, end to end on the CPU (Triton interpreter and fake backends)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from gemm.cli import main
from gemm.tuner.results.log import read_log

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
CONFIG_NAME = "N=256,K=256,device_name=CPU_interpreter,dtype=fp8_w8a8,block_shape=[128,128].json"


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _gemm(*args, timeout=300, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemm.cli", *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout, **popen)


@pytest.fixture(scope="module")
def interpreted_sweep(tmp_path_factory):
    """One `gemm tune --interpret` run shared by the tests that inspect its outputs."""
    out = tmp_path_factory.mktemp("tuned")
    log = out / "tune.jsonl"
    result = _gemm("tune", "--interpret", "--shape", "256,256", "--m", "1,16", "--out", out, "--log", log,
                   "--seed", 3, "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    return out, log, result


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_tune_without_gpu_says_so(capsys):
    assert main(["tune"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "gemm tune --interpret" in err


def test_interpret_sweep_writes_a_valid_config_the_op_uses(interpreted_sweep):
    out, log, result = interpreted_sweep
    path = out / "CPU_interpreter" / CONFIG_NAME
    assert path.is_file()
    assert "N=256 K=256" in result.stderr and "triton" in result.stdout  # shape line and summary table
    config = json.loads(path.read_text())
    assert sorted(config["entries"]) == ["1", "16"]
    assert main(["validate", str(path)]) == 0
    _, rows = read_log(log)
    assert {r.m for r in rows} == {1, 16} and all(r.backend == "triton" for r in rows)

    # A fresh process with the interpreter on and GEMM_CONFIG_DIR at the sweep's output dispatches to the
    # tuned entries and computes the right result.
    script = textwrap.dedent("""
        import json
        import gemm
        from gemm import dispatch
        from gemm.problem import GemmProblem
        from gemm.quant import random_problem_inputs
        from gemm.reference import reference_matmul, relative_error
        report = {}
        for m in (1, 16):
            backend, params = dispatch.choose(GemmProblem(m, 256, 256), "cpu", None)
            a, b, sa, sb = random_problem_inputs(m, 256, 256, seed=m)
            out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
            report[m] = {"backend": backend.name, "params": params.to_dict(),
                         "error": relative_error(out, reference_matmul(a, b, sa, sb))}
        print(json.dumps(report))
    """)
    used = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=_env(TRITON_INTERPRET="1", GEMM_CONFIG_DIR=str(out)))
    assert used.returncode == 0, used.stderr
    report = json.loads(used.stdout.strip().splitlines()[-1])
    from gemm.tuner.search.space import interpret_triton_space

    tried = [p.to_dict() for p in interpret_triton_space()]
    for m in ("1", "16"):
        entry = config["entries"][m]
        assert report[m]["backend"] == entry["backend"] == "triton"
        assert report[m]["params"] == entry["params"] and entry["params"] in tried
        assert report[m]["error"] < 1e-2


def test_validate_exit_codes(interpreted_sweep, tmp_path, capsys):
    out, _, _ = interpreted_sweep
    assert main(["validate", str(out)]) == 0
    broken = tmp_path / "cfg" / "NVIDIA_H100_80GB_HBM3"
    broken.mkdir(parents=True)
    bad = broken / "N=512,K=512,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
    bad.write_text('{"schema_version": 1, "entries": ')
    capsys.readouterr()
    assert main(["validate", str(bad)]) == 1
    assert "INVALID" in capsys.readouterr().out
    assert main(["validate", str(out), str(tmp_path / "cfg")]) == 1  # one good, one bad
    assert main(["validate", str(tmp_path / "missing")]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 1


def test_show_export_import_compare(interpreted_sweep, tmp_path, capsys):
    out, log, _ = interpreted_sweep
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "CPU_interpreter" in shown and "triton" in shown and "256" in shown

    assert main(["export", "--format", "sglang", str(out), "--out", str(tmp_path / "none")]) == 1
    assert "no entry was measured in SGLang's kernel" in capsys.readouterr().err
    assert main(["export", "--format", "sglang", str(out), "--out", str(tmp_path / "sglang"), "--stand-ins"]) == 0
    (exported,) = (tmp_path / "sglang").iterdir()
    engine = json.loads(exported.read_text())
    assert sorted(engine, key=int) == ["1", "16"]
    assert set(engine["1"]) <= {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps",
                                "num_stages"}
    assert main(["import", str(exported), "--out", str(tmp_path / "imported"), "--arch", "H100"]) == 0
    assert list((tmp_path / "imported").rglob("*.json"))

    capsys.readouterr()
    assert main(["compare", str(log), str(log)]) == 0  # a log against itself: every pick is the best
    assert "100.0% of the exhaustive best" in capsys.readouterr().out


def test_plot_writes_pngs(interpreted_sweep, tmp_path):
    pytest.importorskip("matplotlib")
    _, log, _ = interpreted_sweep
    assert main(["plot", str(log), "--out", str(tmp_path / "plots")]) == 0
    for name in ("tflops.png", "winners.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_build_without_cutlass_entries_has_nothing_to_do(interpreted_sweep, capsys):
    out, _, _ = interpreted_sweep
    assert main(["build", "--configs", str(out)]) == 0
    assert "nothing to build" in capsys.readouterr().out


def test_presets_listing(capsys):
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert "deepseek-v3-tp8 (default)" in listing and "self_attn.q_b_proj" in listing


def test_bad_arguments_are_usage_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # `--interpret` sets it; undo that after the test
    assert main(["tune", "--interpret", "--shape", "256", "--out", str(tmp_path)]) == 2
    assert "--shape expects N,K" in capsys.readouterr().err
    assert main(["tune", "--interpret", "--backends", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown backend" in capsys.readouterr().err
    assert main(["tune", "--interpret", "--workers", "-1", "--out", str(tmp_path)]) == 2
    assert "argument --workers: expected an integer >= 0" in capsys.readouterr().err
    assert main(["tune", "--interpret", "--budget", "0", "--out", str(tmp_path)]) == 2
    assert "budget" in capsys.readouterr().err


def _fake_sweep(m: str = "1,2,4") -> list[str]:
    return ["tune", "--interpret", "--backends", "fake_backends:SlowGoodBackend", "--timer",
            "fake_backends:SlowFakeTimer", "--shape", "128,256", "--shape", "64,128", "--m", m,
            "--no-progress", "--seed", "5"]


def _log_rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def test_killed_sweep_resumes_with_nothing_lost_or_repeated(tmp_path):
    log, out = tmp_path / "killed.jsonl", tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "gemm.cli", *_fake_sweep(), "--log", str(log), "--out", str(out)],
                               cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _log_rows(log) < 8 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the sweep ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its worker, mid-write or not
    finally:
        process.wait(timeout=60)
    _, before = read_log(log)
    assert 8 <= len(before) < 40

    mismatch = _gemm(*_fake_sweep(m="1,2"), "--log", log, "--out", out, "--resume")
    assert mismatch.returncode == 2 and "cannot resume" in mismatch.stderr

    resumed = _gemm(*_fake_sweep(), "--log", log, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    clean = _gemm(*_fake_sweep(), "--log", tmp_path / "clean.jsonl", "--out", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr

    _, after = read_log(log)
    _, reference = read_log(tmp_path / "clean.jsonl")
    keys = [r.key for r in after]
    assert len(keys) == len(set(keys)), "a row was logged twice"
    assert set(keys) == {r.key for r in reference}, "the resumed log differs from an uninterrupted sweep"
    assert [r.key for r in after[:len(before)]] == [r.key for r in before]  # append-only
    summary = [line for line in resumed.stdout.splitlines() if "fake_backends:SlowGoodBackend" in line]
    assert len(summary) == 1 + 6  # status table row + one choice per (shape, M)
    assert all("variant=2" in line for line in summary[:-1])
