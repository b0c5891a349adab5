"""Benchmark the Triton backend against its peers on DeepSeek-V3 shapes (needs a CUDA GPU).

Peers, measured side by side in one process: cuBLAS blockwise (``torch._scaled_mm``
with 1x128 / 128x128 scales, verified), cuBLAS per-tensor FP8 (the speed of FP8
without block scales), the classic block-FP8 Triton kernel at the default config
engines fall back to, and bf16 ``torch.matmul``. Our kernel: the best of a modest
per-point sweep (every candidate verified first) and the untuned heuristic; with
``--cutlass`` also the CUTLASS backend; with ``--tuned`` also the tuned op
``gemm.w8a8_block_fp8_matmul`` as shipped (peer ``tuned_op``, dispatching from the
configs in ``tuned_configs/<device>/``), which the summary then compares the peers with.

Writes ``<out>/bench_rows.csv`` (every candidate), ``<out>/bench_best.csv`` (best per
peer and point), ``<out>/ceilings.json`` (device, versions, measured ceilings) and
prints a table with each point's floor plus geomean ratios.

    python scripts/bench_peers.py --out bench_out [--m 1,16,128] [--shapes 7168,2048 2112,7168]
    python scripts/bench_peers.py --out bench_out --tuned --cutlass --m deepseek --preset deepseek-v3-tp8
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lib import (cold_l2_copies, floor_us, geomean, graph_time_us, make_input_sets,  # noqa: E402
                       measure_ceilings, run_info)
from report_lib import TUNED, reference, summarize  # noqa: E402

import gemm  # noqa: E402
from gemm import dispatch  # noqa: E402
from gemm.arch import detect_arch  # noqa: E402
from gemm.kernels.classic_triton import CLASSIC_DEFAULT, classic_block_fp8_matmul  # noqa: E402
from gemm.kernels.cublas import cublas_scale_layouts  # noqa: E402
from gemm.kernels.triton_fp8 import TritonBackend, TritonParams, launch  # noqa: E402
from gemm.problem import GemmProblem  # noqa: E402
from gemm.reference import reference_matmul, relative_error  # noqa: E402
from gemm.tuner.presets import DEFAULT_M_GRID, dedupe_shapes, parse_shape, preset_shapes  # noqa: E402

SHAPES = [(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304),
          (576, 7168), (36864, 7168), (7168, 18432)]
M_VALUES = [1, 3, 16, 64, 100, 128, 512, 1024, 4096]
DEEPSEEK_M = [*DEFAULT_M_GRID, 8192]  # the engines' tuning grid plus one large prefill batch
TOLERANCE = 1e-2


def modest_triton_space(problem: GemmProblem, arch) -> list[TritonParams]:
    """About 12-18 candidates per point, by M range (decode / mid / prefill)."""
    m = problem.m
    out = []
    if m <= 64:
        bm = 16 if m <= 16 else 32 if m <= 32 else 64
        for bn in (64, 128):
            for split in (1, 2, 4, 8):
                out.append(TritonParams(bm, bn, 128, 8, 4, 4, split, True, False))
        out += [TritonParams(bm, 64, 128, 8, 4, 4, split, False, False) for split in (1, 4, 8)]
    elif m <= 512:
        for bm, bn, warps in ((64, 128, 4), (64, 256, 8)):
            for split in (1, 2, 4):
                for unroll in (1, 2):
                    out.append(TritonParams(bm, bn, 128, 8, warps, 3, split, True, False, unroll))
    else:
        for bm, bn, warps in ((128, 128, 8), (128, 256, 8), (64, 256, 8)):
            for stages in (3, 4):
                for persistent, unroll in ((False, 1), (False, 2), (True, 2)):
                    out.append(TritonParams(bm, bn, 128, 8, warps, stages, 1, True, persistent, unroll))
    backend = TritonBackend()
    return [p for p in dict.fromkeys(out) if backend.check(problem, p, arch) is None]


def _peer_callables(m, n, k, sets):
    """name -> (fn, per-copy args, verify?) for every peer at this point."""
    peers = {}
    peers["classic_default"] = (lambda a, b, sa, sb: classic_block_fp8_matmul(a, b, sa, sb, CLASSIC_DEFAULT),
                                sets, True)
    m4 = (m + 3) // 4 * 4
    cub_sets = []
    for a, b, sa, sb in sets:
        a_pad = torch.cat([a, a[-1:].expand(m4 - m, -1)]) if m4 != m else a
        sa_c, sb_c = cublas_scale_layouts(sa, sb, m4)
        cub_sets.append((a_pad, b, sa_c, sb_c))
    peers["cublas_blockwise"] = (
        lambda a, b, sa, sb: torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)[:m],
        cub_sets, True)
    m16 = (m + 15) // 16 * 16
    one = torch.ones((), device="cuda")
    pt_sets = [(torch.cat([a, a[-1:].expand(m16 - m, -1)]) if m16 != m else a, b) for a, b, _, _ in sets]
    peers["cublas_per_tensor"] = (
        lambda a, b: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
        pt_sets, False)
    bf_sets = [(a.to(torch.bfloat16), b.to(torch.bfloat16)) for a, b, _, _ in sets[: max(2, len(sets) // 2)]]
    peers["bf16_matmul"] = (lambda a, b: torch.matmul(a, b.t()), bf_sets, False)
    return peers


def _cutlass_candidates(problem: GemmProblem, arch):
    """(name, fn) for CUTLASS's default params and every valid candidate of its space."""
    from gemm.kernels.cutlass.backend import CutlassBackend

    backend = CutlassBackend()
    if backend.unavailable_reason() is not None:
        return []
    default = backend.default_params(problem, arch)
    out = [("cutlass_default", default)]
    out += [("cutlass_sweep", p) for p in backend.param_space(problem, arch) if backend.check(problem, p, arch) is None]
    built = []
    for peer, params in out:
        try:
            built.append((peer, params.short(), backend.build(problem, params)))
        except Exception as exc:  # recorded by the caller as a failed candidate
            built.append((peer, params.short(), exc))
    return built


