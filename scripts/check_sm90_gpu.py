"""GPU check of the Hopper kernel (backend "sm90"): correctness, then a quick timing against cuBLAS.

    python scripts/check_sm90_gpu.py correct --out DIR      # ragged set x tiles x clusters x scale layouts x splits
                                                            # (and stream-K)
    python scripts/check_sm90_gpu.py time --out DIR         # tiles (split-K, stream-K at few tiles) vs cuBLAS
    python scripts/check_sm90_gpu.py time --few-tiles       # only the points with split-K / stream-K candidates
    python scripts/check_sm90_gpu.py time --swap-ab         # also swap-AB candidates (M <= 64 points only)
    python scripts/check_sm90_gpu.py time --swap-only --shape 4608,7168 --m 1,16   # swap-AB only, chosen points
    python scripts/check_sm90_gpu.py sanitize --out DIR     # compute-sanitizer memcheck/synccheck, small problems
    python scripts/check_sm90_gpu.py build                  # build every kernel the checks use (no GPU needed)

Every result is checked against the fp32 reference on fresh random data (relative Frobenius error
< 1e-2, no NaN); the output buffer is poisoned with NaN first so unwritten elements fail. Rows go to
``DIR/<phase>.csv``; a short table is printed last.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gemm.arch import get_arch  # noqa: E402
from gemm.kernels.nvcc import jit  # noqa: E402
from gemm.kernels.sm90 import codegen  # noqa: E402
from gemm.kernels.sm90.backend import Sm90Backend  # noqa: E402
from gemm.kernels.sm90.params import Sm90Params, overlap_fits  # noqa: E402
from gemm.problem import GemmProblem  # noqa: E402
from gemm.quant import mn_major_scales, random_problem_inputs  # noqa: E402
from gemm.reference import reference_matmul, relative_error  # noqa: E402

TILES = [(64, 128), (64, 64), (64, 32), (64, 208), (128, 128), (128, 112), (128, 160), (128, 192), (128, 208),
         (128, 48), (128, 16), (128, 144), (256, 96), (256, 64)]
RAGGED = [(1, 576, 7168), (3, 2112, 7168), (17, 512, 256), (31, 7168, 512), (100, 2112, 512), (128, 7168, 2304),
          (257, 576, 7168), (1000, 4608, 7168), (64, 1536, 18432), (520, 7168, 18432)]
TIME_SHAPES = [(2112, 7168), (4608, 7168), (7168, 2048), (36864, 7168), (7168, 18432), (512, 7168), (3072, 1536)]
TIME_M = [16, 128, 1024, 8192]
#: Split-K cases of ``correct``: split counts that divide K/128 and ones that do not, on the split-K shapes.
SPLIT_RAGGED = [(1, 512, 7168), (3, 576, 7168), (17, 2112, 512), (31, 2112, 7168), (128, 2112, 7168),
                (1000, 512, 7168), (100, 576, 256), (257, 4608, 2304)]
SPLIT_COUNTS = (2, 3, 5, 8)
#: Stream-K cases of ``correct`` beyond the split-K shapes: several waves of tiles, so the hybrid schedule
#: runs data-parallel rounds before the stream-K ones (and K of one, two and many blocks).
STREAM_RAGGED = SPLIT_RAGGED + [(1000, 7168, 7168), (520, 7168, 2304), (1000, 4608, 256), (257, 7168, 128)]


def run_checked(fn, a, b, sa, sb, ref) -> tuple[float, bool]:
    poison = torch.full_like(ref, float("nan"), dtype=torch.bfloat16)
    del poison  # the caching allocator hands the same block to the kernel's output
    out = fn(a, b, sa, sb)
    torch.cuda.synchronize()
    nan = bool(torch.isnan(out).any())
    return relative_error(out, ref), nan


def phase_build(_args) -> None:
    backend = Sm90Backend()
    configs = {Sm90Params.for_tile(bm, bn).kernel_config() for bm, bn in TILES}
    configs |= {Sm90Params.for_tile(bm, bn, overlap=False).kernel_config() for bm, bn in TILES}
    configs.add(Sm90Params.for_tile(64, 96).kernel_config())  # a split-K case of ``correct``
    for m in TIME_M:
        for n, k in TIME_SHAPES:
            for p in time_candidates(backend, GemmProblem(m, n, k)):
                configs.add(p.kernel_config())
    start = time.perf_counter()

    def report(outcome) -> None:
        result = outcome.result
        print(f"built {outcome.spec.name}: " + (f"error {str(outcome.error)[:300]}" if outcome.error else
              f"{result.seconds:.1f} s, regs {result.registers}, spill {result.spill_bytes}"), flush=True)

    outcomes = jit.build_many([codegen.build_spec(c) for c in sorted(configs, key=lambda c: c.name)], progress=report)
    failed = [o for o in outcomes if o.error]
    print(f"{len(outcomes)} kernels, {len(failed)} failed, {time.perf_counter() - start:.0f} s")


def phase_correct(args) -> None:
    backend = Sm90Backend()
    rows = []
    cases = []
    for bm, bn in TILES:
        for m, n, k in RAGGED:
            cases.append((Sm90Params.for_tile(bm, bn), (m, n, k), "row"))
            if overlap_fits(bm, bn):
                cases.append((Sm90Params.for_tile(bm, bn, overlap=False), (m, n, k), "row"))
    for m, n, k in RAGGED[::2]:
        for bm, bn in [(128, 112), (64, 128), (128, 128)]:
            for cm, cn in [(2, 1), (1, 2)]:
                for layout in ("row", "mn"):
                    cases.append((Sm90Params.for_tile(bm, bn, cluster_m=cm, cluster_n=cn), (m, n, k), layout))
            cases.append((Sm90Params.for_tile(bm, bn, raster="along_n", group=3), (m, n, k), "mn"))
    for m, n, k in SPLIT_RAGGED:  # split-K: tiles x split counts x scale layouts, some clusters and tile orders
        for bm, bn in [(64, 128), (64, 208), (128, 112), (128, 128), (256, 96)]:
            for splits in SPLIT_COUNTS:
                for layout in ("row", "mn"):
                    cases.append((Sm90Params.for_tile(bm, bn, splits=splits), (m, n, k), layout))
        for splits in (3, 8):
            for cm, cn in [(2, 1), (1, 2)]:
                cases.append((Sm90Params.for_tile(128, 128, cluster_m=cm, cluster_n=cn, splits=splits), (m, n, k),
                              "row"))
            cases.append((Sm90Params.for_tile(64, 96, raster="along_n", group=3, splits=splits), (m, n, k), "mn"))
    for m, n, k in STREAM_RAGGED:  # stream-K: tiles x scale layouts, overlap off, a tile order, swap-AB
        for bm, bn in [(64, 128), (64, 208), (128, 112), (128, 128), (256, 96)]:
            for layout in ("row", "mn"):
                cases.append((Sm90Params.for_tile(bm, bn, stream_k=True), (m, n, k), layout))
        cases.append((Sm90Params.for_tile(128, 128, overlap=False, stream_k=True), (m, n, k), "row"))
        cases.append((Sm90Params.for_tile(64, 96, raster="along_n", group=3, stream_k=True), (m, n, k), "mn"))
        if m <= 64:
            cases.append((Sm90Params.for_tile(64, 32, swap_ab=True, stream_k=True), (m, n, k), "row"))
    inputs = {}
    for params, (m, n, k), layout in cases:
        problem = GemmProblem(m, n, k)
        reason = backend.check(problem, params, None)
        if reason:
            rows.append(dict(params=params.short(), m=m, n=n, k=k, layout=layout, status="INVALID", error="",
                             note=reason))
            continue
        if (m, n, k) not in inputs:
            a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
            inputs[(m, n, k)] = (a, b, sa, sb, reference_matmul(a, b, sa, sb))
        a, b, sa, sb, ref = inputs[(m, n, k)]
        try:
            fn = backend.build(problem, params)
            err, nan = run_checked(fn, a, b, mn_major_scales(sa) if layout == "mn" else sa, sb, ref)
            status = "OK" if (err < 1e-2 and not nan) else "WRONG"
            rows.append(dict(params=params.short(), m=m, n=n, k=k, layout=layout, status=status,
                             error=f"{err:.2e}", note="nan" if nan else ""))
        except Exception as exc:  # recorded and reported; the other cases still run
            rows.append(dict(params=params.short(), m=m, n=n, k=k, layout=layout, status=type(exc).__name__,
                             error="", note=str(exc)[:300]))
            torch.cuda.synchronize()
    write_rows(args.out / "correct.csv", rows)
    bad = [r for r in rows if r["status"] not in ("OK", "INVALID")]
    print(f"correctness: {sum(r['status'] == 'OK' for r in rows)} ok, {len(bad)} bad, "
          f"{sum(r['status'] == 'INVALID' for r in rows)} invalid (refused by check)")
    for r in bad[:40]:
        print("  BAD", r)
    worst = max((float(r["error"]) for r in rows if r["status"] == "OK"), default=0.0)
    print(f"worst relative error of the passing cases: {worst:.2e}")


def time_candidates(backend: Sm90Backend, problem: GemmProblem, num_sms: int = 132,
                    swap_ab: bool = False) -> list[Sm90Params]:
    """Tiles x clusters x overlap, plus every split count the backend offers a tile shape of few tiles
    (``Sm90Backend.split_counts``: fewer tiles than half the SMs; 32-column tiles for split-K only) and for
    those shapes stream-K, plus
    with ``swap_ab`` the swap-AB candidates of the space (``Sm90Backend.swap_ab_space``)."""
    out = []
    if swap_ab:
        arch = dataclasses.replace(get_arch("H200"), num_sms=num_sms)
        out += [p for p in backend.swap_ab_space(problem, arch) if backend.check(problem, p, None) is None]
    for bm in backend.block_ms(problem):
        for bn in (32, 64, 96, 112, 128, 144, 160, 192, 208):
            variants = []
            if bn != 32:
                variants = [Sm90Params.for_tile(bm, bn, cluster_m=cm, cluster_n=cn)
                            for cm, cn in ((1, 1), (2, 1), (1, 2))]
                if overlap_fits(bm, bn):
                    variants.append(Sm90Params.for_tile(bm, bn, overlap=False))
            counts = backend.split_counts(problem, bm, bn, num_sms)
            variants += [Sm90Params.for_tile(bm, bn, splits=s) for s in counts]
            if counts:
                variants.append(Sm90Params.for_tile(bm, bn, stream_k=True))
            out += [p for p in variants if backend.check(problem, p, None) is None]
    return out


def phase_time(args) -> None:
    from gemm.tuner.timing import copies_for, replay_samples_us

    backend = Sm90Backend()
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    one = torch.ones((), device="cuda")
    rows = []
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    for n, k in args.shapes or TIME_SHAPES:
        for m in args.ms or TIME_M:
            problem = GemmProblem(m, n, k)
            candidates = time_candidates(backend, problem, num_sms, args.swap_ab or args.swap_only)
            if args.swap_only:
                candidates = [p for p in candidates if p.swap_ab]
            if args.few_tiles and not any((p.splits > 1 or p.stream_k) and not p.swap_ab for p in candidates):
                continue
            if (args.swap_ab or args.swap_only) and not any(p.swap_ab for p in candidates):
                continue
            base = random_problem_inputs(m, n, k, device="cuda")
            ref = reference_matmul(*base)
            per_set = sum(t.numel() * t.element_size() for t in base) + m * n * 2
            copies = min(64, copies_for(per_set, l2))
            sets = [base] + [tuple(t.clone() for t in base) for _ in range(copies - 1)]
            sets = sets * max(1, -(-12 // len(sets)))

            def median(fn, arg_sets):
                samples, _ = replay_samples_us(fn, arg_sets, 15)
                samples.sort()
                return samples[len(samples) // 2]

            cublas = median(lambda a, b, sa, sb: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one,
                                                                  out_dtype=torch.bfloat16), sets)
            best = None
            best_data_parallel = None
            best_plain = None  # without swap-AB
            for params in candidates:
                try:
                    fn = backend.build(problem, params)
                    err, nan = run_checked(fn, *base, ref)
                    if err >= 1e-2 or nan:
                        rows.append(dict(m=m, n=n, k=k, params=params.short(), us="", cublas_us=f"{cublas:.2f}",
                                         note=f"WRONG {err:.2e}"))
                        continue
                    us = median(fn, sets)
                except Exception as exc:
                    rows.append(dict(m=m, n=n, k=k, params=params.short(), us="", cublas_us=f"{cublas:.2f}",
                                     note=f"{type(exc).__name__}: {str(exc)[:200]}"))
                    continue
                rows.append(dict(m=m, n=n, k=k, params=params.short(), us=f"{us:.2f}", cublas_us=f"{cublas:.2f}",
                                 note=""))
                if best is None or us < best[0]:
                    best = (us, params)
                if (params.splits == 1 and not params.stream_k
                        and (best_data_parallel is None or us < best_data_parallel[0])):
                    best_data_parallel = (us, params)
                if not params.swap_ab and (best_plain is None or us < best_plain[0]):
                    best_plain = (us, params)
            mn_note = ""
            if best:  # what the row-major scale path costs: the best params again with MN-major scales
                mn_sets = [(a, b, mn_major_scales(sa), sb) for a, b, sa, sb in sets]
                mn_us = median(backend.build(problem, best[1]), mn_sets)
                mn_note = f"  mn-major {mn_us:8.2f} us"
                rows.append(dict(m=m, n=n, k=k, params="BEST-MN " + best[1].short(), us=f"{mn_us:.2f}",
                                 cublas_us=f"{cublas:.2f}", note="MN-major activation scales"))
                del mn_sets
            tflops = 2 * m * n * k / (best[0] * 1e6) if best else float("nan")
            split_note = ""
            if best and (best[1].splits > 1 or best[1].stream_k) and best_data_parallel:  # what split-/stream-K gained
                split_note = (f"  (data-parallel best {best_data_parallel[0]:.2f} us, "
                              f"{best_data_parallel[1].short()})")
                rows.append(dict(m=m, n=n, k=k, params="BEST-DP " + best_data_parallel[1].short(),
                                 us=f"{best_data_parallel[0]:.2f}", cublas_us=f"{cublas:.2f}",
                                 note="best without split-K or stream-K"))
            if best and best[1].swap_ab and best_plain:  # what swap-AB gained at this point
                split_note += f"  (best without swap-AB {best_plain[0]:.2f} us, {best_plain[1].short()})"
                rows.append(dict(m=m, n=n, k=k, params="BEST-NOSWAP " + best_plain[1].short(),
                                 us=f"{best_plain[0]:.2f}", cublas_us=f"{cublas:.2f}", note="best without swap-AB"))
            print(f"N={n:6d} K={k:6d} M={m:5d}  cublas {cublas:8.2f} us  sm90 best "
                  f"{best[0] if best else float('nan'):8.2f} us ({tflops:6.0f} TFLOPS)  ratio "
                  f"{cublas / best[0] if best else float('nan'):5.3f}  {best[1].short() if best else '-'}{mn_note}"
                  f"{split_note}", flush=True)
            rows.append(dict(m=m, n=n, k=k, params="BEST " + (best[1].short() if best else "-"),
                             us=f"{best[0]:.2f}" if best else "", cublas_us=f"{cublas:.2f}", note=""))
            del sets, base, ref
            torch.cuda.empty_cache()
            write_rows(args.out / "time.csv", rows)  # after every point: a run cut short keeps what it measured
    write_rows(args.out / "time.csv", rows)
    ratios = [float(r["cublas_us"]) / float(r["us"]) for r in rows if r["params"].startswith("BEST ") and r["us"]]
    if ratios:
        print(f"geomean sm90-best / cuBLAS per-tensor speed: "
              f"{math.exp(sum(math.log(x) for x in ratios) / len(ratios)):.3f} over {len(ratios)} points")


SANITIZE_SNIPPET = """
import sys, torch
sys.path.insert(0, {root!r})
from gemm.kernels.sm90.backend import Sm90Backend
from gemm.kernels.sm90.params import Sm90Params
from gemm.problem import GemmProblem
from gemm.quant import mn_major_scales, random_problem_inputs
from gemm.reference import reference_matmul, relative_error
p = Sm90Params.for_tile({bm}, {bn}, cluster_m={cm}, cluster_n={cn}, splits={splits}, swap_ab=bool({swap}),
                        stream_k=bool({sk}))
