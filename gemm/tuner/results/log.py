"""The append-only JSONL results log of a sweep.

The log's first line is a fingerprint header (device, software versions,
search-space hash); every later line is one ``Measurement``. Rows are appended
and flushed as soon as a candidate finishes a stage, so a killed sweep loses at
most the row being written; ``ResultsLog.resume`` drops such a torn last line,
checks the fingerprint and hands back the rows already recorded.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from gemm.configs.store import naming
from gemm.tuner.results.measurement import Measurement, Stage, Status

LOG_KIND = "gemm-tune-log"
LOG_VERSION = 1


@dataclass(frozen=True)
class Fingerprint:
    """What must match for two sweeps' rows to be comparable (and a log to be resumed)."""

    device_name: str
    arch: str
    torch: str | None
    triton: str | None
    cutlass: str | None
    tool_version: str
    space_hash: str
    block_shape: tuple[int, int]
    out_dtype: str

    # Fields whose difference makes a log unusable; tool_version only warns (the space hash covers the search).
    BINDING = ("device_name", "arch", "torch", "triton", "cutlass", "space_hash", "block_shape", "out_dtype")

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_shape", tuple(int(v) for v in self.block_shape))

    def to_json(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["block_shape"] = list(self.block_shape)
        return {"kind": LOG_KIND, "log_version": LOG_VERSION, **row}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "Fingerprint":
        if row.get("kind") != LOG_KIND:
            raise LogFormatError(f"first line is not a {LOG_KIND} header (kind={row.get('kind')!r})")
        if row.get("log_version") != LOG_VERSION:
            raise LogFormatError(f"log version {row.get('log_version')!r} is not the supported {LOG_VERSION}")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - set(row))
        if missing:
            raise LogFormatError(f"header lacks field(s) {missing}")
        return cls(**{name: row[name] for name in fields})

    def mismatches(self, other: "Fingerprint", ignore: tuple[str, ...] = ()) -> list[str]:
        """Human-readable differences in binding fields (less ``ignore``), ``[]`` when ``other`` may continue
        this log."""
        return [f"{name}: log has {getattr(self, name)!r}, this run has {getattr(other, name)!r}"
                for name in self.BINDING if name not in ignore and getattr(self, name) != getattr(other, name)]


class LogFormatError(ValueError):
    """A results log is unreadable; the message names the file and line."""


class LogMismatchError(ValueError):
    """A results log was written by another device, software stack or search space."""


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"{path}:{number}: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise LogFormatError(f"{path}:{number}: expected a JSON object")
    return row


def read_log(path: Path | str) -> tuple[Fingerprint, list[Measurement]]:
    """Header and rows of a results log.

    A last line without its newline (a write cut short by a kill) is ignored;
    any other unreadable line is a LogFormatError naming file and line. A
    ``.gz`` file (how logs are shipped) is read decompressed.
    """
    path = Path(path)
    if path.is_dir():
        raise LogFormatError(f"{path}: is a directory, not a results log")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as stream:
                text = stream.read()
        else:
            text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LogFormatError(f"{path}: no such file") from None
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise LogFormatError(f"{path}: not a results log of gemm tune ({exc})") from None
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline, else a partial row
    del torn
    if not lines or not lines[0].strip():
        raise LogFormatError(f"{path}: empty log (no header line)")
    header = _parse_line(path, 1, lines[0])
    try:
        fingerprint = Fingerprint.from_json(header)
    except LogFormatError as exc:
        raise LogFormatError(f"{path}:1: {exc}") from None
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = _parse_line(path, number, line)
        try:
            rows.append(Measurement.from_json(row))
        except (TypeError, ValueError) as exc:
            raise LogFormatError(f"{path}:{number}: bad measurement row ({exc})") from None
    return fingerprint, rows


