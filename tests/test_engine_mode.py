"""The tuner's engine mode: the floor of shipped configs in every point's space, the baseline's entry pinned and
timed, slower entries replaced by the baseline's (a fake timer decides), the comparison report, and
``gemm select --baseline`` making the same files from the log."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gemm.arch import get_arch, interpreter_arch
from gemm.cli import main
from gemm.configs import load_config_file
from gemm.configs.engine_files import read_engine_files
from gemm.configs.engines import engine_params
from gemm.kernels import get_backend
from gemm.kernels.classic_triton import ClassicParams
from gemm.problem import GemmProblem
from gemm.tuner.engine.compare import compare_shape, replacement_notes
from gemm.tuner.engine.mode import engine_mode, read_baseline
from gemm.tuner.engine.report import ranges_table, write_report
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.log import Fingerprint, ResultsLog
from gemm.tuner.results.measurement import Measurement, Stage, Status
from gemm.tuner.results.select import select
from gemm.tuner.search.plan import SweepPlan, SweepSettings
from gemm.tuner.search.runner import InProcessRunner
from gemm.tuner.search.space import PruneSettings
from gemm.tuner.search.sweep import Sweep
from gemm.tuner.search.worker import WorkerSettings
from interpreter_support import requires_interpreter

REPO = Path(__file__).resolve().parents[1]
VLLM_H200 = REPO / "engine_configs" / "baselines" / "vllm-0.33.0"
FAKE = "fake_backends:FakeEngineBackend"
DEVICE = "CPU_interpreter"
KEYS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")


def cfg(*values) -> dict:
    return dict(zip(KEYS, values))


def write_engine_file(folder: Path, n: int, k: int, doc: dict, device: str = DEVICE, style: str = "vllm") -> Path:
    sep = ", " if style == "sglang" else ","
    path = folder / f"N={n},K={k},device_name={device},dtype=fp8_w8a8,block_shape=[128{sep}128].json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=4))
    return path


# The baseline of the fake sweep: at M=1 the 16x64 tile, at M=16 32x64 (group 1: every group is the same
# launch there), at M=64 a 32x32 tile outside the fake space (the floor brings it in).
BASELINE_DOC = {"1": cfg(16, 64, 128, 1, 4, 2), "16": cfg(32, 64, 128, 1, 4, 3), "64": cfg(32, 32, 128, 1, 4, 2)}


def test_plan_keeps_the_floor_and_pins_the_baseline_at_every_point():
    mode = engine_mode("vllm", "NVIDIA_H200", baseline_dir=VLLM_H200)
    assert len(mode.floor) >= 70 and set(mode.floor_sources) == {"vllm-0.33.0", "sglang-0.5.23"}
    shapes = (LayerShape("o_proj", 7168, 2048), LayerShape("not shipped", 1024, 7168))
    settings = SweepSettings(shapes=shapes, m_grid=(1, 96, 4096), backends=(mode.backend,), timer="t",
                             prune=PruneSettings(budget=8), engine=mode)
    plan = SweepPlan.build(settings, get_arch("H200"))
    backend = get_backend("vllm_triton")
    tables = read_engine_files(VLLM_H200, "NVIDIA_H200")
    for (n, k), spaces in plan.spaces.items():
        for space in spaces:
            problem = space.problem
            kept = {c.params_json for c in space.candidates}
            floor = {json.dumps(backend.canonical(problem, ClassicParams(**p)).to_dict(), sort_keys=True,
                                separators=(",", ":")) for p in mode.floor_params()}
            assert floor <= kept, (n, k, problem.m)
            assert len(space.candidates) <= len(floor) + 8
            assert space.pruned > 0  # the model cut the rest of the key space
            if (n, k) in tables:
                _, entry = tables[(n, k)].entry_for(problem.m)
                (pin,) = space.pinned
                assert ClassicParams(**json.loads(pin.params_json)) == backend.canonical(
                    problem, ClassicParams(**engine_params(entry)))
            else:
                assert space.pinned == ()
    assert plan.hash != SweepPlan.build(
        SweepSettings(shapes=shapes, m_grid=(1, 96, 4096), backends=(mode.backend,), timer="t",
                      prune=PruneSettings(budget=8)), get_arch("H200")).hash


def test_without_engine_files_for_the_gpu_the_floor_is_empty_and_a_baseline_is_refused(tmp_path):
    assert engine_mode("vllm", "NVIDIA_H20").floor == ()
    with pytest.raises(ValueError, match="no engine config files for NVIDIA_H20"):
        engine_mode("sglang", "NVIDIA_H20", baseline_dir=VLLM_H200)
    twice = tmp_path / "twice"
    write_engine_file(twice, 128, 256, BASELINE_DOC)
    write_engine_file(twice, 128, 256, BASELINE_DOC, style="sglang")
    with pytest.raises(ValueError, match="two files for N=128 K=256"):
        read_baseline(twice, DEVICE)


def fake_sweep(tmp_path, baseline_dir):
    mode = engine_mode("vllm", DEVICE, baseline_dir=baseline_dir, floor_roots=[])
    mode = type(mode)(mode.engine, mode.floor, mode.floor_sources, mode.baseline, backend=FAKE)
    settings = SweepSettings(shapes=(LayerShape("a", 128, 256),), m_grid=(1, 16, 64), backends=(FAKE,),
                             timer="fake_backends:FakeTimer", prune=PruneSettings(budget=None), keep=2,
                             screen_margin=1.0, screen_reps=2, final_reps=3, engine=mode)
    plan = SweepPlan.build(settings, interpreter_arch())
    fingerprint = Fingerprint(DEVICE, "CPU-interpreter", "t", "t", None, "0", plan.hash, (128, 128), "bfloat16")
    with ResultsLog.create(tmp_path / "log.jsonl", fingerprint) as log:
        rows = Sweep(plan, log, InProcessRunner(WorkerSettings(device="cpu", timer="fake_backends:FakeTimer"))).run()
    return mode, rows


def test_an_entry_slower_than_the_baselines_is_replaced_by_it(tmp_path):
    baseline_dir = tmp_path / "baseline"
    write_engine_file(baseline_dir, 128, 256, BASELINE_DOC)
    mode, rows = fake_sweep(tmp_path, baseline_dir)
    finals = {(r.m, r.params["block_m"], r.params["block_n"]) for r in rows if r.stage == Stage.FINAL}
    assert (64, 32, 32) in finals  # the baseline's entry is timed carefully though it would not be a finalist
    choices = select(rows)[(128, 256)]
    assert (choices[16].params["block_m"], choices[16].us) == (16, 5.0)  # a 1% tie kept the M=1 config
    replaced, points = compare_shape(128, 256, choices, rows, mode.baseline, FAKE, (1, 16, 64))
    by_m = {p.m: p for p in points}
    assert not by_m[1].replaced and by_m[1].speedup == pytest.approx(6.0 / 5.0)
    assert by_m[16].replaced and replaced[16].params == ClassicParams(32, 64, 128, 1, 4, 3).to_dict()
    assert replaced[16].us == 4.95 and by_m[16].speedup == 1.0
    assert by_m[16].search_speedup == pytest.approx(4.95 / 5.0)
    assert not by_m[64].replaced and by_m[64].speedup == pytest.approx(20.0 / 8.0)
    assert replaced[1] == choices[1] and replaced[64] == choices[64]
    (note,) = replacement_notes(points, "vllm-base")
    assert "M=16: ours 5.00 us is slower than vllm-base's entry (its M=16, 4.95 us): replaced by it" in note

    ranges = ranges_table(points)
    assert list(ranges["M range"]) == ["M < 128", "all"]
    assert ranges.iloc[-1]["replaced"] == 1 and ranges.iloc[-1]["worst"] == 1.0
    csv_path, md_path = write_report(points, tmp_path / "report", "cmp", "fake against vllm-base")
    table = list(csv.DictReader(csv_path.open()))
    assert [row["M"] for row in table] == ["1", "16", "64"] and table[1]["replaced"] == "True"
    assert "| M < 128 | 3 | 3 |" in md_path.read_text()


def test_a_baseline_entry_that_failed_is_said_and_not_taken(tmp_path):
    baseline = read_baseline(write_engine_file(tmp_path / "b", 128, 256, BASELINE_DOC).parent, DEVICE)
    ours = ClassicParams(16, 32, 128, 64, 4, 2).to_dict()
    rows = [Measurement(FAKE, ours, 128, 256, 1, Stage.FINAL, Status.OK, us=5.0, tflops=1.0),
            Measurement(FAKE, ClassicParams(16, 64, 128, 64, 4, 2).to_dict(), 128, 256, 1, Stage.VERIFY,
                        Status.WRONG_RESULT, "relative error 0.5 > 0.01")]
    replaced, (point,) = compare_shape(128, 256, select(rows)[(128, 256)], rows, baseline, FAKE, (1,))
    assert replaced[1].params == ours and point.speedup is None and "WRONG_RESULT" in point.note
    _, (no_file,) = compare_shape(64, 64, {}, [], baseline, FAKE, (1,))
    assert "has no file" in no_file.note


def _engine_log(path: Path, rows) -> Path:
    fingerprint = Fingerprint(DEVICE, "CPU-interpreter", "t", "t", None, "0", "h", (128, 128), "bfloat16")
    with ResultsLog.create(path, fingerprint) as log:
        log.extend(rows)
    return path


def test_gemm_select_with_the_baseline_makes_the_files_and_the_report(tmp_path, capsys):
    baseline_dir = tmp_path / "baseline"
    write_engine_file(baseline_dir, 128, 256, BASELINE_DOC)

    def final(params: ClassicParams, m: int, us: float) -> Measurement:
        return Measurement("vllm_triton", params.to_dict(), 128, 256, m, Stage.FINAL, Status.OK, us=us, tflops=1.0)

    backend = get_backend("vllm_triton")
    rows = [final(backend.canonical(GemmProblem(m, 128, 256), ClassicParams(*p)), m, us) for m, p, us in [
        (1, (16, 32, 128, 8, 4, 2), 5.0), (1, (16, 64, 128, 1, 4, 2), 6.0),
        (16, (16, 32, 128, 8, 4, 2), 5.0), (16, (32, 64, 128, 1, 4, 3), 4.95),
        (64, (16, 64, 128, 8, 4, 2), 8.0), (64, (32, 32, 128, 1, 4, 2), 20.0)]]
    log = _engine_log(tmp_path / "engine.jsonl", rows)
    out = tmp_path / "selected"
    assert main(["select", str(log), "--out", str(out), "--baseline", str(baseline_dir)]) == 0
    captured = capsys.readouterr()
    assert "M=16: ours 5.00 us is slower than baseline's entry" in captured.err
    assert "M < 128" in captured.out
    (native,) = (out / DEVICE).glob("*.json")
    config = load_config_file(native)
    assert config.entries[16].params == ClassicParams(32, 64, 128, 1, 4, 3).to_dict()  # the baseline's, as spelled
    assert config.entries[1].params["block_n"] == 32 and config.entries[64].us == 8.0
    assert (out / "reports" / f"{DEVICE}-vllm-vs-baseline.csv").is_file()
    assert main(["export", "--format", "vllm", str(out / DEVICE), "--out", str(tmp_path / "vllm")]) == 0
    exported = json.loads(next((tmp_path / "vllm").iterdir()).read_text())
    assert exported["16"] == BASELINE_DOC["16"] and list(exported) == ["1", "16", "64"]


@requires_interpreter
def test_gemm_tune_engine_then_select_and_export_give_the_same_files(tmp_path, capsys):
    baseline_dir = tmp_path / "baseline"
    write_engine_file(baseline_dir, 128, 256, {"1": cfg(16, 64, 128, 1, 4, 2), "16": cfg(16, 32, 64, 1, 4, 2)})
    out = tmp_path / "tuned"
    assert main(["tune", "--engine", "vllm", "--interpret", "--shape", "128,256", "--m", "1,16", "--budget", "2",
                 "--baseline", str(baseline_dir), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "floor: 2 configs the engines ship for CPU_interpreter (baseline)" in captured.err
    assert "against the baseline" in captured.out and "M < 128" in captured.out
    (tuned,) = (out / DEVICE).glob("*.json")
    assert {e.backend for e in load_config_file(tuned).entries.values()} == {"vllm_triton"}
    (log,) = (out / "logs").glob("*.jsonl")
    report = out / "reports" / f"{log.name.removesuffix('.jsonl')}-vs-baseline.csv"  # named after its log
    assert [row["M"] for row in csv.DictReader(report.open())] == ["1", "16"]
    assert all(float(row["speedup"]) >= 1.0 for row in csv.DictReader(report.open()))

    again = tmp_path / "again"
    assert main(["select", str(log), "--out", str(again), "--baseline", str(baseline_dir)]) == 0
    assert load_config_file(next((again / DEVICE).glob("*.json"))).entries == load_config_file(tuned).entries
    for fmt in ("vllm", "sglang"):
        code = main(["export", "--format", fmt, str(out / DEVICE), "--out", str(tmp_path / fmt)])
        assert code == (0 if fmt == "vllm" else 1)  # SGLang's kernel was not measured


def test_the_tp8_engine_sweep_stays_within_its_budget_of_candidates():
    """The H200 TP8 engine sweep is sized for about 7 minutes (25-65 ms per candidate and point): at most
    12k candidates over its 171 points, and the floor keeps well over the budget at every point."""
    from gemm.tuner.presets import DEFAULT_M_GRID, preset_shapes
    from gemm.tuner.search.space import ENGINE_BUDGET

    mode = engine_mode("vllm", "NVIDIA_H200", baseline_dir=VLLM_H200)
    settings = SweepSettings(shapes=tuple(preset_shapes("deepseek-v3-tp8")), m_grid=DEFAULT_M_GRID + (8192,),
                             backends=(mode.backend,), timer="t", prune=PruneSettings(budget=ENGINE_BUDGET),
                             engine=mode)
    plan = SweepPlan.build(settings, get_arch("H200"))
    counts = plan.counts()
    assert counts["kept"] <= 12_000
    points = [space for spaces in plan.spaces.values() for space in spaces]
    assert len(points) == 9 * 19 and min(len(space.candidates) for space in points) > 2 * ENGINE_BUDGET


def test_reports_are_named_after_their_logs_so_two_sweeps_keep_two():
    from gemm.tuner.outputs import report_stem

    tp8 = report_stem(Path("out/logs/NVIDIA_H200-vllm-tp8.jsonl"), "vllm-0.33.0")
    tp4 = report_stem(Path("out/logs/NVIDIA_H200-vllm-tp4.jsonl.gz"), "vllm-0.33.0")
    assert (tp8, tp4) == ("NVIDIA_H200-vllm-tp8-vs-vllm-0.33.0", "NVIDIA_H200-vllm-tp4-vs-vllm-0.33.0")