problem = GemmProblem({m}, {n}, {k})
a, b, sa, sb = random_problem_inputs({m}, {n}, {k}, device="cuda")
if {mn}:
    sa = mn_major_scales(sa)
out = Sm90Backend().build(problem, p)(a, b, sa, sb)
torch.cuda.synchronize()
print("relerr", relative_error(out, reference_matmul(a, b, sa.contiguous(), sb)))
"""


def phase_sanitize(args) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    cases = [dict(bm=128, bn=112, cm=1, cn=1, m=100, n=576, k=512, mn=0, splits=1),
             dict(bm=128, bn=128, cm=2, cn=1, m=300, n=2112, k=256, mn=1, splits=1),
             dict(bm=64, bn=128, cm=1, cn=2, m=3, n=576, k=512, mn=0, splits=1),
             dict(bm=128, bn=112, cm=1, cn=1, m=100, n=576, k=1280, mn=0, splits=3),
             dict(bm=64, bn=128, cm=1, cn=2, m=3, n=576, k=896, mn=1, splits=5)]
    cases = [dict(case, swap=0) for case in cases]
    # Swap-AB: the register-to-global stores at ragged M and N, MN-major scales at M % 4 != 0, split-K.
    cases += [dict(bm=128, bn=16, cm=1, cn=1, m=3, n=576, k=512, mn=1, splits=1, swap=1),
              dict(bm=64, bn=32, cm=1, cn=1, m=17, n=2112, k=896, mn=0, splits=3, swap=1)]
    cases = [dict(case, sk=0) for case in cases]
    # Stream-K: tiles cut between SMs (the slot stores and reads at ragged M and N), a hybrid launch with
    # data-parallel rounds, swap-AB.
    cases += [dict(bm=128, bn=112, cm=1, cn=1, m=100, n=576, k=1280, mn=0, splits=1, swap=0, sk=1),
              dict(bm=64, bn=128, cm=1, cn=1, m=3, n=2112, k=896, mn=1, splits=1, swap=0, sk=1),
              dict(bm=128, bn=112, cm=1, cn=1, m=1000, n=7168, k=384, mn=0, splits=1, swap=0, sk=1),
              dict(bm=64, bn=32, cm=1, cn=1, m=17, n=2112, k=896, mn=0, splits=1, swap=1, sk=1)]
    lines = []
    runs = [(cases[0], "memcheck"), (cases[1], "memcheck"), (cases[2], "memcheck"), (cases[1], "synccheck"),
            (cases[3], "memcheck"), (cases[4], "memcheck"), (cases[3], "synccheck"), (cases[5], "memcheck"),
            (cases[6], "memcheck"), (cases[5], "synccheck"), (cases[7], "memcheck"), (cases[7], "synccheck"),
            (cases[8], "memcheck"), (cases[9], "memcheck"), (cases[9], "synccheck"), (cases[10], "memcheck")]
    for case, tool in runs:
        if True:
            command = ["compute-sanitizer", f"--tool={tool}", "--error-exitcode=9", sys.executable, "-c",
                       SANITIZE_SNIPPET.format(root=root, **case)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            lines.append(f"{tool} {case}: exit {result.returncode}: {' | '.join(tail)}")
            print(lines[-1], flush=True)
    (args.out / "sanitize.txt").write_text("\n".join(lines) + "\n")


def write_rows(path: Path, rows: list[dict]) -> None:
    """``rows`` as a CSV at ``path`` (columns in first-seen order); nothing for no rows."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        pd.DataFrame(rows).to_csv(path, index=False)


