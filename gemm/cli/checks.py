"""Checks of command-line values made before any work starts, and OS errors turned into one line.

* Value types for argparse (``count``, ``number``): a bad value is a usage error naming the option,
  raised while the command line is parsed.
* Paths: ``output_dir`` and ``output_file`` refuse a file where a directory is wanted (and the reverse),
  a directory that cannot be written, or a parent that is a file; ``input_path`` a missing one.
* ``os_error_line``: an ``OSError`` met while working, as one line naming the path and what to do.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
from pathlib import Path
from typing import Callable

from gemm.cli.common import UsageError


def count(low: int, what: str = "", high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (and <= ``high``); ``what`` says what it counts, for the message."""
    bound = f">= {low}" if high is None else f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer {bound}{f' ({what})' if what else ''}, "
                                             f"got {text!r}")
        return value

    parse.__name__ = "count"
    return parse


def number(low: float, inclusive: bool = True, what: str = "", high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number >= ``low`` (> ``low`` when not ``inclusive``) and <= ``high``; nan and
    inf refused."""
    bound = f"{'>=' if inclusive else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if (not math.isfinite(value) or value < low or (value == low and not inclusive)
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}{f' ({what})' if what else ''}, "
                                             f"got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def text(what: str) -> Callable[[str], str]:
    """An argparse type: a non-empty string without surrounding blanks (``what`` it names, for the message)."""
    def parse(value: str) -> str:
        if not value.strip() or value != value.strip():
            raise argparse.ArgumentTypeError(f"expected {what} (non-empty, no surrounding spaces), got {value!r}")
        return value

    parse.__name__ = "text"
    return parse


def _nearest_existing(path: Path) -> Path:
    """``path`` or the closest of its ancestors that exists."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def output_dir(value: str | Path, option: str) -> Path:
    """``value`` as a directory that exists or can be made, and written; UsageError naming ``option`` if not."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {value}: is a file, not a directory; name a directory (it is made if missing)")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UsageError(f"{option} {value}: {existing} is a file, so no directory can be made under it; "
                         f"name another directory")
    if not _writable(existing):
        raise UsageError(f"{option} {value}: {existing} is not writable; name a directory you can write")
    return path


def output_file(value: str | Path, option: str, example: str = "out.json") -> Path:
    """``value`` as a file that may be written (its directory made if missing); UsageError naming ``option``
    for a directory (``example`` is the file name suggested in it), a compressed (``.gz``) file, which
    appending would corrupt, or a parent that cannot hold it."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise UsageError(f"{option} {value}: is a directory; name a file (e.g. {path / example})")
    if path.suffix == ".gz":
        raise UsageError(f"{option} {value}: a .gz file cannot be appended to; name a plain file (gunzip a "
                         f"shipped log first to continue it)")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {value}: the file is not writable; name another file")
    output_dir(path.parent, f"{option} {value}: its directory")
    return path


def input_dir(value: str | Path, option: str) -> Path:
    """``value`` as an existing directory; UsageError naming ``option`` otherwise."""
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"{option} {value}: no such directory")
    if not path.is_dir():
        raise UsageError(f"{option} {value}: is a file, not a directory")
    return path


def input_file(value: str | Path, option: str) -> Path:
    """``value`` as an existing readable file; UsageError naming ``option`` otherwise."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise UsageError(f"{option} {value}: is a directory; name a file")
    if not path.is_file():
        raise UsageError(f"{option} {value}: no such file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{option} {value}: the file is not readable")
    return path


_FIXES = {
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "free some space or write somewhere else",
    errno.EACCES: "choose a path you may write, or fix its permissions",
    errno.EPERM: "choose a path you may write, or fix its permissions",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOTDIR: "a part of the path is a file; name a directory",
    errno.EISDIR: "it is a directory; name a file",
    errno.EEXIST: "something is already there; name another path",
    errno.ENOENT: "check the path",
}


def os_error_line(command: str, exc: OSError) -> str:
    """``gemm <command>: cannot write PATH: <reason>; <what to do>`` for an OSError met while working."""
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or str(exc)
    fix = _FIXES.get(exc.errno, "check the path and try again")
    return f"gemm {command}: {where}: {reason}; {fix}"
