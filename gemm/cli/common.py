"""What every command shares: exit codes, messages on stderr, and the parsing of list-valued options."""

from __future__ import annotations

import sys

from gemm.tuner.presets import (
    DEFAULT_M_GRID, DEFAULT_PRESET, INTERPRET_M_GRID, LayerShape, dedupe_shapes, parse_m_list, parse_shape,
    preset_shapes,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(ValueError):
    """A command-line value is wrong; the message says which and what is expected."""


def say(text: str) -> None:
    """A line for people on stderr (stdout carries the results)."""
    print(text, file=sys.stderr, flush=True)


def name_list(text: str | None, option: str = "--backends") -> tuple[str, ...] | None:
    """``"triton, cublas"`` -> ("triton", "cublas"); None when the option is not given.

    UsageError naming ``option`` for an empty list or an empty name (``","``, ``"triton,,cublas"``).
    """
    if text is None:
        return None
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise UsageError(f"{option} expects comma-separated names without empty ones (e.g. triton,cublas), "
                         f"got {text!r}")
    return names


def m_grid(args, interpret: bool = False) -> tuple[int, ...]:
    """``--m`` (default: vLLM's grid, or the interpreter's tiny one) plus ``--m-extra``; UsageError if bad."""
    try:
        grid = parse_m_list(args.m) if args.m else (INTERPRET_M_GRID if interpret else DEFAULT_M_GRID)
        if args.m_extra:
            grid = tuple(sorted(set(grid) | set(parse_m_list(args.m_extra, "--m-extra"))))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return grid


def shapes(args, presets: list[str]) -> tuple[LayerShape, ...]:
    """``--shape`` values when given (they replace presets), else the shapes of ``presets`` (default: the
    default preset), duplicates merged; UsageError if bad."""
    try:
        if args.shape:
            return tuple(dedupe_shapes([parse_shape(text) for text in args.shape]))
        return tuple(dedupe_shapes([s for name in presets or [DEFAULT_PRESET] for s in preset_shapes(name)]))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
