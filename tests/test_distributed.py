"""Tuning spread over several GPUs: the scheduler in-process, then `gemm tune --gpus N --interpret` with
CPU stand-ins in real worker processes (streaming, config merge, a killed worker, a killed driver)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from gemm.arch import get_arch, interpreter_arch
from gemm.kernels.base import KernelParams
from gemm.tuner.distributed.local import parse_gpu_list
from gemm.tuner.distributed.scheduler import DeviceRun, DistributedError, Event, Scheduler, Slot
from gemm.tuner.distributed.unit import UnitTask, run_unit
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.log import Fingerprint, ResultsLog, read_log
from gemm.tuner.results.measurement import canonical_params
from gemm.tuner.results.select import select
from gemm.tuner.search.plan import SweepPlan, SweepSettings
from gemm.tuner.search.pool_size import evaluation_workers, worker_threads
from gemm.tuner.search.runner import Timeouts
from gemm.tuner.search.space import PruneSettings
from gemm.tuner.search.sweep import Progress, Sweep, TimeLimitReached
from gemm.tuner.search.worker import WorkerSettings
from gemm.tuner.timing import Timing

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
GOOD = "fake_backends:GoodBackend"
MIXED = "fake_backends:SafeMixedBackend"
DEVICE = interpreter_arch().config_device_name


class ParamTimer:
    """A deterministic stand-in time per (kernel params, M), the same in every process; the output is real.

    Lets runs in different processes pick the same configs for real (interpreted) Triton kernels.
    """

    def __init__(self, l2_bytes: int = 0) -> None:
        del l2_bytes

    def measure(self, fn, inputs, reps):
        params = next(c.cell_contents for c in fn.__closure__ or () if isinstance(c.cell_contents, KernelParams))
        key = f"{canonical_params(params.to_dict())}|{inputs[0].shape[0]}"
        return Timing(1.0 + zlib.crc32(key.encode()) % 1000 / 100, 0.0, reps, fn(*inputs))


# --------------------------------------------------------------------------- in-process scheduler


class RecordingProgress(Progress):
    def __init__(self) -> None:
        self.total = self.done = 0
        self.total_at_first_advance = None
        self.lines: list[str] = []

    def add_total(self, n: int) -> None:
        self.total += n

    def advance(self, n: int = 1) -> None:
        if self.total_at_first_advance is None:
            self.total_at_first_advance = self.total
        self.done += n


class _Lost(Exception):
    pass


class InlineExecutor:
    """Runs each started unit to its end inside ``poll`` (no processes).

    ``lose[(unit label, slot)] = n``: that attempt dies after streaming n rows, as a killed worker would.
    """

    def __init__(self, slot_ids, lose=None, error_on=None) -> None:
        self._slots = [Slot(*s) if isinstance(s, tuple) else Slot(s, DEVICE) for s in slot_ids]
        self.lose = dict(lose or {})
        self.error_on = error_on
        self.started: list[tuple[str, str]] = []
        self.attempt_rows: list[tuple[str, str, list]] = []
        self._pending: list[tuple[str, UnitTask]] = []

    def slots(self):
        return list(self._slots)

    def start(self, slot, task):
        self.started.append((slot, task.unit.label))
        self._pending.append((slot, task))

    def poll(self, timeout):
        events = []
        pending, self._pending = self._pending, []
        for slot, task in pending:
            events += self._run(slot, task)
        return events

    def _run(self, slot, task):
        if task.unit.label == self.error_on:
            return [Event(slot, "error", "KeyError: a bug")]
        events, rows = [], []
        budget = self.lose.pop((task.unit.label, slot), None)
        self.attempt_rows.append((slot, task.unit.label, rows))

        def emit(kind, payload):
            if kind == "row":
                if budget is not None and len(rows) >= budget:
                    raise _Lost
                rows.append(payload.key)
            events.append(Event(slot, kind, payload))

        try:
            events.append(Event(slot, "finished", run_unit(task, emit)))
        except _Lost:
            events.append(Event(slot, "lost", "its process died (signal 9)"))
        return events

    def close(self):
        pass


def _settings(**changes) -> SweepSettings:
    values = dict(shapes=(LayerShape("a", 128, 256), LayerShape("b", 64, 128)), m_grid=(1, 4, 16),
                  backends=(GOOD, MIXED), timer="fake_backends:FakeTimer", prune=PruneSettings(budget=None), keep=2,
                  screen_margin=1.5, screen_reps=2, final_reps=3)
    values.update(changes)
    return SweepSettings(**values)


def _device_run(tmp_path, settings, name="log.jsonl", device=DEVICE) -> DeviceRun:
    plan = SweepPlan.build(settings, interpreter_arch())
    fingerprint = Fingerprint(device, "CPU-interpreter", "t", "t", None, "0", plan.hash, (128, 128), "bfloat16")
    return DeviceRun(device, plan, ResultsLog.create(tmp_path / name, fingerprint))


def _make_task(run, unit, time_left_s):
    worker = WorkerSettings(device="cpu", timer="fake_backends:FakeTimer", seed=11)
    return UnitTask(unit, run.unit_settings(unit), run.plan.arch, run.unit_spaces(unit), run.unit_rows(unit),
                    worker, Timeouts(), workers=0, gpus_per_host=1, time_left_s=time_left_s)


def _plain_rows(tmp_path, settings):
    from gemm.tuner.search.runner import InProcessRunner

    run = _device_run(tmp_path, settings, "plain.jsonl")
    with run.log:
        return Sweep(run.plan, run.log, InProcessRunner(WorkerSettings("cpu", "fake_backends:FakeTimer", seed=11))
                     ).run()


def _schedule(tmp_path, executor, settings=None, **kwargs):
    settings = settings or _settings()
    run = _device_run(tmp_path, settings)
    shapes_done = []
    progress = RecordingProgress()
    scheduler = Scheduler([run], executor, _make_task, progress, on_shape_done=lambda r, s: shapes_done.append(
        (s.n, sorted({row.backend for row in r.shape_rows(s)}))), say=progress.lines.append, **kwargs)
    with run.log:
        scheduler.run()
    return scheduler, run, shapes_done, progress


def test_units_over_slots_log_what_one_sweep_logs(tmp_path):
    settings = _settings()
    executor = InlineExecutor(["a", "b", "c"])
    scheduler, run, shapes_done, progress = _schedule(tmp_path, executor, settings)
    plain = _plain_rows(tmp_path, settings)
    _, logged = read_log(run.log.path)
    assert sorted(r.key for r in logged) == sorted(r.key for r in plain)  # nothing lost, nothing twice
    assert select(logged) == select(plain)
    # One unit per (shape, backend), each started once; three slots used.
    assert sorted(label for _, label in executor.started) == sorted(u.label for u in run.units())
    assert {slot for slot, _ in executor.started} == {"a", "b", "c"}
    # A shape's config is written once, after both of its backends finished.
    assert sorted(shapes_done) == [(64, sorted([GOOD, MIXED])), (128, sorted([GOOD, MIXED]))]
    # The bar's total is right from the start, and ends where the work ends.
    full_estimate = Sweep(SweepPlan.build(settings, interpreter_arch()), None, None).estimate_work()
    assert progress.total_at_first_advance == full_estimate
    assert progress.total == progress.done > 0
    assert scheduler.lost == 0


def test_a_lost_unit_is_redone_on_another_slot_from_its_logged_rows(tmp_path):
    settings = _settings()
    label = f"N=128 K=256 {GOOD}"
    executor = InlineExecutor(["a", "b"], lose={(label, "a"): 4})
    scheduler, run, _, progress = _schedule(tmp_path, executor, settings)
    assert executor.started[0] == ("a", label)  # the longest units go first, in plan order on ties
    attempts = [(slot, rows) for slot, unit, rows in executor.attempt_rows if unit == label]
    assert [slot for slot, _ in attempts] == ["a", "b"]  # redone elsewhere
    first, second = attempts[0][1], attempts[1][1]
    assert len(first) == 4 and not set(first) & set(second)  # logged rows are not redone
    assert scheduler.lost == 1 and scheduler.finished_on[next(u for u in run.units() if u.label == label)] == "b"
    assert any("a lost its worker while tuning " + label in line for line in progress.lines)
    _, logged = read_log(run.log.path)
    plain = _plain_rows(tmp_path, settings)
    assert sorted(r.key for r in logged) == sorted(r.key for r in plain)
    assert select(logged) == select(plain)
    assert progress.total == progress.done


def test_a_unit_that_keeps_killing_its_workers_stops_the_sweep(tmp_path):
    label = f"N=64 K=128 {MIXED}"
    executor = InlineExecutor(["a", "b"], lose={(label, "a"): 0, (label, "b"): 0})
    with pytest.raises(DistributedError, match="lost its worker 2 times"):
        _schedule(tmp_path, executor, max_unit_losses=2)


def test_an_unexpected_error_stops_the_sweep_naming_the_unit(tmp_path):
    label = f"N=64 K=128 {GOOD}"
    with pytest.raises(DistributedError, match=re.escape(label) + ".*KeyError"):
        _schedule(tmp_path, InlineExecutor(["a"], error_on=label))


def test_each_gpu_model_runs_every_unit_into_its_own_log(tmp_path):
    settings = _settings(backends=(GOOD,))
    runs = [_device_run(tmp_path, settings, f"{name}.jsonl", name) for name in ("GPU_A", "GPU_B")]
    executor = InlineExecutor([("a0", "GPU_A"), ("b0", "GPU_B"), ("b1", "GPU_B")])
    written = []
    scheduler = Scheduler(runs, executor, _make_task, on_shape_done=lambda r, s: written.append((r.device_name, s.n)))
    scheduler.run()
    for run in runs:
        run.log.close()
    slot_device = {"a0": "GPU_A", "b0": "GPU_B", "b1": "GPU_B"}
    assert all(slot_device[slot] == unit.device_name for unit, slot in scheduler.finished_on.items())
    assert len(scheduler.finished_on) == 4  # 2 shapes x 1 backend on each of the two models
    assert sorted(written) == [("GPU_A", 64), ("GPU_A", 128), ("GPU_B", 64), ("GPU_B", 128)]
    plain = _plain_rows(tmp_path, settings)
    for run in runs:
        header, rows = read_log(run.log.path)
        assert header.device_name == run.device_name
        assert sorted(r.key for r in rows) == sorted(r.key for r in plain)


def test_cluster_backends_per_gpu_model(capsys):
    from gemm.tuner.distributed.placement import cluster_devices
    from gemm.tuner.distributed.ray_cluster import NodeReport
    from gemm.tuner.settings import SetupError

    h100, h200 = get_arch("H100"), get_arch("H200")
    reports = {h100.config_device_name: NodeReport(h100, {"triton": None, "cutlass": None, "cublas": None}),
               h200.config_device_name: NodeReport(h200, {"triton": None, "cutlass": "no nvcc", "cublas": None})}
    devices = cluster_devices(reports, backends=None, timer=None)
    assert devices[h100.config_device_name].backends == ("triton", "cutlass", "cublas")
    assert devices[h200.config_device_name].backends == ("triton", "cublas")
    assert devices[h200.config_device_name].target.arch == h200
    assert devices[h200.config_device_name].target.device == "cuda"
    assert "skipping backend 'cutlass' on NVIDIA_H200: no nvcc" in capsys.readouterr().err
    with pytest.raises(SetupError, match="'cutlass' cannot run on the cluster's NVIDIA_H200: no nvcc"):
        cluster_devices(reports, backends=("triton", "cutlass"), timer=None)


def test_time_limit_stops_before_work(tmp_path):
    executor = InlineExecutor(["a", "b"])
    with pytest.raises(TimeLimitReached):
        _schedule(tmp_path, executor, deadline=0.0)
    assert executor.started == []


def test_gpu_list_parsing():
    assert parse_gpu_list("all", 4) == (0, 1, 2, 3)
    assert parse_gpu_list("2", 4) == (0, 1)
    assert parse_gpu_list("0,1,3", 4) == (0, 1, 3)
    for text, message in (("5", "between 1 and 4"), ("0", "between 1 and 4"), ("0,4", "no GPU 4"),
                          ("1,1", "named twice"), ("gpu0", "expects 'all'"), ("", "expects 'all'")):
        with pytest.raises(ValueError, match=message):
            parse_gpu_list(text, 4)
    with pytest.raises(ValueError, match="no GPU is visible"):
        parse_gpu_list("all", 0)


def test_workers_and_threads_share_the_host():
    assert evaluation_workers(None, cpus=16, gpus_per_host=1, interpret=False) == 15
    assert evaluation_workers(None, cpus=16, gpus_per_host=8, interpret=False) == 1
    assert evaluation_workers(None, cpus=64, gpus_per_host=4, interpret=False) == 15
    assert evaluation_workers(3, cpus=64, gpus_per_host=4, interpret=False) == 3
    assert evaluation_workers(None, cpus=64, gpus_per_host=4, interpret=True) == 1
    assert worker_threads(cpus=16, gpus_per_host=1, workers=1) is None  # as a plain one-worker sweep
    assert worker_threads(cpus=64, gpus_per_host=4, workers=4) == 4
    assert worker_threads(cpus=2, gpus_per_host=3, workers=0) == 1


# --------------------------------------------------------------------------- worker processes via the CLI


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    return env


def _gemm(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemm.cli", *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _entries(root: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(root.glob(f"{DEVICE}/*.json")):
        entries = json.loads(path.read_text())["entries"]
        found[path.name] = {m: {key: e[key] for key in ("backend", "params", "us")} for m, e in entries.items()}
    return found


def test_gpus_give_the_plain_sweeps_configs_and_merge_with_files_on_disk(tmp_path):
    from gemm.configs import ConfigEntry, ConfigFile, Provenance, write_config

    sweep = ["tune", "--interpret", "--shape", "256,256", "--shape", "128,256", "--m", "1,16", "--seed", "3",
             "--timer", "test_distributed:ParamTimer", "--no-progress"]
    plain = _gemm(*sweep, "--out", tmp_path / "plain", "--log", tmp_path / "plain.jsonl")
    assert plain.returncode == 0, plain.stderr
    # A file already on disk with an entry at another M: the sweep's entries merge into it.
    kept = ConfigEntry("triton", {"block_m": 64, "block_n": 64, "block_k": 128, "group_m": 8, "num_warps": 4,
                                  "num_stages": 3}, 7.5)
    write_config(tmp_path / "multi", ConfigFile(DEVICE, "CPU-interpreter", 256, 256, (128, 128), "bfloat16",
                                                Provenance.current("measured"), {4096: kept}))
    multi = _gemm(*sweep, "--gpus", "3", "--workers", "1", "--out", tmp_path / "multi", "--log",
                  tmp_path / "multi.jsonl")
    assert multi.returncode == 0, multi.stderr
    assert "3 CPU stand-in worker(s)" in multi.stderr and "lost workers 0" in multi.stdout
    plain_entries, multi_entries = _entries(tmp_path / "plain"), _entries(tmp_path / "multi")
    assert len(plain_entries) == 2 and all(sorted(e) == ["1", "16"] for e in plain_entries.values())
    name_256 = next(name for name in multi_entries if name.startswith("N=256,"))
    assert multi_entries[name_256].pop("4096")["us"] == 7.5
    assert multi_entries == plain_entries
    _, plain_rows = read_log(tmp_path / "plain.jsonl")
    _, multi_rows = read_log(tmp_path / "multi.jsonl")
    assert sorted(r.key for r in multi_rows) == sorted(r.key for r in plain_rows)


def _slow_sweep(*extra) -> list[str]:
    shapes = [arg for n in (64, 128, 192, 256) for arg in ("--shape", f"{n},128")]
    return ["tune", "--interpret", "--backends", "fake_backends:SlowGoodBackend", "--timer",
            "fake_backends:SlowFakeTimer", *shapes, "--m", "1,2,4", "--seed", "5", "--no-progress", *extra]


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    """Rows of the slow sweep run plainly (one process), to compare distributed runs with."""
    from gemm.cli import main

    out = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")  # `--interpret` sets it; undo that afterwards
        assert main(_slow_sweep("--workers", "0", "--log", str(out / "clean.jsonl"), "--out", str(out))) == 0
    return read_log(out / "clean.jsonl")[1]


def _log_rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


class _Lines:
    """Collects a process's stderr lines as they come."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def join(self) -> str:
        self._thread.join(timeout=30)
        return "\n".join(self.lines)


