"""The ``gemm`` command line.

::

    gemm tune [--preset deepseek-v3-tp8 | --shape N,K ...] [--m 1,16,...] [--m-extra 8192]
              [--backends triton,cutlass,cublas] [--out DIR] [--resume] [--interpret]
              [--gpus all|N|0,1,3 | --ray [ADDRESS]]
    gemm show PATH...                      table of tuned entries
    gemm export --format vllm|sglang SRC... --out DST
    gemm import SRC... --out DST [--arch H100]
    gemm validate PATH...                  exit 1 if any file is invalid
    gemm build [--configs DIR | --config FILE]   compile the CUTLASS kernels configs name
    gemm plot LOG... --out DIR             TFLOPS vs M, and which backend wins where
    gemm compare PRUNED_LOG EXHAUSTIVE_LOG how close pruned picks come to exhaustive bests
    gemm predict --arch H20 [--preset NAME... | --shape N,K ...] [--out DIR]
                                           configs for a GPU from its spec and the cost model
    gemm fit LOG... [--cross-validate] [--check LOG...] [--out PATH]
                                           fit the cost model's coefficients to results logs
    gemm presets                           the preset shape lists with their layer names

Exit codes: 0 success, 1 failure (invalid file, unexpected error), 2 usage
error or nothing to run on (e.g. ``gemm tune`` without a GPU), 3 ``tune``
stopped at ``--time-limit`` (continue with ``--resume``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys


def _add_tune(sub) -> None:
    from gemm.tuner.presets import DEFAULT_PRESET, PRESETS
    from gemm.tuner.select import DEFAULT_TIE_FRACTION
    from gemm.tuner.space import DEFAULT_PRUNE_LEVEL, PRUNE_LEVELS

    p = sub.add_parser("tune", help="tune kernels on the current GPU and write configs",
                       description="Search every backend's configurations per (N, K, M); verify each candidate "
                                   "against the fp32 reference, time it with CUDA graphs and cold L2, and write "
                                   "the best per M to config files.")
    what = p.add_argument_group("what to tune")
    what.add_argument("--preset", choices=sorted(PRESETS), metavar="NAME",
                      help=f"model shape preset (default {DEFAULT_PRESET}; see `gemm presets`)")
    what.add_argument("--shape", action="append", metavar="N,K",
                      help="a weight shape [N, K] to tune (repeatable); replaces the preset")
    what.add_argument("--m", metavar="LIST", help="comma-separated M values (default: vLLM's grid 1..4096)")
    what.add_argument("--m-extra", metavar="LIST", help="M values added to the grid, e.g. 8192")
    what.add_argument("--backends", metavar="LIST",
                      help="comma-separated backends (triton, cutlass, cublas, or module:Class); "
                           "default: every backend usable here")
    what.add_argument("--out-dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    where = p.add_argument_group("output")
    where.add_argument("--out", default=None, metavar="DIR",
                       help="config root: files go to DIR/<device_name>/ (default: where the op looks, "
                            "GEMM_CONFIG_DIR or the shipped tuned_configs/)")
    where.add_argument("--log", metavar="PATH",
                       help="results log (default DIR/logs/tune-<device>-<space hash>.jsonl)")
    where.add_argument("--resume", action="store_true",
                       help="continue the log of an interrupted sweep of the same device and search space")
    where.add_argument("--no-progress", action="store_true", help="no progress bar")
    search = p.add_argument_group("search")
    search.add_argument("--prune", choices=sorted(PRUNE_LEVELS, key=lambda k: PRUNE_LEVELS[k] or 10**9,
                                                   reverse=True),
                        default=DEFAULT_PRUNE_LEVEL,
                        help="how hard the cost model cuts each backend's candidates per point before anything "
                             "is built: " + ", ".join(f"{k} ({'keep all' if v is None else f'best {v}'})"
                                                      for k, v in PRUNE_LEVELS.items())
                             + f" (default {DEFAULT_PRUNE_LEVEL})")
    search.add_argument("--budget", type=int, default=None, metavar="N",
                        help="candidates per backend and point after the cost model's ranking (overrides --prune)")
    search.add_argument("--keep", type=int, default=4, metavar="N",
                        help="finalists per backend and point timed carefully after screening (default 4)")
    search.add_argument("--screen-margin", type=float, default=0.25, metavar="F",
                        help="finalists must screen within this fraction of their backend's best (default 0.25)")
    search.add_argument("--exhaustive", action="store_true",
                        help="no pruning: build, verify and carefully time every valid candidate")
    search.add_argument("--tie", type=float, default=DEFAULT_TIE_FRACTION, metavar="F",
                        help="times within this fraction are ties, resolved towards fewer distinct configs")
    run = p.add_argument_group("running")
    run.add_argument("--interpret", action="store_true",
                     help="tiny sweep on the CPU through the Triton interpreter (checks the tool, not a GPU)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="worker processes (default: CPUs - 1 on a GPU, 1 with --interpret; 0: in-process)")
    run.add_argument("--gpus", metavar="all|N|LIST",
                     help="one worker process per GPU of this machine: 'all', the first N, or indices like 0,1,3 "
                          "(--workers then counts evaluation processes per GPU); with --interpret, N CPU "
                          "stand-ins; with --ray, at most N tasks at a time")
    run.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="tune on a Ray cluster (optional extra 'ray'), one task with one GPU per (shape, "
                          "backend); ADDRESS defaults to RAY_ADDRESS or a new local Ray instance")
    run.add_argument("--timeout", type=float, default=120.0, metavar="S",
                     help="seconds a built candidate may run (incl. Triton's JIT compile) before it is "
                          "killed as TIMEOUT (default 120)")
    run.add_argument("--build-timeout", type=float, default=900.0, metavar="S",
                     help="seconds a candidate may take to build (default 900)")
    run.add_argument("--time-limit", type=float, metavar="S",
                     help="stop after about S seconds (exit 3); continue later with --resume")
    run.add_argument("--seed", type=int, help="seed of the random verification data (default: fresh)")
    run.add_argument("--no-prebuild", action="store_true",
                     help="do not compile CUTLASS kernels ahead of the sweep")
    run.add_argument("--timer", metavar="MODULE:CLASS",
                     help="timer class (default gemm.tuner.timing:CudaGraphTimer; WallClockTimer with --interpret)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemm", description="Block-scaled FP8 GEMM toolkit",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_tune(sub)

    p = sub.add_parser("show", help="table of tuned config files")
    p.add_argument("paths", nargs="+", metavar="PATH", help="config files or directories")

    p = sub.add_parser("export", help="write vLLM or SGLang Triton config files")
    p.add_argument("--format", required=True, choices=("vllm", "sglang"))
    p.add_argument("src", nargs="+", metavar="SRC", help="native config files or directories")
    p.add_argument("--out", required=True, metavar="DST", help="directory for the exported files")

    p = sub.add_parser("import", help="convert vLLM or SGLang config files to native ones")
    p.add_argument("src", nargs="+", metavar="SRC", help="engine config files or directories")
    p.add_argument("--out", required=True, metavar="DST", help="config root to write <device_name>/ files under")
    p.add_argument("--arch", help="GPU short name (e.g. H100) when the device name is not a known one")

    p = sub.add_parser("validate", help="check config files; exit 1 if any is invalid")
    p.add_argument("paths", nargs="+", metavar="PATH", help="config files or directories")
    p.add_argument("--quiet", action="store_true", help="list only invalid files")

    p = sub.add_parser("build", help="compile the CUTLASS kernels that config files name")
    p.add_argument("--configs", action="append", metavar="DIR", help="config directory (default: GEMM_CONFIG_DIR)")
    p.add_argument("--config", action="append", metavar="FILE", help="one config file (repeatable)")
    p.add_argument("--jobs", type=int, help="parallel nvcc processes (default GEMM_BUILD_JOBS)")

    p = sub.add_parser("plot", help="PNG charts from results logs")
    p.add_argument("logs", nargs="+", metavar="LOG", help="results logs (.jsonl) written by gemm tune")
    p.add_argument("--out", default="plots", metavar="DIR", help="directory for the PNG files (default plots/)")

    p = sub.add_parser("compare", help="pruned search's picks vs an exhaustive search's best")
    p.add_argument("pruned", metavar="PRUNED_LOG")
    p.add_argument("exhaustive", metavar="EXHAUSTIVE_LOG")
    p.add_argument("--tie", type=float, default=0.02, metavar="F")
    p.add_argument("--target", type=float, default=0.97, metavar="F",
                   help="exit 1 if any point's ratio is below this (default 0.97)")

    from gemm.tuner.select import DEFAULT_TIE_FRACTION

    p = sub.add_parser("select", help="write config files from results logs (re-derive or audit shipped configs)")
    p.add_argument("logs", nargs="+", metavar="LOG",
                   help="results logs (.jsonl or .jsonl.gz) of one device; a later log's timed points replace")
    p.add_argument("--out", required=True, metavar="DIR", help="config root: files go to DIR/<device_name>/")
    p.add_argument("--tie", type=float, default=DEFAULT_TIE_FRACTION, metavar="F",
                   help="times within this fraction are ties, resolved towards fewer distinct configs")

    _add_model_commands(sub)
    sub.add_parser("presets", help="list the shape presets with their layer names")
    return parser


def _add_model_commands(sub) -> None:
    from gemm.tuner.presets import DEFAULT_PRESET, PRESETS

    p = sub.add_parser("predict", help="configs for a GPU from its spec alone (cost model, nothing is run)",
                       description="Rank every backend's candidates with the fitted cost model for a GPU's spec "
                                   "and write the best per M as config files with provenance 'predicted'.")
    p.add_argument("--arch", required=True, help="GPU short name (H20, H100, H200, H800, ...)")
    p.add_argument("--preset", nargs="+", choices=sorted(PRESETS), metavar="NAME",
                   help=f"shape presets (default {DEFAULT_PRESET}; see `gemm presets`)")
    p.add_argument("--shape", action="append", metavar="N,K", help="a weight shape (repeatable); replaces presets")
    p.add_argument("--m", metavar="LIST", help="comma-separated M values (default: vLLM's grid 1..4096)")
    p.add_argument("--m-extra", metavar="LIST", help="M values added to the grid, e.g. 8192")
    p.add_argument("--backends", metavar="LIST", help="subset of triton,cutlass,cublas (default all)")
    p.add_argument("--out-dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--out", metavar="DIR", help="config root: files go to DIR/<device_name>/ (default: where "
                                                "the op looks, GEMM_CONFIG_DIR or the shipped tuned_configs/)")
    p.add_argument("--model", metavar="PATH", help="coefficients file (default: the one shipped with gemm)")

    p = sub.add_parser("fit", help="fit the cost model's coefficients to results logs")
    p.add_argument("logs", nargs="+", metavar="LOG", help="results logs (.jsonl or .jsonl.gz) of gemm tune")
    p.add_argument("--out", metavar="PATH", help="coefficients file to write (default: the one shipped with gemm)")
    p.add_argument("--version", help="version tag stored in predicted configs (default from GPUs and date)")
    p.add_argument("--cross-validate", action="store_true",
                   help="also score leave-one-shape-out fits (one fit per shape: slower)")
    p.add_argument("--check", nargs="+", metavar="LOG",
                   help="score the fitted model on logs it was not fitted on (e.g. another GPU's)")


def _run_presets(args) -> int:
    from gemm.tuner.presets import DEFAULT_M_GRID, DEFAULT_PRESET, PRESETS

    for name, shapes in PRESETS.items():
        marker = " (default)" if name == DEFAULT_PRESET else ""
        print(f"{name}{marker}:")
        for shape in shapes:
            print(f"  N={shape.n:<6} K={shape.k:<6} {shape.name}")
    print(f"default M grid: {','.join(map(str, DEFAULT_M_GRID))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "interpret", False):
        # Triton picks interpreter or compiler when a kernel is defined: set this before any import of it.
        os.environ["TRITON_INTERPRET"] = "1"
    if args.command == "tune":
        from gemm.tuner.tune_cmd import run_tune as handler
    elif args.command == "plot":
        from gemm.tuner.plot import run_plot as handler
    elif args.command == "compare":
        from gemm.tuner.compare import run_compare as handler
    elif args.command in ("predict", "fit"):
        from gemm.tuner import model_cmd

        handler = model_cmd.run_predict if args.command == "predict" else model_cmd.run_fit
    elif args.command == "select":
        from gemm.tuner.select_cmd import run_select as handler
    elif args.command == "presets":
        handler = _run_presets
    else:
        from gemm.tuner import tools_cmd

        handler = {"show": tools_cmd.run_show, "export": tools_cmd.run_export, "import": tools_cmd.run_import,
                   "validate": tools_cmd.run_validate, "build": tools_cmd.run_build}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