def _tuned_config(problem: GemmProblem) -> str:
    """``backend:params`` the op dispatches ``problem`` to on the current GPU (as the op itself picks it)."""
    try:
        backend, params = dispatch.choose(problem, "cuda", torch.cuda.current_device())
    except Exception as exc:  # the config column is informative only; timing the op reports its own failure
        return f"unknown: {type(exc).__name__}"
    return f"{backend.name}:{params.short()}"


def bench_point(m, n, k, arch, ceilings, rows, sweep=True, cutlass=False, tuned=False):
    problem = GemmProblem(m, n, k)
    bytes_per_set = n * k + m * k + 4 * (m + n) * math.ceil(k / 128)
    copies = cold_l2_copies(bytes_per_set, arch.l2_bytes)
    sets = make_input_sets(m, n, k, copies)
    ref = reference_matmul(*sets[0])
    floor = floor_us(m, n, k, ceilings)

    def record(peer, config, fn, arg_sets, verify):
        err, status = float("nan"), "OK"
        try:
            if verify:
                err = relative_error(fn(*arg_sets[0]), ref)
                if not err <= TOLERANCE:
                    status = "WRONG_RESULT"
            t = graph_time_us(fn, arg_sets) if status == "OK" else None
        except Exception as exc:  # a benchmark records failures and goes on
            status, t = f"FAILED: {type(exc).__name__}: {str(exc)[:200]}", None
        us = t.us if t else float("nan")
        rows.append(dict(M=m, N=n, K=k, peer=peer, config=config, status=status, rel_err=err, us=us,
                         spread=t.spread if t else float("nan"), tflops=2 * m * n * k / us / 1e6 if t else float("nan"),
                         floor_us=floor, frac_floor=floor / us if t else float("nan")))

    for peer, (fn, arg_sets, verify) in _peer_callables(m, n, k, sets).items():
        record(peer, "", fn, arg_sets, verify)
    if tuned:
        record(TUNED, _tuned_config(problem), gemm.w8a8_block_fp8_matmul, sets, True)
    backend = TritonBackend()
    default = backend.default_params(problem, arch)
    record("triton_heuristic", default.short(), lambda *xs, p=default: launch(*xs, p), sets, True)
    if sweep:
        for params in modest_triton_space(problem, arch):
            record("triton_sweep", params.short(), lambda *xs, p=params: launch(*xs, p), sets, True)
    if cutlass:
        for peer, name, fn in _cutlass_candidates(problem, arch):
            if isinstance(fn, Exception):
                rows.append(dict(M=m, N=n, K=k, peer=peer, config=name, status=f"FAILED: {fn}"[:200],
                                 floor_us=floor))
            else:
                record(peer, name, fn, sets, True)
    del sets
    torch.cuda.empty_cache()


