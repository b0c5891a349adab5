"""The untuned op against the tuned op and cuBLAS per-tensor FP8, on shapes whose configs it is not shown.

For each point, side by side in one process on the current GPU (every call verified
against the fp32 reference first, then timed by CUDA-graph replay over cold-L2 input
copies, as ``gemm bench`` does):

* ``untuned_op``: what the op runs when no config exists for the shape, i.e.
  ``gemm.dispatch.choose`` looking in no config directory (the cost model's
  predicted choice, or the Triton heuristic where there is none);
* ``tuned_op``: ``gemm.w8a8_block_fp8_matmul`` as installed (the user config
  directory, then the shipped configs);
* ``triton_heuristic``: what the untuned op ran before the prediction;
* ``cublas_per_tensor``: cuBLAS FP8 without block scales, the speed to aim for.

The default shapes are DeepSeek-V3's TP4 layers that no TP8 or TP1 layer shares:
their shipped H200 configs are hidden from the untuned op, and the shipped cost
model was fitted without them. The CUTLASS kernels both ops pick are compiled in
parallel before timing (``GEMM_BUILD_JOBS``). About 2-3 minutes on one H200.

    PYTHONPATH=. python scripts/check_untuned_gpu.py --out bench_out/untuned
    PYTHONPATH=. python scripts/check_untuned_gpu.py --shape 2560,5120 --m 1,64,1024 --out DIR

Writes ``bench_rows.csv``, ``bench_best.csv`` and ``ceilings.json`` (as ``gemm bench``
does), ``untuned.csv`` (per point: each peer's time and the choices) and
``summary.md`` (geomean speed ratios per M range) under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_M = (1, 8, 32, 64, 128, 256, 512, 1024, 4096, 8192)
UNTUNED, HEURISTIC, CUBLAS = "untuned_op", "triton_heuristic", "cublas_per_tensor"


def default_shapes() -> list[tuple[int, int]]:
    """DeepSeek-V3's TP4 layer shapes that are in neither the TP8 nor the TP1 preset."""
    from gemm.tuner.presets import preset_shapes

    seen = {(s.n, s.k) for name in ("deepseek-v3-tp8", "deepseek-v3-tp1") for s in preset_shapes(name)}
    return [(s.n, s.k) for s in preset_shapes("deepseek-v3-tp4") if (s.n, s.k) not in seen]


def untuned_choice(problem, device_index: int):
    """(backend, params) the op runs for ``problem`` with no config directory to look in."""
    from gemm import dispatch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no tuned config": expected here, every shape is untuned on purpose
        return dispatch.choose(problem, "cuda", device_index, roots=())


def prebuild_choices(points, device_index: int, say) -> None:
    """Compile, in parallel, every C++ kernel (CUTLASS, sm90) the untuned and the tuned op pick at ``points``."""
    from gemm import dispatch
    from gemm.kernels.prebuild import compiled_backends, prebuild

    wanted: dict[str, list] = {name: [] for name in compiled_backends()}
    for problem in points:
        for choose in (lambda p: untuned_choice(p, device_index), lambda p: dispatch.choose(p, "cuda", device_index)):
            backend, params = choose(problem)
            if backend.name in wanted:
                wanted[backend.name].append(params)
    for name, params in wanted.items():
        prebuild(name, params, "bfloat16", say)


def rig_class():
    import gemm
    from gemm.bench.peers import GpuRig, PeerCall, external_peers
    from gemm.bench.tables import TUNED
    from gemm.kernels.triton_fp8 import TritonBackend, launch

    class UntunedRig(GpuRig):
        """The GPU, timing the four calls of the module docstring at each point."""

        def calls(self, problem, sets, settings):
            from gemm.bench.peers import tuned_config

            index = sets[0][0].device.index or 0
            yield from (c for c in external_peers(problem, sets) if c.peer == CUBLAS)
            yield PeerCall(TUNED, tuned_config(problem), gemm.w8a8_block_fp8_matmul, sets)
            backend, params = untuned_choice(problem, index)
            try:
                fn = backend.build(problem, params)
            except Exception as exc:  # noqa: BLE001 - recorded as a failed candidate
                fn = exc
            yield PeerCall(UNTUNED, f"{backend.name}:{params.short()}", fn, sets)
            default = TritonBackend().default_params(problem, self.arch)
            yield PeerCall(HEURISTIC, default.short(), lambda *xs, p=default: launch(*xs, p), sets)

    return UntunedRig


