"""The Hopper kernel's GPU scripts, without a GPU: their argument parsing and the candidates they time."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from script_modules import SCRIPTS, load_script
from gemm.kernels.sm90.backend import Sm90Backend
from gemm.problem import GemmProblem


@pytest.fixture(scope="module")
def check_script():
    return load_script("check_sm90_gpu")


def test_check_script_parses_shapes_and_m_lists(check_script):
    assert check_script.shape_arg("4608,7168") == (4608, 7168)
    assert check_script.m_list_arg("1,16,64") == [1, 16, 64]
    for text in ("4608", "4608,x", "4608,7168,1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected N,K"):
            check_script.shape_arg(text)
    with pytest.raises(argparse.ArgumentTypeError, match="expected positive N,K"):
        check_script.shape_arg("0,7168")
    with pytest.raises(argparse.ArgumentTypeError, match="expected positive M values"):
        check_script.m_list_arg("1,0")
    with pytest.raises(argparse.ArgumentTypeError, match="expected comma-separated integers"):
        check_script.m_list_arg("1,a")


def test_check_script_times_swap_candidates_only_at_small_m(check_script):
    backend = Sm90Backend()
    small = check_script.time_candidates(backend, GemmProblem(16, 2112, 7168), 132, swap_ab=True)
    swapped = [p for p in small if p.swap_ab]
    assert swapped and len(swapped) < len(small)  # the plain candidates are timed beside them
    assert {p.block_n for p in swapped} == {16}  # token tiles up to M rounded up to 16
    assert any(p.splits > 1 for p in swapped)
    large = check_script.time_candidates(backend, GemmProblem(128, 2112, 7168), 132, swap_ab=True)
    assert not any(p.swap_ab for p in large)


def test_check_script_refuses_a_bad_shape_without_a_traceback():
    done = subprocess.run([sys.executable, str(SCRIPTS / "check_sm90_gpu.py"), "time", "--shape", "4608"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "argument --shape: expected N,K" in done.stderr
    assert "Traceback" not in done.stderr


def test_profile_script_reads_swap_ab_and_splits():
    profile = load_script("profile_sm90")
    params = profile.parse_params("64x16:sw=1:sk=4")
    assert params.swap_ab is True and params.splits == 4 and (params.block_m, params.block_n) == (64, 16)
    assert profile.parse_params("128x128:ov=0").overlap is False
    assert profile.parse_params("128x128").swap_ab is False


def test_ablate_script_refuses_a_bad_split_count():
    done = subprocess.run([sys.executable, str(SCRIPTS / "ablate_sm90.py"), "lib.so", "--splits", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--splits takes a positive integer, got 0" in done.stderr


def test_scripts_take_stream_k(check_script):
    profile = load_script("profile_sm90")
    assert profile.parse_params("128x112:st=1").stream_k is True
    assert profile.parse_params("128x112").stream_k is False
    backend = Sm90Backend()
    few = check_script.time_candidates(backend, GemmProblem(128, 2112, 7168), 132)
    stream = [p for p in few if p.stream_k]
    assert stream and {(p.block_m, p.block_n) for p in stream} == {(p.block_m, p.block_n) for p in few if p.splits > 1}
    assert all(backend.check(GemmProblem(128, 2112, 7168), p, None) is None for p in stream)
    many = check_script.time_candidates(backend, GemmProblem(8192, 7168, 7168), 132)
    assert not any(p.stream_k for p in many)


NCU_SOURCE_CSV = '''"Kernel Name","kernel_a(Args)",
"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed","stall_barrier","stall_long_sb","stall_barrier (Not Issued)"
"0x10","      WARPGROUP.DEPBAR.LE gsb0, 0x0","6","10","6","0","6"
"0x20","      SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR28], R88","3","10","1","2","1"
"0x30","      FFMA R1, R2, R3, R1","1","10","0","0","0"
"0x40","      @!P0  NANOSLEEP.SYNCS 0x989680","0","25","0","0","0"
"0x50","      @!P0  BRA 0x20","1","1,025","0","1","0"
"Kernel Name","kernel_b(Args)",
"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed","stall_barrier","stall_long_sb","stall_barrier (Not Issued)"
"0x10","      QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR16], R24","4","10","0","4","0"
'''


def test_ncu_stalls_groups_samples_per_kernel_and_class(tmp_path, capsys):
    stalls = load_script("ncu_stalls")
    path = tmp_path / "prof_sass.csv"
    path.write_text(NCU_SOURCE_CSV)
    a, b = stalls.read_source_csv(path)
    assert (a.name, a.total, b.name, b.total) == ("kernel_a(Args)", 11, "kernel_b(Args)", 4)
    assert a.by_class == {"wgmma wait": 6, "mbarrier wait": 3, "ffma/fmul": 1, "branch": 1}
    assert a.by_reason == {"barrier": 7, "long_sb": 3}  # the "(Not Issued)" columns are not counted twice
    assert b.by_class == {"wgmma": 4}
    # instructions that ran equally often are one loop body: 3 x 10 passes, then the retry loop
    assert stalls.loops(a) == [(10, 3, 10, "0x10"), (1025, 1, 1, "0x50"), (25, 1, 0, "0x40")]
    assert stalls.main([str(path), "--top", "1", "--loops", "2", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "wgmma wait 54.5%" in printed and "mbarrier wait 27.3%" in printed
    assert "10 passes x    3 instructions   90.9% of the samples, from 0x10" in printed
    assert "1025 passes x    1 instructions" in printed and " 25 passes" not in printed  # --loops 2
    rows = (tmp_path / "o" / "stalls.csv").read_text().splitlines()
    assert rows[0] == "kernel,instruction_class,samples,share" and len(rows) == 1 + 4 + 1


def test_ncu_stalls_reads_gzipped_exports(tmp_path):
    import gzip

    stalls = load_script("ncu_stalls")
    path = tmp_path / "prof_sass.csv.gz"
    path.write_bytes(gzip.compress(NCU_SOURCE_CSV.encode()))
    assert [k.total for k in stalls.read_source_csv(path)] == [11, 4]


def test_ncu_stalls_refuses_files_without_sass_rows(tmp_path, capsys):
    stalls = load_script("ncu_stalls")
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b\n1,2\n")
    assert stalls.main([str(empty)]) == 2
    assert "no kernel with SASS rows" in capsys.readouterr().err
    assert stalls.main([str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_profile_script_names_a_bad_params_item():
    profile = load_script("profile_sm90")
    for text in ("64x16:sw=x", "64-16", "64x16:bogus=1", "64x20"):
        with pytest.raises(ValueError, match=rf"--params item '{text}': expected BMxBN"):
            profile.parse_params(text)
    done = subprocess.run([sys.executable, str(SCRIPTS / "profile_sm90.py"), "--params", "64x16:sw=x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--params item '64x16:sw=x'" in done.stderr and "Traceback" not in done.stderr
