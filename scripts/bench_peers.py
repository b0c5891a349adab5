"""The peer benchmark with the options of the runs recorded under ``docs/bench/`` (their ``ceilings.json``).

``gemm bench`` is the same benchmark as a command of the installed package
(``gemm.bench``); this script keeps the earlier spelling of its options, so the
recorded commands still run: ``--no-sweep`` (default: also the Triton sweep),
``--tuned`` (default: no tuned op), ``--shapes``, ``--m deepseek`` and
``--budget-s``; without ``--shapes`` or ``--preset`` the nine DeepSeek-V3 shapes
of ``SHAPES``. It writes ``bench_rows.csv``, ``bench_best.csv`` and
``ceilings.json`` into ``--out`` and prints the summary (the markdown report is
``gemm bench --report``).

    python scripts/bench_peers.py --out bench_out [--m 1,16,128] [--shapes 7168,2048 2112,7168]
    python scripts/bench_peers.py --out bench_out --tuned --cutlass --m deepseek --preset deepseek-v3-tp8
    python scripts/bench_peers.py --from-rows docs/bench/h100/bench_rows.csv --out /tmp/summary   # no GPU
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from gemm.bench.run import BenchSettings, console_summary, merge_rows, run_bench
from gemm.tuner.presets import DEFAULT_M_GRID, dedupe_shapes, parse_shape, preset_shapes

SHAPES = [(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304),
          (576, 7168), (36864, 7168), (7168, 18432)]
M_VALUES = [1, 3, 16, 64, 100, 128, 512, 1024, 4096]
DEEPSEEK_M = [*DEFAULT_M_GRID, 8192]  # the engines' tuning grid plus one large prefill batch


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
    parser.add_argument("--sm90", action="store_true",
                        help="also time the Hopper kernel's default and the best-ranked 12 of its space")
    parser.add_argument("--tuned", action="store_true",
                        help="also time the tuned op gemm.w8a8_block_fp8_matmul (peer tuned_op, shipped configs)")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="stop starting new points after this")
    parser.add_argument("--from-rows", type=Path, nargs="+", metavar="CSV",
                        help="no GPU work: summarize bench_rows.csv files of earlier runs (same device) into --out")
    args = parser.parse_args(argv)
    if args.from_rows:
        _, table = merge_rows(args.from_rows, args.out)
        print(console_summary(table, None))
        return 0
    m_values, shapes = _points(args, parser)
    import torch

    if not torch.cuda.is_available():
        print("bench_peers.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from gemm.bench.peers import GpuRig

    command = ("python", "scripts/bench_peers.py", *(sys.argv[1:] if argv is None else argv))
    settings = BenchSettings(tuple(shapes), tuple(m_values), args.out, tuned=args.tuned, sweep=not args.no_sweep,
                             cutlass=args.cutlass, sm90=args.sm90, time_limit_s=None if math.isinf(args.budget_s) else args.budget_s,
                             command=command)
    outcome = run_bench(settings, GpuRig(), lambda text: print(text, flush=True))
    print(console_summary(outcome.table, outcome.ceilings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
