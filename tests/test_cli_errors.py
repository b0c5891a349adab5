"""Command-line values checked before work starts, and OS errors as one line (no traceback, exit 1)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gemm.cli import main
from gemm.tuner.results import log as results_log

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAKE = ["--backends", "fake_backends:GoodBackend", "--timer", "fake_backends:FakeTimer", "--shape", "128,256",
        "--no-progress", "--seed", "1", "--workers", "0"]


@pytest.fixture(autouse=True)
def _interpreter_env(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # `--interpret` sets it; undo that after each test


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_tie_below_zero_is_refused_before_the_sweep(tmp_path, capsys):
    assert main(["tune", "--interpret", "--tie", "-1", "--out", str(tmp_path / "out")]) == 2
    err = _error(capsys)
    assert _lines(err) == [line for line in _lines(err) if "--tie" in line] and "got '-1'" in err
    assert not (tmp_path / "out").exists()  # nothing swept, nothing written


@pytest.mark.parametrize("spec, says", [
    ("bogus", "package.module:Class"),
    ("no_such_module_here:Timer", "cannot import module"),
    ("gemm.tuner.timing:Nope", "has no attribute 'Nope'"),
    ("gemm.tuner.timing:DEFAULT_GPU_TIMER", "is not a timer class"),
])
def test_a_bad_timer_is_refused_before_the_sweep(tmp_path, capsys, spec, says):
    assert main(["tune", "--interpret", "--timer", spec, "--out", str(tmp_path / "out")]) == 2
    err = _error(capsys)
    assert "--timer" in err and says in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, says", [
    ("--m", "1,,2", "--m expects"),
    ("--m", "1,2,", "--m expects"),
    ("--m-extra", "8192,,", "--m-extra expects"),
    ("--backends", ",", "--backends expects"),
    ("--backends", "triton,,cublas", "--backends expects"),
])
def test_empty_list_items_are_refused(tmp_path, capsys, option, value, says):
    assert main(["tune", "--interpret", option, value, "--out", str(tmp_path)]) == 2
    assert says in _error(capsys)


def test_build_jobs_must_be_positive(capsys):
    assert main(["build", "--jobs", "-2"]) == 2
    assert "argument --jobs" in _error(capsys)


def test_out_naming_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv in (["tune", "--interpret", "--out", str(afile)],
                 ["tune", "--interpret", "--out", str(afile / "below")],
                 ["predict", "--arch", "H20", "--shape", "7168,2048", "--m", "1", "--out", str(afile)],
                 ["import", str(tmp_path), "--out", str(afile)],
                 ["export", "--format", "vllm", str(tmp_path), "--out", str(afile)],
                 ["plot", str(tmp_path / "log.jsonl"), "--out", str(afile)],
                 ["select", str(tmp_path / "log.jsonl"), "--out", str(afile)]):
        assert main(argv) == 2, argv
        err = _error(capsys)
        assert "--out" in err and str(afile) in err, argv
    assert afile.read_text() == "x"


def test_out_naming_a_read_only_directory_is_refused(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: judge by the mode bits, as for any other user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and (
            not mode & os.W_OK or bool(os.stat(path).st_mode & 0o200)))
    try:
        assert main(["tune", "--interpret", "--out", str(locked)]) == 2
        err = _error(capsys)
        assert "--out" in err and "not writable" in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_log_naming_a_directory_is_refused_and_left_alone(tmp_path, capsys):
    logdir = tmp_path / "logdir"
    (logdir / "sub").mkdir(parents=True)
    assert main(["tune", "--interpret", "--out", str(tmp_path / "out"), "--log", str(logdir)]) == 2
    assert "--log" in _error(capsys)
    assert (logdir / "sub").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["logdir"]
    with pytest.raises(IsADirectoryError):  # the library refuses too
        results_log.ResultsLog.create(logdir, None)


def _sweep(tmp_path, *extra) -> list[str]:
    return ["tune", "--interpret", *FAKE, "--m", "1,2", "--out", str(tmp_path / "out"),
            "--log", str(tmp_path / "tune.jsonl"), *extra]


def test_resume_of_a_log_with_a_corrupt_middle_line_says_which_line(tmp_path, capsys):
    assert main(_sweep(tmp_path)) == 0
    log = tmp_path / "tune.jsonl"
    lines = log.read_text().splitlines()
    lines[2] = '{"garbage'
    log.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(_sweep(tmp_path, "--resume")) == 2
    err = _error(capsys)
    assert f"{log}:3" in err and "--resume" in err and len(_lines(err)) == 1
    assert log.read_text().splitlines()[2] == '{"garbage'  # the log is left as it was


class _FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` of them, as on a full disk."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, text: str) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= 1
        return self.handle.write(text)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_full_disk_while_logging_is_one_line_and_keeps_the_rows_written(tmp_path, capsys, monkeypatch):
    real_init = results_log.ResultsLog.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._file = _FullDisk(self._file, room=3)

    monkeypatch.setattr(results_log.ResultsLog, "__init__", init)
    assert main(_sweep(tmp_path)) == 1
    err = _error(capsys)
    line = [line for line in _lines(err) if "No space left" in line]
    assert len(line) == 1 and str(tmp_path / "tune.jsonl") in line[0] and "--resume" in line[0]
    _, rows = results_log.read_log(tmp_path / "tune.jsonl")
    assert len(rows) == 3
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_log_header_that_cannot_be_written_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    fingerprint = results_log.Fingerprint("dev", "H100", None, None, None, "0", "hash", (128, 128), "bfloat16")
    with pytest.raises(OSError) as caught:
        results_log.ResultsLog.create(tmp_path / "tune.jsonl", fingerprint)
    assert caught.value.filename == str(tmp_path / "tune.jsonl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, value, says", [
    ("GEMM_BUILD_JOBS", "abc", "GEMM_BUILD_JOBS must be a positive integer"),
    ("GEMM_BUILD_JOBS", "0", "GEMM_BUILD_JOBS must be a positive integer"),
    ("GEMM_CONFIG_DIR", "FILE", "GEMM_CONFIG_DIR="),
    ("GEMM_CACHE_DIR", "FILE", "GEMM_CACHE_DIR="),
    ("GEMM_CUTLASS_DIR", "MISSING", "GEMM_CUTLASS_DIR="),
    ("GEMM_CHECK_SCALES", "maybe", "GEMM_CHECK_SCALES must be"),
])
def test_bad_environment_variables_are_named_before_any_command(tmp_path, capsys, monkeypatch, name, value, says):
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv(name, {"FILE": str(afile), "MISSING": str(tmp_path / "missing")}.get(value, value))
    for argv in (["build", "--configs", str(tmp_path)], ["tune", "--interpret", "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = _error(capsys)
        assert says in err and len(_lines(err)) == 1


def test_presets_into_a_closed_pipe_ends_quietly():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    shell = f"{sys.executable} -m gemm.cli presets | head -1"
    done = subprocess.run(["bash", "-c", shell], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() and "Error" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_full_disk_while_writing_a_config_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, capsys):
    from gemm.configs import store

    name = "N=256,K=256,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
    src = tmp_path / "engine" / name
    src.parent.mkdir()
    src.write_text(json.dumps({"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1,
                                     "num_warps": 4, "num_stages": 3}}))
    assert main(["import", str(src), "--out", str(tmp_path / "root")]) == 0
    (written,) = (tmp_path / "root").rglob("*.json")
    before = written.read_text()

    def full(document, handle, **kwargs):
        handle.write("{")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.json, "dump", full)
    capsys.readouterr()
    assert main(["import", str(src), "--out", str(tmp_path / "root")]) == 1
    err = _error(capsys)
    assert len(_lines(err)) == 1 and str(written) in err and "No space left" in err
    assert written.read_text() == before
    assert not [p for p in (tmp_path / "root").rglob("*.tmp")]


def test_a_compressed_log_is_never_appended_to(tmp_path, capsys):
    import gzip
    import shutil

    shipped = sorted((REPO / "tuned_configs" / "logs").glob("*.jsonl.gz"))[0]
    log = tmp_path / shipped.name
    shutil.copy(shipped, log)
    before = log.read_bytes()
    fingerprint, _ = results_log.read_log(log)
    with pytest.raises(ValueError, match="gunzip"):
        results_log.ResultsLog.resume(log, fingerprint)
    assert main(["tune", "--interpret", "--out", str(tmp_path / "o"), "--log", str(log), "--resume"]) == 2
    assert "--log" in _error(capsys)
    assert log.read_bytes() == before and gzip.decompress(before)