def shape_arg(text: str) -> tuple[int, int]:
    """``N,K`` as two positive integers (argparse type)."""
    try:
        n, k = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,K (two integers), got {text!r}") from None
    if n <= 0 or k <= 0:
        raise argparse.ArgumentTypeError(f"expected positive N,K, got {text!r}")
    return n, k


def m_list_arg(text: str) -> list[int]:
    """``M[,M...]`` as positive integers (argparse type)."""
    try:
        ms = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if min(ms) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive M values, got {text!r}")
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phases", nargs="+", choices=["build", "correct", "time", "sanitize"])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out/sm90_check")))
    parser.add_argument("--few-tiles", action="store_true",
                        help="time: only the points where some tile shape gets split-K candidates")
    parser.add_argument("--swap-ab", action="store_true",
                        help="time: add swap-AB candidates and keep only the points that get some (M <= 64)")
    parser.add_argument("--swap-only", action="store_true",
                        help="time: only the swap-AB candidates (and cuBLAS), at M <= 64")
    parser.add_argument("--shape", dest="shapes", action="append", type=shape_arg, metavar="N,K",
                        help="time: this weight shape instead of the default set (repeatable)")
    parser.add_argument("--m", dest="ms", type=m_list_arg, metavar="M[,M...]",
                        help=f"time: these M instead of {','.join(map(str, TIME_M))}")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for phase in args.phases:
        start = time.perf_counter()
        {"build": phase_build, "correct": phase_correct, "time": phase_time, "sanitize": phase_sanitize}[phase](args)
        print(f"[{phase}] {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
