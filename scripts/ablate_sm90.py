"""Time Hopper-kernel libraries built with ``-DGEMM_SM90_ABLATE=N`` (stages left out) side by side.

    python scripts/ablate_sm90.py --shape 4096,7168,7168 --out DIR LIB.so [LIB.so ...]

Each library is a ``kernel.cu`` of ``gemm.kernels.sm90.codegen`` compiled by hand with the ablation macro
(0: the real kernel, 1: no promotion, 2: no loads after the first ring of stages, 4: no scale loads; bits
combine) or another
experiment's flags. Results of ablated builds are wrong by design: the relative error is printed only for
libraries whose file name contains ``_a0`` (real builds). Times are CUDA-graph replays over cold-L2 copies
(median), each next to cuBLAS per-tensor FP8 timed in the same process, since runs of separate processes
differ by up to 10%.

Every library runs in its own process under ``--timeout`` seconds: an experiment that hangs the GPU (a
deadlocked barrier, a register reconfiguration that never completes) costs that long, is reported as
TIMEOUT and the next library still runs. Rows go to ``DIR/ablate.csv`` after every library.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIELDS = ("library", "cluster", "layout", "us", "tflops", "cublas_us", "speed_vs_cublas", "rel_error", "status")


def time_one(path: Path, shape: tuple[int, int, int], clusters: list[int], layouts: list[str],
             splits: int = 1, dependent_launch: bool = False) -> list[dict]:
    """Rows of one library, timed in this process (the child's side)."""
    import torch

    from gemm.kernels.sm90.launcher import Sm90Library, make_gemm_fn
    from gemm.kernels.sm90.params import Sm90Params
    from gemm.problem import GemmProblem
    from gemm.quant import mn_major_scales, random_problem_inputs
    from gemm.reference import reference_matmul, relative_error
    from gemm.tuner.timing import copies_for, replay_samples_us

    def median_us(fn, sets) -> float:
        samples, _ = replay_samples_us(fn, sets, 20)
        samples.sort()
        return samples[len(samples) // 2]

    m, n, k = shape
    problem = GemmProblem(m, n, k)
    base = random_problem_inputs(m, n, k, device="cuda")
    per_set = sum(t.numel() * t.element_size() for t in base) + 2 * m * n
    copies = min(32, copies_for(per_set, torch.cuda.get_device_properties(0).L2_cache_size))
    sets = [base] + [tuple(t.clone() for t in base) for _ in range(copies - 1)]
    sets = sets * max(1, -(-12 // len(sets)))
    one = torch.ones((), device="cuda")
    cublas = median_us(lambda a, b, sa, sb: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one,
                                                             out_dtype=torch.bfloat16), sets)
    mn_sets = [(a, b, mn_major_scales(sa), sb) for a, b, sa, sb in sets]
    ref = reference_matmul(*base) if "_a0" in path.name else None
    library = Sm90Library(path)
    flops = 2 * m * n * k
    rows = []
    for cluster_m in clusters:
        # Only the run-time fields matter (and swap_ab, which must match the library's).
        params = Sm90Params(block_m=128, block_n=128, cluster_m=cluster_m, splits=splits, swap_ab=library.swap_ab,
                            dependent_launch=dependent_launch)
        fn = make_gemm_fn(library, problem, params)
        error = relative_error(fn(*base), ref) if ref is not None else float("nan")
        for layout, arg_sets in (("row", sets), ("mn", mn_sets)):
            if layout not in layouts:
                continue
            us = median_us(fn, arg_sets)
            rows.append(dict(library=path.name, cluster=f"{cluster_m}x1", layout=layout, us=f"{us:.2f}",
                             tflops=f"{flops / us / 1e6:.0f}", cublas_us=f"{cublas:.2f}",
                             speed_vs_cublas=f"{cublas / us:.3f}", rel_error=f"{error:.1e}", status="OK"))
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(FIELDS)).to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("libraries", nargs="+", type=Path)
    parser.add_argument("--shape", default="4096,7168,7168", help="M,N,K")
    parser.add_argument("--clusters", default="1,2", help="cluster_m values to time (comma-separated)")
    parser.add_argument("--layouts", default="row,mn", help="activation-scale layouts to time: row, mn")
    parser.add_argument("--splits", type=int, default=1, help="split-K count of every launch (default 1)")
    parser.add_argument("--dependent-launch", action="store_true",
                        help="launch as programmatic dependent launches (consecutive replays may overlap)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per library (default 60)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/ablate_sm90"), help="output directory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
        clusters = [int(c) for c in args.clusters.split(",")]
    except ValueError:
        parser.error("--shape takes M,N,K and --clusters a comma-separated list of integers")
    if args.splits < 1:
        parser.error(f"--splits takes a positive integer, got {args.splits}")
    if len(shape) != 3 or min(shape) <= 0:
        parser.error(f"--shape takes three positive integers M,N,K, got {args.shape!r}")
    layouts = args.layouts.split(",")
    if args.child:  # one library, rows as JSON lines on stdout
        for row in time_one(args.libraries[0], shape, clusters, layouts, args.splits, args.dependent_launch):
            print(json.dumps(row), flush=True)
        return
    rows: list[dict] = []
    for path in args.libraries:
        command = [sys.executable, __file__, str(path), "--child", "--shape", args.shape, "--clusters",
                   args.clusters, "--layouts", args.layouts, "--splits", str(args.splits)]
        command += ["--dependent-launch"] if args.dependent_launch else []
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
            found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            rows += found or [dict(library=path.name, status=f"FAILED: {last[:300]}")]
        except subprocess.TimeoutExpired:
            rows.append(dict(library=path.name, status=f"TIMEOUT after {args.timeout:.0f} s"))
        write_rows(args.out / "ablate.csv", rows)
        for row in rows[-len(clusters) * len(layouts):]:
            if row.get("library") == path.name:
                print(f"{row['library']:40s} {row.get('cluster', ''):4s} {row.get('layout', ''):3s} "
                      f"{row.get('us', ''):>9s} us {row.get('tflops', ''):>5s} TFLOPS "
                      f"({row.get('speed_vs_cublas', '')}x cuBLAS {row.get('cublas_us', '')} us) "
                      f"err {row.get('rel_error', '')} {row['status']}", flush=True)


if __name__ == "__main__":
    main()
