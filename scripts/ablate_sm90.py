"""Time Hopper-kernel libraries built with ``-DGEMM_SM90_ABLATE=N`` (stages left out) side by side.

    python scripts/ablate_sm90.py --shape 4096,7168,7168 DIR/*.so

Each library is a ``kernel.cu`` of ``gemm.kernels.sm90.codegen`` compiled by hand with the ablation macro
(0: the real kernel, 1: no promotion, 2: no loads after the first ring of stages, 3: both). Results of
ablated builds are wrong by design; only times are printed (CUDA-graph replay over cold-L2 copies, median),
next to cuBLAS per-tensor FP8 on the same inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gemm.kernels.sm90.launcher import Sm90Library, make_gemm_fn  # noqa: E402
from gemm.kernels.sm90.params import Sm90Params  # noqa: E402
from gemm.problem import GemmProblem  # noqa: E402
from gemm.quant import mn_major_scales, random_problem_inputs  # noqa: E402
from gemm.reference import reference_matmul, relative_error  # noqa: E402
from gemm.tuner.timing import copies_for, replay_samples_us  # noqa: E402


def median_us(fn, sets) -> float:
    samples, _ = replay_samples_us(fn, sets, 20)
    samples.sort()
    return samples[len(samples) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("libraries", nargs="+", type=Path)
    parser.add_argument("--shape", default="4096,7168,7168", help="M,N,K")
    parser.add_argument("--clusters", default="1,2", help="cluster_m values to time (comma-separated)")
    parser.add_argument("--layouts", default="row,mn", help="activation-scale layouts to time: row, mn")
    args = parser.parse_args()
    m, n, k = (int(v) for v in args.shape.split(","))
    problem = GemmProblem(m, n, k)
    base = random_problem_inputs(m, n, k, device="cuda")
    per_set = sum(t.numel() * t.element_size() for t in base) + 2 * m * n
    copies = min(32, copies_for(per_set, torch.cuda.get_device_properties(0).L2_cache_size))
    sets = [base] + [tuple(t.clone() for t in base) for _ in range(copies - 1)]
    sets = sets * max(1, -(-12 // len(sets)))
    one = torch.ones((), device="cuda")
    cublas = median_us(lambda a, b, sa, sb: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one,
                                                             out_dtype=torch.bfloat16), sets)
    flops = 2 * m * n * k
    print(f"M={m} N={n} K={k}: cuBLAS per-tensor {cublas:9.2f} us {flops / cublas / 1e6:6.0f} TFLOPS")
    mn_sets = [(a, b, mn_major_scales(sa), sb) for a, b, sa, sb in sets]
    ref = reference_matmul(*base)
    for path in args.libraries:
        library = Sm90Library(path)
        for cluster_m in (int(c) for c in args.clusters.split(",")):
            params = Sm90Params(block_m=128, block_n=128, cluster_m=cluster_m)  # run-time fields only matter
            fn = make_gemm_fn(library, problem, params)
            error = relative_error(fn(*base), ref) if "_a0" in path.name else float("nan")
            for layout, arg_sets in (("row", sets), ("mn", mn_sets)):
                if layout not in args.layouts.split(","):
                    continue
                us = median_us(fn, arg_sets)
                print(f"{path.name:40s} c{cluster_m}x1 {layout:3s} {us:9.2f} us {flops / us / 1e6:6.0f} TFLOPS "
                      f"({cublas / us:.3f}x cuBLAS) err {error:.1e}", flush=True)


if __name__ == "__main__":
    main()
