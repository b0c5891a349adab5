"""What commands print and draw, and what the README tells a new user."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gemm.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_help_is_plain_text(capsys):
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert "``" not in shown and "\n::" not in shown and "gemm tune" in shown
    assert "~/.local/share/gemm/tuned_configs" in shown


def test_export_warnings_are_one_short_line_per_file(tmp_path, capsys):
    from gemm.configs import ConfigEntry, ConfigFile, Provenance, write_config

    params = {"block_m": 64, "block_n": 128, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 3,
              "split_k": 2}
    entries = {m: ConfigEntry("triton", dict(params), 5.0) for m in range(1, 200)}
    entries.update({m: ConfigEntry("cublas", {}, 5.0) for m in range(200, 400)})
    config = ConfigFile("NVIDIA_H100_80GB_HBM3", "H100", 512, 512, (128, 128), "bfloat16",
                        Provenance.current("measured"), entries)
    write_config(tmp_path / "cfg", config)
    assert main(["export", "--format", "vllm", str(tmp_path / "cfg"), "--out", str(tmp_path / "vllm"),
                 "--stand-ins"]) == 0
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if line.startswith("  warning:")]
    assert len(warned) == 1 and len(warned[0]) < 400, warned
    assert any("199 M" in line for line in warned) and any("200 M" in line for line in warned)
    exported = json.loads(next((tmp_path / "vllm").iterdir()).read_text())
    assert len(exported) == 199


def test_show_prints_a_dash_for_entries_without_a_time(tmp_path, capsys):
    from gemm.configs import ConfigEntry, ConfigFile, Provenance, write_config

    params = {"block_m": 64, "block_n": 128, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 3}
    for n, kind in ((512, "predicted"), (1024, "imported")):
        write_config(tmp_path, ConfigFile("NVIDIA_H20", "H20", n, 512, (128, 128), "bfloat16",
                                          Provenance.current(kind, "m1" if kind == "predicted" else None),
                                          {1: ConfigEntry("triton", dict(params), None)}))
        assert main(["show", str(tmp_path / "NVIDIA_H20" / f"N={n},K=512,device_name=NVIDIA_H20,dtype=fp8_w8a8,"
                                                            f"block_shape=[128,128].json")]) == 0
        shown = capsys.readouterr().out
        assert "NaN" not in shown and "None" not in shown and kind in shown and " - " in shown
    assert main(["show", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "NaN" not in shown and "None" not in shown


def test_plots_name_the_gpu(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from gemm.tuner.results.log import Fingerprint, ResultsLog
    from gemm.tuner.results.measurement import Measurement, Stage, Status

    log = tmp_path / "tune.jsonl"
    fingerprint = Fingerprint("NVIDIA_H200", "H200", None, None, None, "0", "hash", (128, 128), "bfloat16")
    with ResultsLog.create(log, fingerprint) as results:
        for backend, us in (("triton", 10.0), ("cublas", 12.0)):
            results.append(Measurement(backend=backend, params={"variant": 1}, n=256, k=256, m=1,
                                       stage=Stage.FINAL, status=Status.OK, us=us))
    import matplotlib.figure

    titles = []

    def savefig(self, path, *args, **kwargs):
        titles.append(" ".join(t.get_text() for t in self.texts) + " " + " ".join(
            ax.get_title() for ax in self.axes))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    assert main(["plot", str(log), "--out", str(tmp_path / "plots")]) == 0
    assert len(titles) == 2 and all("NVIDIA_H200" in title for title in titles), titles


def test_readme_commands_work_on_a_fresh_clone():
    readme = (REPO / "README.md").read_text()
    for glob in re.findall(r"gemm (?:plot|fit|select) (tuned_configs/logs/\S+)", readme):
        assert list(REPO.glob(glob)), f"README's {glob} matches no shipped log"
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "CPU" in quick and "download.pytorch.org/whl/cpu" in quick  # a CPU-only machine: CPU torch first
    assert "~/.local/share/gemm/tuned_configs" in readme and "GEMM_CHECK_SCALES" in readme


def test_plot_refuses_logs_of_two_devices(tmp_path, capsys):
    logs = sorted((REPO / "tuned_configs" / "logs").glob("*.jsonl.gz"))
    devices = {path.name.split("-")[0] for path in logs}
    assert len(devices) > 1
    assert main(["plot", *map(str, logs), "--out", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err
    assert "one device" in err and "Traceback" not in err
    assert not (tmp_path / "plots").exists() or not list((tmp_path / "plots").iterdir())
