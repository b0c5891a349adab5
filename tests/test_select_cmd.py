"""``gemm select``: config files re-derived from results logs, with the logs' provenance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from gemm.cli import main
from gemm.configs import load_config_file
from gemm.kernels.triton_fp8 import TritonParams
from gemm.tuner.results.log import Fingerprint, ResultsLog
from gemm.tuner.results.measurement import Measurement

FAST = dataclasses.asdict(TritonParams(block_m=16, block_n=64))
SLOW = dataclasses.asdict(TritonParams(block_m=64, block_n=128))


def _fingerprint(device="NVIDIA_H200", space="a" * 64) -> Fingerprint:
    return Fingerprint(device, "H200", "2.11.0+cu130", "3.6.0", "4.2.0.0", "0.1.0", space, (128, 128), "bfloat16")


def _write(path: Path, fingerprint: Fingerprint, timings: dict) -> Path:
    """A log holding one FINAL OK row per ((N, K, M), params) -> us."""
    with ResultsLog.create(path, fingerprint) as log:
        for ((n, k, m), params), us in timings.items():
            log.append(Measurement("triton", json.loads(params), n, k, m, "final", "OK", us=us))
    return path


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def test_select_writes_the_logs_picks_with_their_versions(tmp_path, capsys):
    log = _write(tmp_path / "a.jsonl", _fingerprint(), {
        ((576, 7168, 1), _key(FAST)): 5.0, ((576, 7168, 1), _key(SLOW)): 9.0,
        ((576, 7168, 64), _key(FAST)): 12.0, ((576, 7168, 64), _key(SLOW)): 8.0})
    assert main(["select", str(log), "--out", str(tmp_path / "cfg")]) == 0
    path, = (tmp_path / "cfg" / "NVIDIA_H200").glob("N=576,K=7168,*.json")
    config = load_config_file(path)
    assert config.entries[1].params == FAST and config.entries[64].params == SLOW
    assert config.entries[1].us == 5.0
    provenance = config.provenance
    assert (provenance.kind, provenance.torch, provenance.triton, provenance.cutlass) == (
        "measured", "2.11.0+cu130", "3.6.0", "4.2.0.0")  # the log's software, not this process's
    assert "N=576 K=7168: 2 M values" in capsys.readouterr().out


def test_a_later_logs_timings_replace_the_earlier_ones_at_the_points_it_timed(tmp_path):
    first = _write(tmp_path / "first.jsonl", _fingerprint(), {
        ((576, 7168, 1), _key(FAST)): 5.0, ((576, 7168, 1), _key(SLOW)): 9.0,
        ((576, 7168, 64), _key(FAST)): 5.0, ((576, 7168, 64), _key(SLOW)): 9.0})
    # A re-tune of M=64 only (another search space): its timings win there, M=1 keeps the first log's.
    retune = _write(tmp_path / "retune.jsonl", _fingerprint(space="b" * 64), {
        ((576, 7168, 64), _key(FAST)): 20.0, ((576, 7168, 64), _key(SLOW)): 7.0})
    with ResultsLog.create(tmp_path / "untimed.jsonl", _fingerprint()) as log:  # rejections only: no timing
        log.append(Measurement("triton", FAST, 576, 7168, 1, "space", "INVALID", "too much shared memory"))
    assert main(["select", str(first), str(retune), str(tmp_path / "untimed.jsonl"),
                 "--out", str(tmp_path / "cfg")]) == 0
    path, = (tmp_path / "cfg" / "NVIDIA_H200").glob("*.json")
    entries = load_config_file(path).entries
    assert entries[1].params == FAST and entries[1].us == 5.0
    assert entries[64].params == SLOW and entries[64].us == 7.0


def test_select_refuses_logs_of_another_device_and_missing_files(tmp_path, capsys):
    h200 = _write(tmp_path / "h200.jsonl", _fingerprint(), {((576, 7168, 1), _key(FAST)): 5.0})
    h100 = _write(tmp_path / "h100.jsonl", _fingerprint(device="NVIDIA_H100_80GB_HBM3"),
                  {((576, 7168, 1), _key(FAST)): 6.0})
    assert main(["select", str(h200), str(h100), "--out", str(tmp_path / "cfg")]) == 2
    assert "another device or software" in capsys.readouterr().err
    assert main(["select", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "cfg")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "cfg").exists()