def _wait_for(predicate, process, what: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert process.poll() is None, f"the sweep ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_killed_gpu_worker_loses_nothing_and_its_unit_is_redone_elsewhere(tmp_path, slow_reference):
    log = tmp_path / "multi.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "gemm.cli", *_slow_sweep(
        "--gpus", "3", "--workers", "0", "--log", str(log), "--out", str(tmp_path / "multi"))],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr, stdout_lines = _Lines(process.stderr), _Lines(process.stdout)
    try:
        _wait_for(lambda: any("(pid" in line for line in stderr.lines), process, "the workers started")
        pids = dict(re.findall(r"(cpu \d+) \(pid (\d+)\)", next(l for l in stderr.lines if "(pid" in l)))
        assert sorted(pids) == ["cpu 0", "cpu 1", "cpu 2"]
        _wait_for(lambda: _log_rows(log) >= 6, process, "rows were logged")
        os.kill(int(pids["cpu 0"]), signal.SIGKILL)
        process.wait(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    err, stdout = stderr.join(), stdout_lines.join()
    assert process.returncode == 0, err
    lost = re.search(r"cpu 0 lost its worker while tuning (N=\d+ K=\d+ \S+) \(its process died \(signal 9\)\)", err)
    assert lost, err
    redone = re.search(re.escape(lost.group(1)) + r" finished on (cpu \d) after 1 lost worker", err)
    assert redone and redone.group(1) != "cpu 0", err
    assert "lost workers 1" in stdout

    _, rows = read_log(log)
    reference = slow_reference
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys)), "a row was logged twice"
    assert set(keys) == {r.key for r in reference}, "the log differs from a one-worker sweep's"
    assert select(rows) == select(reference)


