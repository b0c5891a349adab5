"""`gemm tune --ray` on a local Ray instance with CPU tasks (skipped where Ray, an optional extra, is absent):
the same log as a plain sweep, a killed task's unit redone, a killed driver resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from gemm.cli import main  # noqa: E402
from gemm.tuner.results.log import read_log  # noqa: E402
from gemm.tuner.results.select import select  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with two CPUs whose workers can import the fake backends."""
    with pytest.MonkeyPatch.context() as patch:
        # Ray's worker processes inherit this environment: the package, the fake backends, the interpreter.
        patch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]))
        patch.setenv("TRITON_INTERPRET", "1")
        context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield context.address_info["gcs_address"]
        finally:
            ray.shutdown()


def _sweep(*extra) -> list[str]:
    shapes = [arg for n in (64, 128, 192, 256) for arg in ("--shape", f"{n},128")]
    return ["tune", "--interpret", "--backends", "fake_backends:SlowGoodBackend,fake_backends:SafeMixedBackend",
            "--timer", "fake_backends:SlowFakeTimer", *shapes, "--m", "1,2,4", "--seed", "5", "--no-progress",
            "--workers", "0", *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Rows of the same sweep without Ray, in this process."""
    out = tmp_path_factory.mktemp("plain")
    assert main(_sweep("--log", str(out / "plain.jsonl"), "--out", str(out))) == 0
    return read_log(out / "plain.jsonl")[1]


def _same(rows, reference) -> None:
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys)), "a row was logged twice"
    assert set(keys) == {r.key for r in reference}, "the log differs from a plain sweep's"
    assert select(rows) == select(reference)


def _log_rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _busy_unit_tasks() -> list[int]:
    """Process ids of Ray workers running a unit now (Ray titles a busy worker after its task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_unit_stream"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _wait_for(predicate, alive, what: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert alive(), f"the sweep ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_ray_sweep_logs_what_a_plain_sweep_logs(cluster, reference, tmp_path, capsys):
    log = tmp_path / "ray.jsonl"
    assert main(_sweep("--ray", "--log", str(log), "--out", str(tmp_path))) == 0
    captured = capsys.readouterr()
    assert "2 CPU stand-in worker(s)" in captured.err and "lost workers 0" in captured.out
    _same(read_log(log)[1], reference)


def test_a_killed_ray_task_has_its_unit_redone(cluster, reference, tmp_path, capsys):
    log = tmp_path / "ray.jsonl"
    result = {}
    driver = threading.Thread(target=lambda: result.setdefault(
        "code", main(_sweep("--ray", "--log", str(log), "--out", str(tmp_path)))))
    driver.start()
    try:
        _wait_for(lambda: _log_rows(log) >= 6 and _busy_unit_tasks(), driver.is_alive, "a unit was under way")
        os.kill(_busy_unit_tasks()[0], signal.SIGKILL)
    finally:
        driver.join(timeout=240)
    assert result.get("code") == 0
    captured = capsys.readouterr()
    assert "lost its worker while tuning" in captured.err and "the Ray task failed" in captured.err
    assert "after 1 lost worker" in captured.err and "lost workers 1" in captured.out
    _same(read_log(log)[1], reference)


def test_a_killed_driver_resumes(cluster, reference, tmp_path):
    log = tmp_path / "ray.jsonl"
    env = dict(os.environ)
    process = subprocess.Popen([sys.executable, "-m", "gemm.cli", *_sweep("--ray", cluster, "--log", str(log),
                                                                         "--out", str(tmp_path))],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        _wait_for(lambda: _log_rows(log) >= 8, lambda: process.poll() is None, "rows were logged")
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    _, before = read_log(log)
    assert main(_sweep("--ray", "--log", str(log), "--out", str(tmp_path), "--resume")) == 0
    _, after = read_log(log)
    assert [r.key for r in after[:len(before)]] == [r.key for r in before]  # append-only
    _same(after, reference)
