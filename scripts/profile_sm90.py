"""One launch of each named Hopper-kernel config (and cuBLAS per-tensor FP8) inside a profiler range, for ncu.

    ncu --profile-from-start off --clock-control none --section SpeedOfLight ... \\
        python scripts/profile_sm90.py --shape 4096,7168,7168 --params 128x128,128x192:ov=0

Each ``--params`` item is ``BMxBN`` with optional ``:key=value`` fields of ``Sm90Params``
(``ov`` for overlap, ``cm``/``cn`` for the cluster, ``sk`` for splits, ``sw`` for swap-AB, ``st`` for stream-K,
``pdl`` for a programmatic dependent launch,
e.g. ``64x96:sk=3``, ``64x16:sw=1:sk=4``, ``128x112:st=1``). Every launch is
checked against the reference first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gemm.kernels.sm90.backend import Sm90Backend  # noqa: E402
from gemm.kernels.sm90.params import Sm90Params  # noqa: E402
from gemm.problem import GemmProblem  # noqa: E402
from gemm.quant import random_problem_inputs  # noqa: E402
from gemm.reference import reference_matmul, relative_error  # noqa: E402

ALIASES = {"ov": "overlap", "cm": "cluster_m", "cn": "cluster_n", "sk": "splits", "sw": "swap_ab", "st": "stream_k",
           "pdl": "dependent_launch"}
BOOLEAN_FIELDS = ("overlap", "swap_ab", "stream_k", "dependent_launch")


def parse_params(text: str) -> Sm90Params:
    """``BMxBN[:key=value...]`` as params; ValueError naming the item when it is not one."""
    try:
        tile, *fields = text.split(":")
        block_m, block_n = (int(v) for v in tile.split("x"))
        values = {}
        for field in fields:
            key, value = field.split("=")
            key = ALIASES.get(key, key)
            values[key] = bool(int(value)) if key in BOOLEAN_FIELDS else (value if key == "raster" else int(value))
        return Sm90Params.for_tile(block_m, block_n, **values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--params item {text!r}: expected BMxBN[:key=value...] with keys "
                         f"{', '.join(sorted(ALIASES))} or Sm90Params fields ({exc})") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="4096,7168,7168", help="M,N,K")
    parser.add_argument("--params", default="128x128", help="comma-separated BMxBN[:key=value...]")
    parser.add_argument("--no-cublas", action="store_true")
    args = parser.parse_args()
    try:
        m, n, k = (int(v) for v in args.shape.split(","))
        all_params = [parse_params(text) for text in args.params.split(",")]
    except ValueError as exc:
        parser.error(str(exc) if "--params" in str(exc) else f"--shape takes M,N,K, got {args.shape!r}")
    problem = GemmProblem(m, n, k)
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
    ref = reference_matmul(a, b, sa, sb)
    backend = Sm90Backend()
    fns = []
    for params in all_params:
        fn = backend.build(problem, params)
        out = fn(a, b, sa, sb)
        print(f"{params.short()}: relative error {relative_error(out, ref):.2e}")
        fns.append(fn)
    one = torch.ones((), device="cuda")
    cublas = (lambda: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    for _ in range(3):  # warm up (module load, clocks)
        for fn in fns:
            fn(a, b, sa, sb)
        if not args.no_cublas:
            cublas()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for fn in fns:
        fn(a, b, sa, sb)
    if not args.no_cublas:
        cublas()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
