"""Build every CUTLASS instantiation the backend's space can ask for, then check (and time) its candidates.

1. Collects the compile-time configs of ``CutlassBackend.param_space`` over the
   DeepSeek-V3 shapes and M grid (plus fp16 outputs), builds them in parallel
   and prints compile time, registers, spills, stages and shared memory of each.
2. For a set of (M, N, K) points runs every candidate of the space against the
   fp32 reference on fresh random data (relative Frobenius error <= 1e-2,
   NaN fails) and, with ``--time``, times the correct ones in a CUDA graph over
   rotated input copies (cold L2), next to cuBLAS blockwise where it is correct.

Writes one JSON line per candidate to ``--out`` and prints a summary: per point
the best CUTLASS candidate, the best of each tile height, the default params and
cuBLAS, in microseconds, then geomean ratios (best of the 256-row tiles over the
best of the 128-row ones, and each over cuBLAS).

    python scripts/check_cutlass_gpu.py --points quick --time --out results/cutlass_check.jsonl

The CUTLASS release comes from ``GEMM_CUTLASS_DIR`` (else the nvidia-cutlass
wheel); the 256x128 tile is in the space from CUTLASS 4.3 on, at M >= 512.
``--points wide`` (M = 1024 and 4096 over all shapes) compares it with the
128x128 tile and cuBLAS where it matters:

    GEMM_CUTLASS_DIR=.carry/cutlass-new python scripts/check_cutlass_gpu.py --points wide --time
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gemm.arch import detect_arch  # noqa: E402
from gemm.bench.measure import cold_l2_copies, graph_time_us, make_input_sets  # noqa: E402
from gemm.bench.tables import geomean  # noqa: E402
from gemm.kernels.base import BackendError  # noqa: E402
from gemm.kernels.cublas import CublasBackend, CublasParams  # noqa: E402
from gemm.kernels.cutlass import jit, launcher  # noqa
from gemm.kernels.nvcc import toolchain  # noqa: E402
from gemm.kernels.cutlass.backend import CutlassBackend  # noqa: E402
from gemm.kernels.cutlass.config import KernelConfig  # noqa: E402
from gemm.problem import GemmProblem  # noqa: E402
from gemm.quant import random_problem_inputs  # noqa: E402
from gemm.reference import reference_matmul, relative_error  # noqa: E402

SHAPES = [(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304), (576, 7168),
          (36864, 7168), (7168, 18432)]
M_VALUES = [1, 3, 16, 64, 100, 128, 512, 1024, 4096]
POINT_SETS = {
    "quick": [(m, n, k) for n, k in [(576, 7168), (2112, 7168), (7168, 2304), (36864, 7168)]
              for m in (1, 64, 512, 4096)],
    "full": [(m, n, k) for n, k in SHAPES for m in M_VALUES],
    "wide": [(m, n, k) for m in (4096, 1024) for n, k in SHAPES],
}


def all_kernel_configs(backend: CutlassBackend, arch) -> list[KernelConfig]:
    configs: dict[KernelConfig, None] = {}
    for n, k in SHAPES:
        for m in M_VALUES:
            for params in backend.param_space(GemmProblem(m, n, k), arch):
                configs[params.kernel_config("bfloat16")] = None
    for params in (backend.default_params(GemmProblem(1, 576, 7168), arch),
                   backend.default_params(GemmProblem(64, 7168, 2304), arch),
                   backend.default_params(GemmProblem(4096, 7168, 2304), arch)):
        configs[params.kernel_config("float16")] = None
    return list(configs)


def build_all(configs: list[KernelConfig], jobs: int) -> bool:
    start = time.perf_counter()
    print(f"building {len(configs)} CUTLASS instantiations with {jobs} jobs", flush=True)

    def report(outcome: jit.BuildOutcome) -> None:
        if outcome.error is not None:
            print(f"  FAILED {outcome.config.name}: {str(outcome.error)[-3000:]}", flush=True)
            return
        r = outcome.result
        library = launcher.load_library(r.path)
        print(f"  {outcome.config.name:55s} {'cached' if r.cached else f'{r.seconds:5.1f} s'}  "
              f"regs={r.registers} spill={r.spill_bytes} B stages={library.stages} "
              f"smem={library.shared_memory_bytes} B", flush=True)

    outcomes = jit.build_many(configs, jobs=jobs, progress=report)
    failed = sum(o.error is not None for o in outcomes)
    print(f"built {len(outcomes) - failed}/{len(outcomes)} in {time.perf_counter() - start:.0f} s", flush=True)
    return failed == 0


def time_fn(fn, input_sets) -> float:
    """Median microseconds per call, CUDA-graph replays cycling over cold-L2 input copies."""
    return graph_time_us(fn, input_sets, reps=10).us


def check_point(backend: CutlassBackend, arch, m: int, n: int, k: int, timing: bool, out_file) -> dict:
    problem = GemmProblem(m, n, k)
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda", seed=m * 31 + n + k)
    ref = reference_matmul(a, b, sa, sb)
    input_sets = None
    if timing:
        per_set = n * k + m * k + 4 * (m + n) * math.ceil(k / 128)
        input_sets = make_input_sets(m, n, k, cold_l2_copies(per_set, arch.l2_bytes), seed=m + n)
    default = backend.default_params(problem, arch)
    results, counts = [], {"ok": 0, "wrong": 0, "invalid": 0, "failed": 0}
    for params in backend.param_space(problem, arch):
        row = {"m": m, "n": n, "k": k, "params": params.to_dict(), "short": params.short()}
        try:
            fn = backend.build(problem, params)
            error = relative_error(fn(a, b, sa, sb), ref)
            row["error"] = error
            if not error <= 1e-2:
                row["status"] = "WRONG_RESULT"
                counts["wrong"] += 1
                print(f"  WRONG {problem} {params.short()}: error {error:.3g}", flush=True)
            else:
                row["status"] = "OK"
                counts["ok"] += 1
                if timing:
                    row["us"] = time_fn(fn, input_sets)
        except BackendError as exc:
            row["status"] = type(exc).__name__
            row["message"] = str(exc)[-500:]
            counts["invalid" if row["status"] == "UnsupportedProblem" else "failed"] += 1
            print(f"  {row['status']} {problem} {params.short()}: {str(exc)[-300:]}", flush=True)
        out_file.write(json.dumps(row) + "\n")
        results.append(row)
    summary = {"point": (m, n, k), **counts}
    timed = [r for r in results if "us" in r]
    if timed:
        best = min(timed, key=lambda r: r["us"])
        summary["best_us"], summary["best"] = best["us"], best["short"]
        for tile_m in sorted({r["params"]["tile_m"] for r in timed}):
            summary[f"best{tile_m}_us"] = min(r["us"] for r in timed if r["params"]["tile_m"] == tile_m)
        summary["default_us"] = next((r["us"] for r in timed if r["params"] == default.to_dict()), None)
        if summary["default_us"] is None:
            try:
                summary["default_us"] = time_fn(backend.build(problem, default), input_sets)
            except BackendError:
                pass
        cublas = CublasBackend()
        if cublas.check(problem, CublasParams(), arch) is None:
            fn = cublas.build(problem, CublasParams())
            if relative_error(fn(a, b, sa, sb), ref) <= 1e-2:
                summary["cublas_us"] = time_fn(fn, input_sets)
        flops = 2 * m * n * k
        summary["best_tflops"] = flops / best["us"] / 1e6
    return summary


def print_tile_comparison(summaries: list[dict]) -> None:
    """Geomeans of the 256-row tiles' best against the 128-row tiles' best and cuBLAS, overall and at M >= 1024."""
    for label, rows in (("all points", summaries), ("M >= 1024", [s for s in summaries if s["point"][0] >= 1024])):
        both = [s for s in rows if "best256_us" in s and "best128_us" in s]
        if not both:
            continue
        wide = geomean(s["best128_us"] / s["best256_us"] for s in both)
        with_cublas = [s for s in both if "cublas_us" in s]
        print(f"{label}: best 256x128 over best 128x128: {wide:.3f} ({len(both)} points); over cuBLAS: "
              f"256x128 {geomean(s['cublas_us'] / s['best256_us'] for s in with_cublas):.3f}, 128x128 "
              f"{geomean(s['cublas_us'] / s['best128_us'] for s in with_cublas):.3f}, best of all "
              f"{geomean(s['cublas_us'] / s['best_us'] for s in with_cublas):.3f} ({len(with_cublas)} points)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", choices=sorted(POINT_SETS), default="quick")
    parser.add_argument("--time", action="store_true", help="time correct candidates (CUDA graph, cold L2)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel nvcc processes")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("cutlass_check.jsonl"))
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop checking new points after this long (the summary still prints)")
    args = parser.parse_args()

    backend = CutlassBackend()
    headers = toolchain.find_cutlass()
    print(f"CUTLASS {headers.version_string} headers ({headers.origin}: {headers.include_dirs[0]})", flush=True)
    if not torch.cuda.is_available():
        print("no CUDA device: building only", flush=True)
        args.build_only = True
    arch = detect_arch() if torch.cuda.is_available() else None
    if arch is None:
        from gemm.arch import get_arch
        arch = get_arch("H100")
    ok = build_all(all_kernel_configs(backend, arch), args.jobs)
    if args.build_only:
        return 0 if ok else 1
    reason = backend.unavailable_reason()
    if reason:
        print(f"CUTLASS backend unavailable: {reason}")
        return 1
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  points: {args.points}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summaries = []
    deadline = time.perf_counter() + args.max_seconds if args.max_seconds else math.inf
    with open(args.out, "w") as out_file:
        for m, n, k in POINT_SETS[args.points]:
            start = time.perf_counter()
            if start > deadline:
                print(f"time budget spent: points from M={m} N={n} K={k} on not checked", flush=True)
                break
            summary = check_point(backend, arch, m, n, k, args.time, out_file)
            summaries.append(summary)
            line = (f"M={m:5d} N={n:5d} K={k:5d}: ok {summary['ok']:3d} wrong {summary['wrong']} "
                    f"invalid {summary['invalid']} failed {summary['failed']}")
            if "best_us" in summary:
                per_tile = " ".join(f"{key[4:-3]}:{value:.1f}" for key, value in summary.items()
                                    if key.startswith("best") and key[4:-3].isdigit())
                line += (f" | best {summary['best_us']:8.1f} us ({summary['best_tflops']:6.1f} TFLOPS) "
                         f"[by tile_m {per_tile}] "
                         f"default {summary.get('default_us') or float('nan'):8.1f} us "
                         f"cuBLAS {summary.get('cublas_us', float('nan')):8.1f} us | {summary['best']}")
            print(line + f"  [{time.perf_counter() - start:.0f} s]", flush=True)
    wrong = sum(s["wrong"] + s["failed"] for s in summaries)
    args.out.with_suffix(".summary.json").write_text(json.dumps(summaries, indent=1))
    if args.time:
        pairs = [(s["cublas_us"], s["best_us"]) for s in summaries if "cublas_us" in s]
        defaults = [(s["default_us"], s["best_us"]) for s in summaries if s.get("default_us")]
        print(f"geomean speed-up of best CUTLASS over cuBLAS blockwise: {geomean(c / b for c, b in pairs):.3f} "
              f"over {len(pairs)} points (cuBLAS wrong or refused elsewhere)")
        print(f"geomean speed-up of best CUTLASS over its default params: {geomean(d / b for d, b in defaults):.3f}")
        default_vs_cublas = [s["cublas_us"] / s["default_us"] for s in summaries
                             if "cublas_us" in s and s.get("default_us")]
        print(f"geomean speed-up of CUTLASS default params over cuBLAS blockwise: {geomean(default_vs_cublas):.3f}")
        print_tile_comparison(summaries)
    print(f"{wrong} wrong or failed candidates")
    return 1 if wrong or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
