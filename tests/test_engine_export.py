"""Engine files from measurements of the engine's kernel only, and their installation into an engine's package:
found without importing it, written atomically, every replaced file kept, named as each engine spells it."""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys
import warnings
from pathlib import Path

import pytest

from gemm.cli import main
from gemm.configs import (
    ConfigEntry, ConfigError, ConfigFile, ConfigWarning, NoEngineMeasurements, Provenance, export_config, write_config,
)
from gemm.configs import store
from gemm.configs.install import BACKUP_DIR, EngineNotFound, engine_config_dir

REPO = Path(__file__).resolve().parents[1]
DEVICE, N, K = "NVIDIA_H200", 7168, 2048
VLLM_NAME = f"N={N},K={K},device_name={DEVICE},dtype=fp8_w8a8,block_shape=[128,128].json"
SGLANG_NAME = f"N={N},K={K},device_name={DEVICE},dtype=fp8_w8a8,block_shape=[128, 128].json"
KEYS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")
SHIPPED = {"1": dict(zip(KEYS, (16, 64, 128, 1, 4, 3))), "4096": dict(zip(KEYS, (64, 128, 128, 1, 4, 3)))}


def classic(block_m=64, block_n=128, group_m=8, stages=3) -> dict:
    return dict(block_m=block_m, block_n=block_n, block_k=128, group_m=group_m, num_warps=4, num_stages=stages)


def triton(block_m=64, split_k=1) -> dict:
    return dict(block_m=block_m, block_n=128, block_k=128, group_m=8, num_warps=4, num_stages=3, split_k=split_k,
                use_tma=False, persistent=False)


def native(root: Path, entries: dict, kind: str = "measured") -> Path:
    provenance = Provenance(kind, "0.1.0", "2.11", "3.6", None, "2025-01-01T00:00:00+00:00")
    return write_config(root, ConfigFile(DEVICE, "H200", N, K, (128, 128), "bfloat16", provenance, entries))


def test_export_writes_only_measured_entries_of_the_engines_kernel(tmp_path):
    src = native(tmp_path / "cfg", {
        1: ConfigEntry("vllm_triton", classic(16, 64), 6.0),
        16: ConfigEntry("triton", triton(16, split_k=4), 5.0, engine_triton=triton(16)),  # a stand-in
        64: ConfigEntry("vllm_triton", classic(64, 64), 9.0),
        256: ConfigEntry("sglang_triton", classic(64, 128), 12.0),  # the other engine's kernel
        1024: ConfigEntry("cutlass", {"tile_m": 128}, 40.0),
    })
    with pytest.warns(ConfigWarning) as record:
        out = export_config(src, "vllm", tmp_path / "vllm")
    assert json.loads(out.read_text()) == {"1": dict(zip(KEYS, (16, 64, 128, 8, 4, 3))),
                                           "64": dict(zip(KEYS, (64, 64, 128, 8, 4, 3)))}
    message = str(record[0].message)
    for m, backend in ((16, "triton"), (256, "sglang_triton"), (1024, "cutlass")):
        assert f"M={m}: measured {backend} entry, no measurement of vLLM's kernel; left out" in message
    with pytest.warns(ConfigWarning, match="M=1,64: measured in vLLM's kernel, not SGLang's"):
        both = export_config(src, "sglang", tmp_path / "sglang", stand_ins=True)
    assert both.name == SGLANG_NAME and list(json.loads(both.read_text())) == ["1", "16", "64", "256"]


