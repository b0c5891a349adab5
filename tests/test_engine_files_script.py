"""scripts/tune_engine_files.sh on the CPU (its documented dry run through the Triton interpreter): both
engines end to end, a run that stops before a sweep (SWEEPS, as at its time limit), packs what it has
and resumes, and a sweep on a fresh output folder that continues from a shipped log (SEED_LOGS)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from interpreter_support import requires_interpreter

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "tune_engine_files.sh"
DEVICE = "CPU_interpreter"
CONFIG = {"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
                "num_stages": 2}}


@pytest.fixture
def baselines(tmp_path) -> Path:
    """Shipped-file folders of both engines for the interpreter 'device', one file per dry-run shape."""
    root = tmp_path / "baselines"
    for folder, sep in (("vllm-0.33.0", ","), ("sglang-0.5.23", ", ")):
        device = root / folder / DEVICE
        device.mkdir(parents=True)
        for n, k in ((128, 256), (256, 128)):
            name = f"N={n},K={k},device_name={DEVICE},dtype=fp8_w8a8,block_shape=[128{sep}128].json"
            (device / name).write_text(json.dumps(CONFIG))
    return root


def run_script(out: Path, baselines: Path, limit: int, *engines: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEVICE": DEVICE, "BASELINE_ROOT": str(baselines), "TP8_ARGS": "--shape 128,256",
           "EXTRA_ARGS": "--shape 256,128", "M_ARGS": "--m 1,16", "TIME_LIMIT": str(limit),
           "TUNE_EXTRA_ARGS": "--interpret --workers 0 --budget 1", "PYTHON": sys.executable, **env_vars}
    return subprocess.run(["bash", str(SCRIPT), str(out), *engines], env=env, capture_output=True, text=True,
                          timeout=600)


@requires_interpreter
def test_both_engines_end_to_end(tmp_path, baselines):
    out = tmp_path / "out"
    result = run_script(out, baselines, 500, "vllm", "sglang")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (out / "files" / "vllm").iterdir()) == [
        f"N=128,K=256,device_name={DEVICE},dtype=fp8_w8a8,block_shape=[128,128].json",
        f"N=256,K=128,device_name={DEVICE},dtype=fp8_w8a8,block_shape=[128,128].json"]
    assert all("[128, 128]" in p.name for p in (out / "files" / "sglang").iterdir())
    summary = (out / "SUMMARY.md").read_text()
    assert "## vllm against vllm-0.33.0" in summary and "## sglang against sglang-0.5.23" in summary
    # each sweep keeps its own report, named after its log
    assert {p.name for p in (out / "vllm" / "reports").glob("*.md")} == {
        f"{DEVICE}-vllm-tp8-vs-vllm-0.33.0.md", f"{DEVICE}-vllm-tp1-tp4-vs-vllm-0.33.0.md"}
    with tarfile.open(out / "engine_files.tgz") as archive:
        names = archive.getnames()
    assert "SUMMARY.md" in names and any(name.endswith("-sglang-tp8.jsonl.gz") for name in names)


@requires_interpreter
def test_a_stopped_run_packs_what_it_has_and_resumes(tmp_path, baselines):
    out = tmp_path / "out"
    first = run_script(out, baselines, 500, "vllm", SWEEPS="tp8")  # stops where tp1-tp4 would start
    assert first.returncode == 3, first.stderr[-2000:]
    assert "run again" in first.stderr and (out / "vllm" / ".done-tp8").exists()
    with tarfile.open(out / "engine_files-partial.tgz") as archive:
        names = archive.getnames()
    assert f"vllm/logs/{DEVICE}-vllm-tp8.jsonl" in names and "vllm/.done-tp8" in names
    second = run_script(out, baselines, 500, "vllm")
    assert second.returncode == 0, second.stderr[-2000:]
    walls = (out / "vllm" / "wall_times.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in walls] == ["vllm tp8", "vllm tp1-tp4"]  # tp8 was not redone
    assert (out / "files" / "vllm").is_dir() and (out / "SUMMARY.md").is_file()


@requires_interpreter
def test_a_sweep_continues_from_a_seeded_log(tmp_path, baselines):
    first_out, seeds, out = tmp_path / "first", tmp_path / "seeds", tmp_path / "out"
    first = run_script(first_out, baselines, 500, "vllm", SWEEPS="tp8")
    assert first.returncode == 3, first.stderr[-2000:]
    log_name = f"{DEVICE}-vllm-tp8.jsonl"
    rows = (first_out / "vllm" / "logs" / log_name).read_bytes()
    seeds.mkdir()
    with gzip.open(seeds / f"{log_name}.gz", "wb") as seed:
        seed.write(rows)
    second = run_script(out, baselines, 500, "vllm", SWEEPS="tp8", SEED_LOGS=str(seeds))
    assert second.returncode == 3, second.stderr[-2000:]
    assert "continues from" in second.stderr
    row_count = len(rows.splitlines())
    assert "rows already there" in second.stdout + second.stderr
    assert (out / "vllm" / "logs" / log_name).read_bytes()[:len(rows)] == rows  # the seeded rows, kept
    assert len((out / "vllm" / "logs" / log_name).read_bytes().splitlines()) == row_count  # nothing redone
    assert (out / "vllm" / ".done-tp8").exists()


def test_a_missing_seed_folder_is_refused(tmp_path, baselines):
    result = run_script(tmp_path / "out", baselines, 500, "vllm", SEED_LOGS=str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "SEED_LOGS" in result.stderr and "not a directory" in result.stderr
    assert not (tmp_path / "out" / "vllm").exists()  # refused before any sweep
