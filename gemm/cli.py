"""The ``gemm`` command line (entry point ``gemm.cli:main``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from gemm.tuner.cli import main as tuner_main

    return tuner_main(argv)


if __name__ == "__main__":
    sys.exit(main())
