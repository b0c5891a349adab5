"""CPU tests of the performance report (``gemm bench --report``, gemm.bench.report and gemm.bench.tables) and
of the summary of scripts/bench_peers.py, on a small synthetic bench_rows.csv whose expected numbers are worked
out by hand here."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from gemm.cli import main
from script_modules import load_script





def report(*args: str) -> int:
    """``gemm bench --report ARGS...``."""
    return main(["bench", "--report", *map(str, args)])

A, B = (256, 512), (512, 1024)
FLOORS = {(A, 16): 1.0, (A, 256): 2.0, (A, 2048): 4.0, (B, 16): 2.0, (B, 256): 4.0, (B, 2048): 8.0}
# us per peer and point; lists are several candidates of one peer. Fastest of our backends:
# A16 cutlass 9, A256 triton_sweep 20, A2048 cutlass 80, B16 heuristic 13, B256 cutlass 35, B2048 triton_sweep 300.
TIMES = {
    (A, 16): dict(triton_sweep=[10, 12], triton_heuristic=11, cutlass_sweep=[9, 20], cublas_blockwise=12,
                  cublas_per_tensor=8, classic_default=30, bf16_matmul=15),
    (A, 256): dict(triton_sweep=[20, 25], triton_heuristic=30, cutlass_sweep=[22], cublas_blockwise=None,
                   cublas_per_tensor=16, classic_default=50, bf16_matmul=30),
    (A, 2048): dict(triton_sweep=[100], triton_heuristic=150, cutlass_sweep=[80, 90], cublas_blockwise=88,
                    cublas_per_tensor=70, classic_default=200, bf16_matmul=120),
    (B, 16): dict(triton_sweep=[14], triton_heuristic=13, cutlass_sweep=[15], cublas_blockwise=16,
                  cublas_per_tensor=12, classic_default=40, bf16_matmul=20),
    (B, 256): dict(triton_sweep=[40], triton_heuristic=45, cutlass_sweep=[35], cublas_blockwise=42,
                   cublas_per_tensor=30, classic_default=90, bf16_matmul=60),
    (B, 2048): dict(triton_sweep=[300, 310], triton_heuristic=400, cutlass_sweep=[320], cublas_blockwise=330,
                    cublas_per_tensor=250, classic_default=700, bf16_matmul=500),
}
TUNED = {(A, 16): (10, "cutlass"), (A, 256): (21, "triton"), (A, 2048): (84, "cutlass"),
         (B, 16): (13, "triton"), (B, 256): (40, "cutlass"), (B, 2048): (300, "triton")}


def _row(point, peer, us, status="OK", config=""):
    (n, k), m = point
    floor = FLOORS[point]
    return dict(M=m, N=n, K=k, peer=peer, config=config, status=status, rel_err=1e-3, us=us, spread=0.01,
                tflops=2 * m * n * k / us / 1e6, floor_us=floor, frac_floor=floor / us)


def synthetic_rows(tuned: bool = False) -> pd.DataFrame:
    """Rows as gemm bench writes them; cuBLAS blockwise at A, M=256 is WRONG_RESULT (with a tempting time)."""
    rows = []
    for point, peers in TIMES.items():
        for peer, times in peers.items():
            if times is None:
                rows.append(_row(point, peer, 1.0, status="WRONG_RESULT") | dict(rel_err=0.5))
                continue
            for i, us in enumerate(times if isinstance(times, list) else [times]):
                rows.append(_row(point, peer, us, config=f"cand{i}"))
        if tuned:
            us, backend = TUNED[point]
            rows.append(_row(point, "tuned_op", us, config=f"{backend}:block_m=64"))
    rows.append(_row((A, 16), "cutlass_sweep", float("nan"), status="FAILED: CompileError: boom"))
    return pd.DataFrame(rows)


def write_run(directory: Path, tuned: bool = False, info: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    synthetic_rows(tuned).to_csv(directory / "bench_rows.csv", index=False)
    if info is not None:
        (directory / "ceilings.json").write_text(json.dumps(info))
    return directory


def generate(tmp_path: Path, *runs: str, plots: bool = False) -> str:
    out = tmp_path / "out"
    assert report(*runs, "--out", out, *([] if plots else ["--no-plots"])) == 0
    return (out / "performance.md").read_text()


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows (lists of cells) of the first markdown table after the line containing ``heading``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if heading in line)
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    rows = []
    for line in lines[first + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def table_after(markdown: str, heading: str) -> dict[str, list[str]]:
    """``table_rows`` keyed by their first cell (which must be unique)."""
    rows = table_rows(markdown, heading)
    keyed = {cells[0]: cells[1:] for cells in rows}
    assert len(keyed) == len(rows)
    return keyed


def shape_rows(markdown: str, heading: str) -> dict[tuple[str, str], list[str]]:
    """``table_rows`` of an N, K, ... table keyed by (N, K)."""
    return {(cells[0], cells[1]): cells[2:] for cells in table_rows(markdown, heading)}


def gm(*values: float) -> float:
    return math.prod(values) ** (1 / len(values))


def assert_cells(cells: list[str], expected: list[float]) -> None:
    assert [float(c) for c in cells] == pytest.approx(expected, abs=6e-4)


# ----------------------------------------------------------------------------- geomean ratios


def test_speedups_over_peers_match_hand_computed_geomeans(tmp_path):
    md = generate(tmp_path, f"H100={write_run(tmp_path / 'run')}")
    speed = table_after(md, "speed-up of ours over each peer")
    # cuBLAS blockwise: the WRONG_RESULT point (A, M=256) is left out, so 128 <= M <= 512 holds B only.
    assert_cells(speed["cuBLAS blockwise"][:4],
                 [gm(12 / 9, 16 / 13), 42 / 35, gm(88 / 80, 330 / 300),
                  gm(12 / 9, 16 / 13, 42 / 35, 88 / 80, 330 / 300)])
    assert speed["cuBLAS blockwise"][4] == "5"
    assert_cells(speed["classic Triton kernel, default config"][:4],
                 [gm(30 / 9, 40 / 13), gm(50 / 20, 90 / 35), gm(200 / 80, 700 / 300),
                  gm(30 / 9, 40 / 13, 50 / 20, 90 / 35, 200 / 80, 700 / 300)])
    assert_cells(speed["Triton, best of sweep"][:4],
                 [gm(10 / 9, 14 / 13), gm(1.0, 40 / 35), gm(100 / 80, 1.0),
                  gm(10 / 9, 14 / 13, 1.0, 40 / 35, 100 / 80, 1.0)])
    assert "tuned op" not in "".join(speed)


def test_wrong_result_point_is_named_and_not_counted(tmp_path):
    md = generate(tmp_path, f"H100={write_run(tmp_path / 'run')}")
    assert "Left out for cuBLAS blockwise (1 point without a verified result): N=256 K=512 M=256 (WRONG_RESULT)" in md
    # A cutlass candidate that failed at a point where another one passed does not leave the point out.
    assert "Left out for CUTLASS" not in md
    row = next(cells for cells in table_rows(md, "Every point") if cells[:3] == ["256", "512", "256"])
    assert row[3:6] == ["2.000", "20.000", "0.100"]
    assert row[6] == "—"  # cuBLAS blockwise column: no verified time


def test_tuned_op_is_ours_when_present(tmp_path):
    md = generate(tmp_path, f"H100={write_run(tmp_path / 'run', tuned=True)}")
    assert "Ours = tuned op (shipped configs)" in md
    speed = table_after(md, "speed-up of ours over each peer")
    tuned = {point: us for point, (us, _) in TUNED.items()}
    assert_cells(speed["cuBLAS blockwise"][:4],
                 [gm(12 / tuned[A, 16], 16 / tuned[B, 16]), 42 / tuned[B, 256],
                  gm(88 / tuned[A, 2048], 330 / tuned[B, 2048]),
                  gm(12 / 10, 16 / 13, 42 / 40, 88 / 84, 330 / 300)])
    # The best backend per point stays a peer of its own: at most as slow as the tuned op.
    assert_cells(speed["best of our backends per point"][:4],
                 [gm(9 / 10, 13 / 13), gm(20 / 21, 35 / 40), gm(80 / 84, 300 / 300),
                  gm(9 / 10, 13 / 13, 20 / 21, 35 / 40, 80 / 84, 300 / 300)])
    dispatched = shape_rows(md, "Backend the tuned op dispatched to")
    assert dispatched == {("256", "512"): ["cutlass", "triton", "cutlass"],
                          ("512", "1024"): ["triton", "cutlass", "triton"]}


def test_best_backend_column_is_not_a_copy_of_the_only_backend_timed(tmp_path):
    # A run like `--tuned --no-sweep` times one of our backends (the Triton heuristic): the best of our
    # backends per point is then that backend, and a row or column of its own would only repeat it.
    only = ("triton_sweep", "cutlass_sweep")
    run = tmp_path / "run"
    run.mkdir()
    rows = synthetic_rows(tuned=True)
    rows[~rows.peer.isin(only)].to_csv(run / "bench_rows.csv", index=False)
    md = generate(tmp_path, f"H200={run}", f"H100={write_run(tmp_path / 'all')}")
    for heading in ("H200: speed-up of ours over each peer", "Geomean per M range"):
        peers = table_after(md[md.index("## H200"):], heading)
        assert "Triton, heuristic config" in peers
        assert "best of our backends per point" not in peers
    heuristic = {point: peers["triton_heuristic"] for point, peers in TIMES.items()}
    speed = table_after(md[md.index("## H200"):], "speed-up of ours over each peer")
    assert_cells(speed["Triton, heuristic config"][3:4],
                 [gm(*(heuristic[point] / TUNED[point][0] for point in TIMES))])
    summary = md[md.index("## Summary"):md.index("## H200")]
    header = next(line for line in summary.splitlines() if line.startswith("| device"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert len(cells) == len(set(cells))
    # H100's best backend is its reference ("ours"), H200's only backend the heuristic: no such column.
    assert "best of our backends per point" not in cells
    h200 = table_after(summary, "## Summary")["H200"]
    assert h200[cells.index("Triton, heuristic config") - 1] != "—"


# ----------------------------------------------------------------------------- floor, winners, header


def test_floor_fractions_per_range(tmp_path):
    md = generate(tmp_path, f"H100={write_run(tmp_path / 'run')}")
    floors = table_after(md, "Geomean per M range")
    assert_cells(floors["ours: best of our backends per point"],
                 [gm(1 / 9, 2 / 13), gm(2 / 20, 4 / 35), gm(4 / 80, 8 / 300),
                  gm(1 / 9, 2 / 13, 2 / 20, 4 / 35, 4 / 80, 8 / 300)])
    assert_cells(floors["cuBLAS blockwise"][1:2], [4 / 42])
    per_point = table_rows(md, "Every point")
    assert [cells[:3] for cells in per_point] == [[str(n), str(k), str(m)] for (n, k) in (A, B)
                                                   for m in (16, 256, 2048)]
    assert per_point[-1][3:6] == ["8.000", "300.000", "0.027"]


def test_winners_table_names_the_fastest_backend(tmp_path):
    md = generate(tmp_path, f"H100={write_run(tmp_path / 'run')}")
    assert "T = Triton, best of sweep; t = Triton, heuristic config; C = CUTLASS, best of space" in md
    won = shape_rows(md, "Fastest of our backends per point")
    assert won == {("256", "512"): ["C", "T", "C"], ("512", "1024"): ["t", "C", "T"]}


def test_header_shows_ceilings_versions_date_and_command(tmp_path):
    info = dict(device="NVIDIA H200", fp8_tflops=1234.4, bf16_tflops=700.2, copy_tbps=4.123, ceiling_size=8192,
                torch="2.9.0", triton="3.5.0", command="python scripts/bench_peers.py --tuned")
    run = write_run(tmp_path / "run", info=info)
    md = generate(tmp_path, f"H200={run}")
    assert f"gemm bench --report H200={run} --out {tmp_path / 'out'} --no-plots" in md
    assert re.search(r"Generated \d{4}-\d{2}-\d{2}", md)
    assert "Device: **NVIDIA H200**; torch 2.9.0, triton 3.5.0." in md
    assert "FP8 per-tensor cuBLAS 1234 TFLOPS; bf16 torch.matmul 700 TFLOPS; copy bandwidth 4.12 TB/s" in md
    assert "M = N = K = 8192" in md
    assert "Benchmark command: `python scripts/bench_peers.py --tuned`" in md
    assert "2 shapes x M in {16, 256, 2048} = 6 points" in md


def test_notes_of_a_run_appear_under_its_device(tmp_path):
    run = write_run(tmp_path / "run")
    (run / "NOTES.md").write_text("In this run N=32768 K=512 had no tuned config.\n")
    md = generate(tmp_path, f"H200={run}")
    section = md[md.index("## H200"):]
    assert "In this run N=32768 K=512 had no tuned config." in section.split("### ")[0]


def test_ceilings_json_written_by_the_bench_is_read_back(tmp_path):
    from gemm.bench.measure import Ceilings, run_info

    info = run_info("NVIDIA H100 80GB HBM3", Ceilings(1451.2, 794.0, 3.01, 4096),
                    ["python", "scripts/bench_peers.py", "--tuned"])
    md = generate(tmp_path, f"H100={write_run(tmp_path / 'run', info=json.loads(json.dumps(info)))}")
    assert "Device: **NVIDIA H100 80GB HBM3**" in md
    assert "FP8 per-tensor cuBLAS 1451 TFLOPS; bf16 torch.matmul 794 TFLOPS; copy bandwidth 3.01 TB/s" in md
    assert "M = N = K = 4096" in md and f"torch {info['torch']}" in md


def test_two_devices_get_a_summary_and_a_section_each(tmp_path):
    md = generate(tmp_path, f"H100={write_run(tmp_path / 'a')}", f"H200={write_run(tmp_path / 'b', tuned=True)}")
    summary = table_after(md, "## Summary")
    assert summary["H100"][0] == "best of our backends per point"
    assert summary["H200"][0] == "tuned op (shipped configs)"
    assert "## H100" in md and "## H200" in md


# ----------------------------------------------------------------------------- plots and arguments


def test_plots_are_written_and_linked(tmp_path):
    pytest.importorskip("matplotlib")
    md = generate(tmp_path, f"H100 SXM={write_run(tmp_path / 'a')}", f"H200={write_run(tmp_path / 'b', tuned=True)}",
                  plots=True)
    for name in ("h100_sxm_tflops.png", "h200_tflops.png"):
        png = tmp_path / "out" / "performance" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
        assert f"](performance/{name})" in md


@pytest.mark.parametrize("make_arg, expected", [
    (lambda tmp: "H100", "expected DEVICE=DIR"),
    (lambda tmp: f"={tmp}", "expected DEVICE=DIR"),
    (lambda tmp: f"H100={tmp / 'missing'}", "does not exist"),
    (lambda tmp: f"H100={tmp}", "holds no bench_rows.csv"),
])
def test_bad_arguments_exit_2_naming_the_argument(tmp_path, capsys, make_arg, expected):
    arg = make_arg(tmp_path)
    assert report(arg, "--out", tmp_path / "out", "--no-plots") == 2
    err = capsys.readouterr().err
    assert repr(arg) in err and expected in err
    assert not (tmp_path / "out").exists()


def test_csv_without_required_columns_exits_2(tmp_path, capsys):
    (tmp_path / "bench_rows.csv").write_text("M,N,K,peer\n1,2,3,x\n")
    assert report(f"H100={tmp_path}", "--no-plots", "--out", tmp_path / "out") == 2
    assert "lacks the column(s) config, status" in capsys.readouterr().err


def test_duplicate_device_labels_exit_2(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert report(f"H100={run}", f"H100={run}", "--no-plots", "--out", tmp_path / "out") == 2
    assert "device labels must differ" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bench_peers.py summary


def test_bench_peers_from_rows_compares_with_the_tuned_op(tmp_path, capsys):
    bench_peers = load_script("bench_peers")
    csv = tmp_path / "bench_rows.csv"
    synthetic_rows(tuned=True).to_csv(csv, index=False)
    assert bench_peers.main(["--from-rows", str(csv), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "geomean speed-up of the tuned op over each peer" in text
    line = next(line for line in text.splitlines() if line.startswith("cublas_blockwise"))
    assert float(line.split()[1]) == pytest.approx(gm(12 / 10, 16 / 13, 42 / 40, 88 / 84, 330 / 300), abs=6e-4)
    best = pd.read_csv(tmp_path / "out" / "bench_best.csv").set_index(["N", "K", "M"])
    assert best.loc[(256, 512, 16), "ours"] == 9  # ours stays the best backend, not the tuned op
    assert best.loc[(256, 512, 16), "tuned_op"] == 10
