"""Which kernels config files name: the shared part of ahead-of-time builds (``gemm build``).

A server that loads tuned configs should find its kernels in the JIT cache
instead of compiling them at start-up. Config files are JSON objects with an
``entries`` object mapping M to ``{"backend": ..., "params": {...}, "us": ...}``
and an optional top-level ``out_dtype``; each C++ backend (``cutlass``,
``sm90``) reads the entries of its own name from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator


def config_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ``*.json`` files of ``paths`` (files, or directories searched recursively); FileNotFoundError
    naming a path that does not exist."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"config path {str(path)!r} does not exist")
    return files


def backend_entries(path: Path, backend: str, out_dtypes: Iterable[str]) -> Iterator[tuple[str, dict, str]]:
    """(M key, params dict, out_dtype) of every ``backend`` entry in one config file.

    ValueError naming the file (and M) for an unreadable file, a malformed entry, or an
    ``out_dtype`` outside ``out_dtypes`` in a file that holds such entries.
    """
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("entries"), dict):
        raise ValueError(f"config file {path} must be a JSON object with an 'entries' object")
    out_dtype = document.get("out_dtype", "bfloat16")
    allowed = tuple(out_dtypes)
    entries = document["entries"]
    if out_dtype not in allowed and any(isinstance(e, dict) and e.get("backend") == backend for e in entries.values()):
        raise ValueError(f"config file {path}: {backend} kernels support out_dtype {list(allowed)}, got {out_dtype!r}")
    for m_key, entry in entries.items():
        if not isinstance(entry, dict):
            raise ValueError(f"config file {path}: entry for M={m_key} must be an object, got {entry!r}")
        if entry.get("backend") != backend:
            continue
        params = entry.get("params")
        if not isinstance(params, dict):
            raise ValueError(f"config file {path}: {backend} entry for M={m_key} has no 'params' object")
        yield m_key, params, out_dtype