class ResultsLog:
    """An open, append-only results log. Use ``create`` or ``resume``; close it (or use ``with``)."""

    def __init__(self, path: Path, fingerprint: Fingerprint, keys: set | None = None) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self._keys = set(keys or ())
        self._file = open(path, "a", encoding="utf-8")

    @classmethod
    def create(cls, path: Path | str, fingerprint: Fingerprint) -> "ResultsLog":
        """Start a new log at ``path``; an existing file there is kept, renamed to ``<stem>.<n><suffix>``.

        A directory at ``path`` is an IsADirectoryError (it is never moved aside). If the header cannot be
        written (a full disk), its temp file is removed and the OSError names the log.
        """
        path = Path(path)
        _writable_log(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            n = 1
            while path.with_name(f"{path.stem}.{n}{path.suffix}").exists():
                n += 1
            os.replace(path, path.with_name(f"{path.stem}.{n}{path.suffix}"))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(fingerprint.to_json(), sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, path)  # the header appears whole or not at all
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise naming(exc, path) from None
        return cls(path, fingerprint)

    @classmethod
    def resume(cls, path: Path | str, fingerprint: Fingerprint) -> tuple["ResultsLog", list[Measurement]]:
        """Reopen a log to continue it: (log, rows already there).

        Raises LogMismatchError when the log's fingerprint differs from this
        run's in device, software versions or search space.
        """
        path = Path(path)
        _writable_log(path)
        try:
            old, rows = read_log(path)
        except LogFormatError as exc:
            raise LogFormatError(f"cannot resume: {exc}. Only a torn last line is dropped on its own; fix or "
                                 f"delete the line named, or start a fresh sweep (drop --resume, or point --log "
                                 f"at another file)") from None
        problems = old.mismatches(fingerprint)
        if problems:
            raise LogMismatchError(
                f"cannot resume {path}: it was written by a different device, software or search space ("
                + "; ".join(problems) + "); start a fresh sweep (drop --resume) or point --log at another file")
        _drop_torn_tail(path)
        return cls(path, old, {row.key for row in rows}), rows

    def append(self, row: Measurement) -> None:
        """Write one row and flush it to the OS (it survives a kill of this process)."""
        if row.key in self._keys:
            raise ValueError(f"row already logged: {row.key}")
        try:
            self._file.write(json.dumps(row.to_json(), sort_keys=True) + "\n")
            self._file.flush()
        except OSError as exc:  # e.g. a full disk: the rows before this one are in the log
            raise naming(exc, self.path) from None
        self._keys.add(row.key)

    def extend(self, rows: Iterable[Measurement]) -> None:
        for row in rows:
            self.append(row)

    def __contains__(self, key) -> bool:
        return key in self._keys

    def close(self) -> None:
        """Flush, sync and close; the file is closed even when that fails (the OSError names the log)."""
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise naming(exc, self.path) from None
        finally:
            try:
                self._file.close()
            except OSError:
                pass  # the unflushed tail is lost; the error above already says why

    def __enter__(self) -> "ResultsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _writable_log(path: Path) -> None:
    """Refuse a directory (never moved aside) and a compressed log (appending would corrupt it)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a results log; name a file", str(path))
    if path.suffix == ".gz":
        raise ValueError(f"{path}: a compressed results log cannot be appended to; gunzip it and name the "
                         f"plain .jsonl file")


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (from a killed writer) so appended rows start on a line of their own."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def merge_logs(paths: Iterable[Path | str]) -> tuple[Fingerprint, list[Measurement]]:
    """The first log's header and the rows of every log, a later log's rows replacing an earlier one's at
    each point the later log timed (FINAL, OK).

    The logs must come from one device and software (their search spaces may differ: a re-tune adds
    points); LogMismatchError otherwise. A missing or unreadable file is a LogFormatError naming it.
    """
    header, rows = None, {}
    first = None
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise LogFormatError(f"{path}: no such file")
        fingerprint, log_rows = read_log(path)
        if header is not None:
            differs = header.mismatches(fingerprint, ignore=("space_hash",))  # other searches may add points
            if differs:
                raise LogMismatchError(f"{path} is from another device or software than {first}: "
                                       + "; ".join(differs))
        header, first = header or fingerprint, first or raw
        timed = {r.point for r in log_rows if r.stage == Stage.FINAL and r.status == Status.OK}
        rows = {point: kept for point, kept in rows.items() if point not in timed}  # a later log's timings replace
        for row in log_rows:
            rows.setdefault(row.point, []).append(row)
    if header is None:
        raise LogFormatError("no results log given")
    return header, [row for point_rows in rows.values() for row in point_rows]