def test_a_killed_driver_resumes_with_more_gpus(tmp_path, slow_reference):
    log, out = tmp_path / "killed.jsonl", tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "gemm.cli", *_slow_sweep(
        "--gpus", "2", "--workers", "0", "--log", str(log), "--out", str(out))],
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: _log_rows(log) >= 8, process, "rows were logged")
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers
    finally:
        process.wait(timeout=60)
    _, before = read_log(log)
    resumed = _gemm(*_slow_sweep("--gpus", "3", "--workers", "0", "--log", log, "--out", out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    _, after = read_log(log)
    reference = slow_reference
    keys = [r.key for r in after]
    assert len(keys) == len(set(keys)) and set(keys) == {r.key for r in reference}
    assert [r.key for r in after[:len(before)]] == [r.key for r in before]  # append-only
    assert select(after) == select(reference)


def test_gpus_usage_errors(tmp_path, capsys, monkeypatch):
    from gemm.cli import main

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # `--interpret` sets it; undo that after the test
    base = ["tune", "--interpret", "--out", str(tmp_path)]
    assert main([*base, "--gpus", "two"]) == 2
    assert "--gpus expects 'all'" in capsys.readouterr().err
    assert main([*base, "--gpus", "1,1"]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main([*base, "--gpus", "2", "--workers", "-1"]) == 2
    assert "argument --workers: expected an integer >= 0" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main([*base, "--ray"]) == 2
    assert "pip install 'gemm[ray]'" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message given without a GPU")
def test_gpus_without_a_gpu_says_so(capsys):
    from gemm.cli import main

    assert main(["tune", "--gpus", "all"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