def test_entries_that_were_not_measured_here_are_no_measurements(tmp_path):
    imported = native(tmp_path / "imported", {1: ConfigEntry("vllm_triton", classic(), None)}, kind="imported")
    with pytest.raises(NoEngineMeasurements, match=r"imported vllm_triton"):
        export_config(imported, "vllm", tmp_path / "out")
    untimed = native(tmp_path / "untimed", {1: ConfigEntry("vllm_triton", classic(), None)})
    with pytest.raises(NoEngineMeasurements, match="no entry was measured in vLLM's kernel"):
        export_config(untimed, "vllm", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_gpu_without_engine_measurements_is_said_and_nothing_is_written(tmp_path, capsys):
    h20 = REPO / "tuned_configs" / "NVIDIA_H20"
    assert main(["export", "--format", "vllm", str(h20), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    files = sorted(h20.glob("*.json"))
    assert err.count("no entry was measured in vLLM's kernel") == len(files) and "on NVIDIA_H20" in err
    assert "gemm tune --engine vllm" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.json"))


def test_stand_ins_never_replace_an_engine_file_unless_forced(tmp_path, capsys):
    src = native(tmp_path / "cfg", {1: ConfigEntry("triton", triton(16), 5.0)})
    out = tmp_path / "vllm"
    out.mkdir()
    (out / VLLM_NAME).write_text(json.dumps(SHIPPED))
    with pytest.raises(ConfigError, match="the engine file there is kept"):
        export_config(src, "vllm", out, stand_ins=True)
    assert json.loads((out / VLLM_NAME).read_text()) == SHIPPED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        export_config(src, "vllm", out, stand_ins=True, force=True)
    assert list(json.loads((out / VLLM_NAME).read_text())) == ["1"]
    measured = native(tmp_path / "m", {1: ConfigEntry("vllm_triton", classic(16, 32), 5.0)})
    export_config(measured, "vllm", out)  # a measured file replaces what is there
    assert json.loads((out / VLLM_NAME).read_text())["1"]["BLOCK_SIZE_N"] == 32


def fake_engine(site: Path, package: str, config_dir: tuple[str, ...], shipped_name: str) -> Path:
    """A package that fails if imported, with its config folder holding one shipped file."""
    root = site / package
    root.mkdir(parents=True)
    (root / "__init__.py").write_text("raise RuntimeError('the engine was imported')\n")
    folder = root.joinpath(*config_dir)
    folder.mkdir(parents=True)
    (folder / shipped_name).write_text(json.dumps(SHIPPED, indent=4))
    (folder / "N=1,K=1,device_name=OTHER,dtype=fp8_w8a8,block_shape=[128,128].json").write_text("{}")
    return folder


VLLM_DIR = ("model_executor", "layers", "quantization", "utils", "configs")
SGLANG_DIR = ("kernels", "ops", "gemm", "configs")


def test_the_engines_folder_is_found_without_importing_it(tmp_path, monkeypatch):
    site = tmp_path / "site"
    folder = fake_engine(site, "vllm", VLLM_DIR, VLLM_NAME)
    assert engine_config_dir("vllm", [site]) == folder
    assert engine_config_dir("vllm", [site / "vllm"]) == folder  # the package folder itself
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert engine_config_dir("vllm").resolve() == folder.resolve()
    assert "vllm" not in sys.modules
    with pytest.raises(EngineNotFound, match="no SGLang package"):
        engine_config_dir("sglang", [site])
    (site / "sglang").mkdir()
    (site / "sglang" / "__init__.py").write_text("")
    with pytest.raises(EngineNotFound, match="not its config folder"):
        engine_config_dir("sglang", [site])


@pytest.mark.parametrize("fmt, package, config_dir, name", [
    ("vllm", "vllm", VLLM_DIR, VLLM_NAME), ("sglang", "sglang", SGLANG_DIR, SGLANG_NAME)])
def test_install_replaces_the_engines_file_and_keeps_a_backup(tmp_path, capsys, fmt, package, config_dir, name):
    folder = fake_engine(tmp_path / "site", package, config_dir, name)
    src = native(tmp_path / "cfg", {1: ConfigEntry(f"{fmt}_triton", classic(16, 32), 5.0),
                                    64: ConfigEntry(f"{fmt}_triton", classic(64, 64), 9.0)})
    args = ["export", "--format", fmt, str(src), "--install", "--engine-path", str(tmp_path / "site")]
    assert main(args) == 0
    out = capsys.readouterr().out
    installed = json.loads((folder / name).read_text())
    assert list(installed) == ["1", "64"] and installed["1"]["BLOCK_SIZE_N"] == 32
    (backup,) = (folder / BACKUP_DIR).rglob("*.json")
    assert backup.name == name and json.loads(backup.read_text()) == SHIPPED
    assert f"the old file is kept as {backup}" in out
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert main(args) == 0  # the same file again: left alone, no second backup
    assert "(unchanged)" in capsys.readouterr().out
    assert len(list((folder / BACKUP_DIR).rglob("*.json"))) == 1


def test_install_of_stand_ins_keeps_the_engines_file(tmp_path, capsys):
    folder = fake_engine(tmp_path / "site", "vllm", VLLM_DIR, VLLM_NAME)
    src = native(tmp_path / "cfg", {1: ConfigEntry("triton", triton(16), 5.0)})
    base = ["export", "--format", "vllm", str(src), "--install", "--engine-path", str(tmp_path / "site")]
    assert main(base) == 1
    assert "no entry was measured" in capsys.readouterr().err
    assert main(base + ["--stand-ins"]) == 1
    assert "it is kept (--force replaces it, keeping a backup)" in capsys.readouterr().err
    assert json.loads((folder / VLLM_NAME).read_text()) == SHIPPED
    assert main(base + ["--stand-ins", "--force"]) == 0
    assert list(json.loads((folder / VLLM_NAME).read_text())) == ["1"]
    assert json.loads(next((folder / BACKUP_DIR).rglob("*.json")).read_text()) == SHIPPED


def test_a_failed_install_leaves_the_engines_file_and_no_temp_file(tmp_path, monkeypatch, capsys):
    folder = fake_engine(tmp_path / "site", "vllm", VLLM_DIR, VLLM_NAME)
    src = native(tmp_path / "cfg", {1: ConfigEntry("vllm_triton", classic(16, 32), 5.0)})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.json, "dump", full)
    assert main(["export", "--format", "vllm", str(src), "--install", "--engine-path", str(tmp_path / "site")]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and VLLM_NAME in err and "Traceback" not in err
    assert json.loads((folder / VLLM_NAME).read_text()) == SHIPPED
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
