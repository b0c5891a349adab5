"""``gemm`` subcommands."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gemm", description="Block-scaled FP8 GEMM toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tune", help="tune kernels on the current GPU")
    args = parser.parse_args(argv)
    if args.command == "tune":
        import torch

        if not torch.cuda.is_available():
            print("gemm tune: no CUDA GPU found on this machine; run it on a Hopper GPU "
                  "(or `gemm tune --interpret` for a tiny CPU sweep)", file=sys.stderr)
            return 2
        print("gemm tune: the tuner is not available in this version", file=sys.stderr)
        return 2
    return 0