def print_report(table: pd.DataFrame, ceilings) -> None:
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    shown = table.copy()
    ref = reference(table)
    shown[f"{ref}_frac_floor"] = shown.floor_us / shown[ref]
    print(shown.round(2).to_string())
    if ceilings is not None:
        print(f"\nceilings: FP8 per-tensor {ceilings.fp8_tflops:.0f} TFLOPS, bf16 {ceilings.bf16_tflops:.0f} TFLOPS, "
              f"copy {ceilings.copy_tbps:.2f} TB/s")
    ms = table.index.get_level_values("M")
    what = "the tuned op" if ref == TUNED else "ours (best of all our candidates)"
    print(f"\ngeomean speed-up of {what} over each peer (>1: {ref} faster)")
    header = f"{'peer':<20}{'all':>8}{'M<=64':>8}{'M<=128':>8}{'M>=1024':>9}"
    print(header)
    for peer in ("classic_default", "cublas_blockwise", "cublas_per_tensor", "bf16_matmul", "triton_heuristic",
                 "triton_sweep", "cutlass_default", "cutlass_sweep", "ours"):
        if peer not in table or peer == ref:
            continue
        ratio = table[peer] / table[ref]
        cells = [geomean(ratio), geomean(ratio[ms <= 64]), geomean(ratio[ms <= 128]), geomean(ratio[ms >= 1024])]
        print(f"{peer:<20}" + "".join(f"{c:>8.3f}" for c in cells))
    print(f"geomean fraction of floor, {ref}: {geomean(table.floor_us / table[ref]):.3f}")


def _points(args, parser) -> tuple[list[int], list[tuple[int, int]]]:
    """(M values, [(N, K)]) from --m, --shapes and --preset; parser.error on bad values.

    --preset shapes follow any explicit --shapes, duplicates dropped; neither gives SHAPES.
    """
    try:
        m_values = DEEPSEEK_M if args.m.strip().lower() == "deepseek" else [int(v) for v in args.m.split(",")]
        shapes = [tuple(int(v) for v in s.split(",")) for s in (args.shapes or [])]
    except ValueError:
        parser.error("--m takes integers like 1,16,128 (or 'deepseek') and --shapes pairs like 7168,2048")
    if any(len(s) != 2 for s in shapes):
        parser.error("--shapes takes N,K pairs like 7168,2048")
    try:
        named = [shape for name in args.preset or [] for shape in preset_shapes(name)]
    except ValueError as exc:
        parser.error(f"--preset: {exc}")
    if args.shapes is None and not named:
        return m_values, list(SHAPES)
    layers = dedupe_shapes([parse_shape(f"{n},{k}") for n, k in shapes] + named)
    return m_values, [(s.n, s.k) for s in layers]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--m", default=",".join(map(str, M_VALUES)),
                        help="comma-separated M values, or 'deepseek': the engines' tuning grid 1..4096 plus 8192")
    parser.add_argument("--shapes", nargs="*", help="N,K pairs (default: the DeepSeek-V3 shapes of SHAPES)")
    parser.add_argument("--preset", nargs="+", metavar="NAME",
                        help="also the shapes of these presets, e.g. deepseek-v3-tp8 deepseek-v3-tp1")
    parser.add_argument("--no-sweep", action="store_true", help="time only the heuristic config of the Triton backend")
    parser.add_argument("--cutlass", action="store_true", help="also time the CUTLASS backend's default and space")
    parser.add_argument("--tuned", action="store_true",
                        help="also time the tuned op gemm.w8a8_block_fp8_matmul (peer tuned_op, shipped configs)")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="stop starting new points after this")
    parser.add_argument("--from-rows", type=Path, nargs="+", metavar="CSV",
                        help="no GPU work: summarize bench_rows.csv files of earlier runs (same device) into --out")
    args = parser.parse_args(argv)
    if args.from_rows:
        frame = pd.concat([pd.read_csv(path) for path in args.from_rows], ignore_index=True)
        args.out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out / "bench_rows.csv", index=False)
        table = summarize(frame)
        table.to_csv(args.out / "bench_best.csv")
        print_report(table, None)
        return 0
    m_values, shapes = _points(args, parser)
    if not torch.cuda.is_available():
        print("bench_peers.py needs a CUDA GPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    arch = detect_arch()
    ceilings = measure_ceilings()
    print(f"{arch.device_name}: {ceilings}", flush=True)
    command = ["python", "scripts/bench_peers.py", *(sys.argv[1:] if argv is None else argv)]
    info = run_info(arch.device_name, ceilings, command)
    (args.out / "ceilings.json").write_text(json.dumps(info, indent=2) + "\n")
    rows: list[dict] = []
    start = time.time()
    for n, k in shapes:
        for m in m_values:
            if time.time() - start > args.budget_s:
                print(f"budget reached; skipping M={m} N={n} K={k} and later points", flush=True)
                break
            bench_point(m, n, k, arch, ceilings, rows, sweep=not args.no_sweep, cutlass=args.cutlass,
                        tuned=args.tuned)
            pd.DataFrame(rows).to_csv(args.out / "bench_rows.csv", index=False)
            print(f"done M={m:>5} N={n:>5} K={k:>5}  ({time.time() - start:.0f}s)", flush=True)
    frame = pd.DataFrame(rows)
    table = summarize(frame)
    table.to_csv(args.out / "bench_best.csv")
    print_report(table, ceilings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
