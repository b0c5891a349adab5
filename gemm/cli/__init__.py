"""The gemm command line.

    gemm tune [--preset deepseek-v3-tp8 | --shape N,K ...] [--m 1,16,...] [--m-extra 8192]
              [--backends triton,cutlass,cublas] [--out DIR] [--resume] [--interpret]
              [--gpus all|N|0,1,3 | --ray [ADDRESS]]
    gemm tune --engine vllm|sglang [--baseline DIR] ...
                                           an engine's own kernel, against its shipped files
    gemm show PATH...                      table of tuned entries
    gemm export --format vllm|sglang SRC... --out DST | --install [--engine-path DIR]
                                           engine files from measurements of the engine's kernel
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
    gemm bench [--preset NAME... | --shape N,K ...] [--m LIST] [--out DIR]
                                           the tuned op against cuBLAS, the classic config and bf16
    gemm bench --report DEVICE=DIR... [--out DIR]
                                           the performance report of earlier bench runs (no GPU)

Tuned configs are written to, and read first from, the user config directory
(GEMM_CONFIG_DIR, else $XDG_DATA_HOME/gemm/tuned_configs or
~/.local/share/gemm/tuned_configs); the configs shipped with gemm are read after it.

Exit codes: 0 success, 1 failure (invalid file, an OS error such as a full disk),
2 usage error or nothing to run on (e.g. gemm tune or gemm bench without a GPU),
3 tune or bench stopped at --time-limit (tune: continue with --resume),
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

from gemm.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line naming the option, with where to read more."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``gemm`` command; each sets ``handler``, the function that runs it.

    Each command family is one module of this package: it parses its options into the library's
    settings, calls the library and prints. Nothing outside this package imports it.
    """
    from gemm.cli import bench, configs, model, results, tune

    parser = Parser(prog="gemm", description="Block-scaled FP8 GEMM toolkit",
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    tune.add_parsers(sub)
    configs.add_parsers(sub)
    results.add_parsers(sub)
    model.add_parsers(sub)
    tune.add_presets_parser(sub)
    bench.add_parsers(sub)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush into a closed pipe says nothing."""
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Run one ``gemm`` command; returns its exit code.

    A reader that stops early (``gemm presets | head``) ends the command quietly; an OS error the command
    did not handle itself (a full disk, a path that cannot be written) is one line naming the path, exit 1.
    """
    from gemm import envs
    from gemm.cli.checks import os_error_line
    from gemm.cli.common import say

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        envs.check_environment()
    except envs.EnvError as exc:
        say(f"gemm {args.command}: {exc}")
        return EXIT_USAGE
    if getattr(args, "interpret", False):
        envs.use_triton_interpreter()  # before anything imports a Triton kernel
    try:
        return args.handler(args)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_ERROR
    except OSError as exc:
        say(os_error_line(args.command, exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        say(f"gemm {args.command}: interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
