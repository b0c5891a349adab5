"""The results log: header, append-only rows, torn lines, resume checks, DataFrame view."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gemm.tuner.results.log import Fingerprint, LogFormatError, LogMismatchError, ResultsLog, read_log
from gemm.tuner.results.measurement import Measurement, Stage, Status, short_params
from gemm.tuner.results.tables import to_dataframe


def _fingerprint(**changes) -> Fingerprint:
    base = Fingerprint(device_name="NVIDIA_H100_80GB_HBM3", arch="H100", torch="2.11.0", triton="3.6.0",
                       cutlass="4.2.0", tool_version="0.1.0", space_hash="abc123", block_shape=(128, 128),
                       out_dtype="bfloat16")
    return dataclasses.replace(base, **changes)


def _row(m=1, stage=Stage.SCREEN, status=Status.OK, us=10.0, variant=0) -> Measurement:
    row = Measurement("triton", {"block_m": 16, "block_n": 64, "block_k": 128, "variant": variant}, 7168, 2048, m,
                      stage, status)
    return row.with_timing(us, 2 * m * 7168 * 2048) if us is not None else row


def test_log_round_trip_and_header(tmp_path):
    path = tmp_path / "log.jsonl"
    with ResultsLog.create(path, _fingerprint()) as log:
        log.append(_row(1))
        log.append(_row(2, status=Status.WRONG_RESULT, us=None))
    header = json.loads(path.read_text().splitlines()[0])
    assert header["kind"] == "gemm-tune-log" and header["device_name"] == "NVIDIA_H100_80GB_HBM3"
    assert header["space_hash"] == "abc123" and header["torch"] == "2.11.0"
    fingerprint, rows = read_log(path)
    assert fingerprint == _fingerprint()
    assert [r.m for r in rows] == [1, 2]
    assert rows[0].us == 10.0 and rows[0].tflops == pytest.approx(2 * 7168 * 2048 / 10e-6 / 1e12)
    assert rows[1].status == Status.WRONG_RESULT and rows[1].us is None


def test_duplicate_rows_are_refused(tmp_path):
    with ResultsLog.create(tmp_path / "log.jsonl", _fingerprint()) as log:
        log.append(_row(1))
        with pytest.raises(ValueError, match="already logged"):
            log.append(_row(1, us=12.0))


def test_resume_drops_a_torn_last_line_and_appends_cleanly(tmp_path):
    path = tmp_path / "log.jsonl"
    with ResultsLog.create(path, _fingerprint()) as log:
        log.append(_row(1))
    with open(path, "a") as f:
        f.write('{"backend": "triton", "par')  # a kill in the middle of a write
    _, rows = read_log(path)
    assert len(rows) == 1
    log, rows = ResultsLog.resume(path, _fingerprint())
    with log:
        assert len(rows) == 1 and rows[0].key in log
        log.append(_row(2))
    _, rows = read_log(path)
    assert [r.m for r in rows] == [1, 2]


@pytest.mark.parametrize("field, value", [("device_name", "NVIDIA_H200"), ("space_hash", "other"),
                                          ("triton", "3.5.0"), ("out_dtype", "float16")])
def test_resume_refuses_another_device_space_or_stack(tmp_path, field, value):
    path = tmp_path / "log.jsonl"
    ResultsLog.create(path, _fingerprint()).close()
    with pytest.raises(LogMismatchError, match=field):
        ResultsLog.resume(path, _fingerprint(**{field: value}))


def test_tool_version_alone_does_not_block_resume(tmp_path):
    path = tmp_path / "log.jsonl"
    ResultsLog.create(path, _fingerprint()).close()
    log, rows = ResultsLog.resume(path, _fingerprint(tool_version="0.2.0"))
    log.close()
    assert rows == []


def test_create_keeps_an_older_log(tmp_path):
    path = tmp_path / "log.jsonl"
    with ResultsLog.create(path, _fingerprint()) as log:
        log.append(_row(1))
    ResultsLog.create(path, _fingerprint(space_hash="new")).close()
    assert read_log(path)[0].space_hash == "new"
    assert len(read_log(tmp_path / "log.1.jsonl")[1]) == 1


def test_unreadable_logs_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"kind": "something else"}\n')
    with pytest.raises(LogFormatError, match="bad.jsonl:1"):
        read_log(path)
    ResultsLog.create(path, _fingerprint()).close()
    with open(path, "a") as f:
        f.write("not json\n")
    with pytest.raises(LogFormatError, match="bad.jsonl:2"):
        read_log(path)


def test_dataframe_view():
    frame = to_dataframe([_row(1), _row(4, stage=Stage.FINAL, us=20.0)])
    assert list(frame["m"]) == [1, 4]
    assert list(frame["stage"]) == ["screen", "final"]
    assert frame.loc[1, "us"] == 20.0 and frame.loc[0, "status"] == "OK"
    assert frame.loc[0, "config"].startswith("16x64x128")
    assert json.loads(frame.loc[0, "params"])["block_m"] == 16


def test_short_params_labels():
    triton = {"block_m": 64, "block_n": 128, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 3,
              "split_k": 2, "use_tma": True, "persistent": False, "k_unroll": 1}
    assert short_params(triton) == "64x128x128 g8 w4 s3 sk2 tma"
    assert short_params({}) == "-"
    assert short_params({"schedule": "pingpong", "tile_m": 64}) == "schedule=pingpong,tile_m=64"


def test_measurement_normalises_non_finite_numbers():
    row = Measurement("triton", {}, 1, 1, 1, "verify", "WRONG_RESULT", rel_error=float("inf"))
    assert row.rel_error is None and row.stage == Stage.VERIFY and row.status == Status.WRONG_RESULT
    with pytest.raises(ValueError):
        Measurement("triton", {}, 1, 1, 1, "verify", "BROKEN")