def summary(table, rows, device: str, shapes, seconds: float) -> tuple[str, "object"]:
    """(markdown, per-point frame) of the speed ratios by M range."""
    import pandas as pd

    from gemm.bench.tables import M_RANGES, TUNED, geomean, markdown_table

    frame = table.reset_index()
    ok = rows[rows.status == "OK"]
    configs = ok.pivot_table(index=["N", "K", "M"], columns="peer", values="config", aggfunc="first")
    for peer in (UNTUNED, TUNED):
        frame[f"{peer}_config"] = [configs.get(peer, {}).get((n, k, m)) for n, k, m in zip(frame.N, frame.K, frame.M)]
    pairs = [(UNTUNED, TUNED), (UNTUNED, CUBLAS), (TUNED, CUBLAS), (HEURISTIC, TUNED), (UNTUNED, HEURISTIC)]
    for mine, other in pairs:
        if mine in frame and other in frame:
            frame[f"{mine}/{other}"] = frame[other] / frame[mine]  # > 1: ``mine`` is faster
    header = ["speed ratio (>1: first faster)"] + [name for name, _, _ in M_RANGES]
    body = []
    for mine, other in pairs:
        column = f"{mine}/{other}"
        if column not in frame:
            continue
        cells = [geomean(frame.loc[(frame.M >= lo) & (frame.M <= hi), column]) for _, lo, hi in M_RANGES]
        body.append([f"{mine} vs {other}"] + [round(c, 3) if math.isfinite(c) else "-" for c in cells])
    failed = rows[(rows.status != "OK") & rows.peer.isin([UNTUNED, TUNED])]
    lines = [f"# The untuned op on {device}", "",
             f"Shapes: {', '.join(f'({n}, {k})' for n, k in shapes)}; M: "
             f"{', '.join(str(m) for m in sorted(frame.M.unique()))}. The untuned op looks in no config directory; "
             f"the tuned op reads the user config directory, then the shipped configs. Geomeans over points; "
             f"M = 96 counts in 'all' only.", "",
             markdown_table(header, body), "",
             f"{len(frame)} points, {len(failed)} failed or wrong calls of the two ops; {seconds / 60:.1f} minutes.",
             ""]
    if len(failed):
        lines += ["Failed:", ""] + [f"- M={r.M} N={r.N} K={r.K} {r.peer} {r.config}: {r.status}"
                                    for r in failed.itertuples()] + [""]
    return "\n".join(lines), pd.DataFrame(frame)


def main(argv=None) -> int:
    from gemm.tuner.presets import parse_m_list, parse_shape

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", metavar="N,K", help="a weight shape (repeatable; default: "
                                                                        "DeepSeek-V3's TP4-only layers)")
    parser.add_argument("--m", metavar="LIST", help=f"M values (default {','.join(map(str, DEFAULT_M))})")
    parser.add_argument("--out", type=Path, default=Path("bench_out/untuned"), help="output directory")
    parser.add_argument("--time-limit", type=float, default=420.0, metavar="S",
                        help="start no point after S seconds of timing (default 420: the run fits 10 minutes)")
    args = parser.parse_args(argv)
    try:
        shapes = [(s.n, s.k) for s in map(parse_shape, args.shape)] if args.shape else default_shapes()
        m_values = parse_m_list(args.m) if args.m else DEFAULT_M
    except ValueError as exc:
        print(f"check_untuned_gpu.py: {exc}", file=sys.stderr)
        return 2
    import torch

    if not torch.cuda.is_available():
        print("check_untuned_gpu.py: no CUDA device; run it on the GPU it measures", file=sys.stderr)
        return 2
    from gemm.bench.run import BenchSettings, run_bench
    from gemm.problem import GemmProblem

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.time()
    index = torch.cuda.current_device()
    prebuild_choices([GemmProblem(m, n, k) for n, k in shapes for m in m_values], index, say)
    settings = BenchSettings(tuple(shapes), tuple(m_values), args.out, time_limit_s=args.time_limit,
                             command=tuple(sys.argv))
    outcome = run_bench(settings, rig_class()(), say)
    text, frame = summary(outcome.table, outcome.rows, outcome.device_name, shapes, time.time() - started)
    if outcome.skipped:
        text += f"\n{outcome.skipped} points were skipped at --time-limit {args.time_limit:g} s.\n"
    frame.to_csv(args.out / "untuned.csv", index=False)
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
