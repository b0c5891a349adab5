"""Engine files engines would run wrongly are refused, and imports never lose measurements."""

from __future__ import annotations

import json

import pytest

from gemm.cli import main
from gemm.configs import (
    ConfigEntry, ConfigError, ConfigFile, Provenance, export_config, import_config, load_config_file,
    validate_config_file, write_config,
)

DEVICE = "NVIDIA_H100_80GB_HBM3"
N, K = 7168, 2048
NAME = f"N={N},K={K},device_name={DEVICE},dtype=fp8_w8a8,block_shape=[128,128].json"
GOOD = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
        "num_stages": 3}


def _triton(block_m: int = 64, **extra) -> dict:
    return {"block_m": block_m, "block_n": 128, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 3,
            **extra}


@pytest.mark.parametrize("key, value, allowed", [
    ("BLOCK_SIZE_K", 100, "divides the scale block 128"),
    ("BLOCK_SIZE_K", 256, "divides the scale block 128"),
    ("num_warps", 3, "a power of two up to 32"),
    ("BLOCK_SIZE_M", 17, "a power of two from 16 to 256"),
    ("BLOCK_SIZE_N", 8, "a power of two from 16 to 256"),
])
def test_import_refuses_values_engines_cannot_run(tmp_path, capsys, key, value, allowed):
    src = tmp_path / NAME
    src.write_text(json.dumps({"1": GOOD, "64": {**GOOD, key: value}}))
    with pytest.raises(ConfigError, match=f"M=64: {key}={value} must be .*{allowed}"):
        import_config(src, tmp_path / "root")
    assert not (tmp_path / "root").exists()
    assert any(f"M=64: {key}={value}" in problem for problem in validate_config_file(src))
    assert main(["import", str(src), "--out", str(tmp_path / "root")]) == 1
    err = capsys.readouterr().err
    assert f"M=64: {key}={value}" in err and allowed in err and "Traceback" not in err
    assert not list((tmp_path / "root").rglob("*.json"))


def test_export_refuses_a_native_entry_engines_cannot_run(tmp_path, capsys):
    config = ConfigFile(DEVICE, "H100", N, K, (128, 128), "bfloat16", Provenance.current("measured"),
                        {1: ConfigEntry("triton", _triton(16), 5.0), 16: ConfigEntry("triton", _triton(17), 6.0)})
    src = write_config(tmp_path / "cfg", config)
    with pytest.raises(ConfigError, match=r"M=16: BLOCK_SIZE_M=17 \(the entry's block_m\) must be"):
        export_config(src, "vllm", tmp_path / "vllm", stand_ins=True)
    assert main(["export", "--format", "sglang", str(src), "--out", str(tmp_path / "sglang"), "--stand-ins"]) == 1
    err = capsys.readouterr().err
    assert "M=16: BLOCK_SIZE_M=17" in err and "one of 16, 32, 64, 128, 256" in err
    assert not list(tmp_path.glob("*/N=*.json"))  # nothing written for either engine


def _measured_root(tmp_path) -> ConfigFile:
    config = ConfigFile(DEVICE, "H100", N, K, (128, 128), "bfloat16", Provenance.current("measured"),
                        {m: ConfigEntry("cutlass" if m > 8 else "triton", {} if m > 8 else _triton(16), 9.0)
                         for m in (1, 8, 64, 256)})
    write_config(tmp_path / "root", config)
    return config


def test_gemm_import_keeps_measured_entries_and_says_so(tmp_path, capsys):
    measured = _measured_root(tmp_path)
    src = tmp_path / "engine" / NAME
    src.parent.mkdir()
    src.write_text(json.dumps({str(m): GOOD for m in (1, 8, 64, 256, 4096)}))
    assert main(["import", str(src), "--out", str(tmp_path / "root")]) == 0
    out = capsys.readouterr().out
    assert "kept 4 measured entries (M=1,8,64,256) over the imported ones" in out and "--force" in out
    (path,) = (tmp_path / "root").rglob("*.json")
    merged = load_config_file(path)
    kept = {m: (merged.entries[m].backend, merged.entries[m].params, merged.entries[m].us) for m in measured.entries}
    assert kept == {m: (e.backend, e.params, e.us) for m, e in measured.entries.items()}
    assert merged.provenance_of(4096).kind == "imported"   # a new M is added
    assert all(merged.provenance_of(m).kind == "measured" for m in measured.entries)

    assert main(["import", str(src), "--out", str(tmp_path / "root"), "--force"]) == 0
    assert "kept" not in capsys.readouterr().out
    forced = load_config_file(path)
    assert all(forced.provenance_of(m).kind == "imported" for m in forced.entries)


def test_imported_beats_predicted_but_not_the_reverse(tmp_path):
    def file_of(kind: str, block_m: int) -> ConfigFile:
        provenance = Provenance.current(kind, "model-1" if kind == "predicted" else None)
        return ConfigFile(DEVICE, "H100", N, K, (128, 128), "bfloat16", provenance,
                          {1: ConfigEntry("triton", _triton(block_m), None)})

    path = write_config(tmp_path, file_of("predicted", 16))
    write_config(tmp_path, file_of("imported", 32))
    assert load_config_file(path).entries[1].params["block_m"] == 32
    with pytest.warns(UserWarning, match="kept 1 imported entry"):
        write_config(tmp_path, file_of("predicted", 64))
    assert load_config_file(path).entries[1].params["block_m"] == 32
    write_config(tmp_path, file_of("measured", 128))
    assert load_config_file(path).entries[1].params["block_m"] == 128
