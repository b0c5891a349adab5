"""Default outputs go to the user config directory, never into the installed package; the op reads that
directory before the shipped configs."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest

from gemm import dispatch, envs
from gemm.cli import main
from gemm.configs import ConfigEntry, ConfigFile, Provenance, config_path, load_config_file, write_config
from gemm.problem import GemmProblem

SHIPPED = Path(__file__).resolve().parents[1] / "tuned_configs"
N, K = 256, 256


def _digest(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def test_user_config_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMM_CONFIG_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert envs.user_config_root() == tmp_path / "home" / ".local" / "share" / "gemm" / "tuned_configs"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert envs.user_config_root() == tmp_path / "data" / "gemm" / "tuned_configs"
    assert envs.user_data_dir() == tmp_path / "data" / "gemm"
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(tmp_path / "mine"))
    assert envs.config_root() == tmp_path / "mine"
    assert envs.config_roots() == (tmp_path / "mine", envs.shipped_config_root())
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(envs.shipped_config_root()))
    assert envs.config_roots() == (envs.shipped_config_root(),)  # named twice, read once


def test_tune_without_out_writes_into_the_user_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    before = _digest(SHIPPED)
    assert main(["tune", "--interpret", "--backends", "fake_backends:GoodBackend", "--timer",
                 "fake_backends:FakeTimer", "--shape", "128,256", "--m", "1", "--workers", "0",
                 "--no-progress"]) == 0
    user = tmp_path / "data" / "gemm" / "tuned_configs"
    assert list((user / "logs").glob("tune-CPU_interpreter-*.jsonl"))
    assert _digest(SHIPPED) == before


def test_predict_without_out_leaves_the_shipped_files_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    shipped = config_path(SHIPPED, "NVIDIA_H20", 7168, 2048)
    assert shipped.is_file()
    before = _digest(SHIPPED)
    assert main(["predict", "--arch", "H20", "--shape", "7168,2048", "--m", "1,2"]) == 0
    written = config_path(tmp_path / "data" / "gemm" / "tuned_configs", "NVIDIA_H20", 7168, 2048)
    assert sorted(load_config_file(written).entries) == [1, 2]
    assert _digest(SHIPPED) == before


def _config(entries: dict[int, dict], kind: str = "measured") -> ConfigFile:
    return ConfigFile("CPU_interpreter", "CPU_interpreter", N, K, (128, 128), "bfloat16",
                      Provenance.current(kind), {m: ConfigEntry("triton", p, 1.0) for m, p in entries.items()})


def _params(block_m: int) -> dict:
    return {"block_m": block_m, "block_n": 64, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 3}


@pytest.fixture
def roots(tmp_path, monkeypatch):
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(user))
    monkeypatch.setattr(envs, "shipped_config_root", lambda: shipped)
    dispatch.clear_caches()
    yield user, shipped
    dispatch.clear_caches()


def _choose(m: int):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, params = dispatch.choose(GemmProblem(m, N, K), "cpu", None)
    return params, [str(w.message) for w in caught]


def test_the_op_reads_the_user_directory_before_the_shipped_configs(roots):
    user, shipped = roots
    write_config(shipped, _config({1: _params(16), 4096: _params(128)}))
    assert _choose(1)[0].block_m == 16  # only the shipped file so far
    write_config(user, _config({1: _params(32), 16: _params(64)}))
    dispatch.clear_caches()
    assert _choose(1)[0].block_m == 32      # the user's entry wins at its M
    assert _choose(16)[0].block_m == 64
    assert _choose(4000)[0].block_m == 128  # the shipped file fills M the user did not tune


def test_a_corrupt_user_file_falls_back_to_the_shipped_one_with_a_warning(roots):
    user, shipped = roots
    write_config(shipped, _config({1: _params(16)}))
    bad = config_path(user, "CPU_interpreter", N, K)
    bad.parent.mkdir(parents=True)
    bad.write_text("{ not json")
    params, warned = _choose(1)
    assert params.block_m == 16
    assert len(warned) == 1 and str(bad) in warned[0] and "gemm validate" in warned[0]


def test_a_config_dir_naming_a_file_is_said_by_the_op(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(afile))
    dispatch.clear_caches()
    try:
        _, warned = _choose(1)
    finally:
        dispatch.clear_caches()
    assert len(warned) == 1 and f"{afile} is a file, not a config directory" in warned[0]
