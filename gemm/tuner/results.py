"""Measurement rows, their statuses, and the append-only JSONL results log.

The log's first line is a fingerprint header (device, software versions,
search-space hash); every later line is one ``Measurement``. Rows are appended
and flushed as soon as a candidate finishes a stage, so a killed sweep loses at
most the row being written; ``ResultsLog.resume`` drops such a torn last line,
checks the fingerprint and hands back the rows already recorded.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

LOG_KIND = "gemm-tune-log"
LOG_VERSION = 1


class Status(str, enum.Enum):
    """Outcome of one candidate at one point; only OK rows are ever selected."""

    INVALID = "INVALID"                # rejected before build (constraint, unsupported problem)
    COMPILE_FAILED = "COMPILE_FAILED"  # the build raised
    LAUNCH_FAILED = "LAUNCH_FAILED"    # the launch raised, the worker crashed or the CUDA context broke
    WRONG_RESULT = "WRONG_RESULT"      # ran, but the output differs from the fp32 reference
    TIMEOUT = "TIMEOUT"                # no answer within the time limit (the worker was killed)
    OK = "OK"


class Stage(str, enum.Enum):
    """How far a candidate got at a point; each stage writes at most one row per candidate and point."""

    SPACE = "space"    # constraint filter (INVALID rows only)
    VERIFY = "verify"  # build + check against the reference (failure rows only; an OK goes on to screening)
    SCREEN = "screen"  # one short cold-L2 timing of every verified candidate
    FINAL = "final"    # careful timing of the screening's best few


def canonical_params(params: dict[str, Any]) -> str:
    """The one JSON spelling of a params dict (sorted keys, no spaces): identity of a candidate."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Measurement:
    """One candidate (backend + params) at one point (N, K, M) after one stage.

    ``us`` is the median time per GEMM in microseconds (OK rows of the timing
    stages), ``tflops`` follows from it; ``rel_error`` is the relative Frobenius
    error against the fp32 reference (``inf`` is stored as None with a message);
    ``spread`` is the interquartile range of the timing over its median;
    ``predicted_us`` is the cost model's estimate when there is one.
    """

    backend: str
    params: dict
    n: int
    k: int
    m: int
    stage: Stage
    status: Status
    message: str = ""
    us: float | None = None
    tflops: float | None = None
    rel_error: float | None = None
    spread: float | None = None
    reps: int | None = None
    predicted_us: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage(self.stage))
        object.__setattr__(self, "status", Status(self.status))
        for name in ("us", "tflops", "rel_error", "spread", "predicted_us"):
            object.__setattr__(self, name, _finite_or_none(getattr(self, name)))

    @property
    def params_key(self) -> str:
        return canonical_params(self.params)

    @property
    def candidate_key(self) -> tuple[str, str]:
        return (self.backend, self.params_key)

    @property
    def point(self) -> tuple[int, int, int]:
        return (self.n, self.k, self.m)

    @property
    def key(self) -> tuple[str, str, int, int, int, str]:
        """Identity of the row in a log: no two rows of one log share it."""
        return (self.backend, self.params_key, self.n, self.k, self.m, self.stage.value)

    def to_json(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["stage"] = self.stage.value
        row["status"] = self.status.value
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "Measurement":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(row) - fields)
        if unknown:
            raise ValueError(f"unknown measurement field(s) {unknown}")
        return cls(**row)

    def with_timing(self, us: float, flops: int, **changes) -> "Measurement":
        """A copy carrying a time (and the TFLOPS it implies for ``flops`` operations)."""
        return dataclasses.replace(self, us=us, tflops=flops / (us * 1e-6) / 1e12 if us > 0 else None, **changes)


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
    if path.suffix == ".gz":
        import gzip

        with gzip.open(path, "rt") as stream:
            text = stream.read()
    else:
        text = path.read_text()
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline, else a partial row
    del torn
    if not lines or not lines[0].strip():
        raise LogFormatError(f"{path}: empty log (no header line)")
    try:
        fingerprint = Fingerprint.from_json(_parse_line(path, 1, lines[0]))
    except LogFormatError as exc:
        raise LogFormatError(f"{path}:1: {exc}") from None
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rows.append(Measurement.from_json(_parse_line(path, number, line)))
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
        """Start a new log at ``path``; an existing file there is kept, renamed to ``<stem>.<n><suffix>``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            n = 1
            while path.with_name(f"{path.stem}.{n}{path.suffix}").exists():
                n += 1
            os.replace(path, path.with_name(f"{path.stem}.{n}{path.suffix}"))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fingerprint.to_json(), sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # the header appears whole or not at all
        return cls(path, fingerprint)

    @classmethod
    def resume(cls, path: Path | str, fingerprint: Fingerprint) -> tuple["ResultsLog", list[Measurement]]:
        """Reopen a log to continue it: (log, rows already there).

        Raises LogMismatchError when the log's fingerprint differs from this
        run's in device, software versions or search space.
        """
        path = Path(path)
        old, rows = read_log(path)
        problems = old.mismatches(fingerprint)
        if problems:
            raise LogMismatchError(
                f"cannot resume {path}: it was written by a different device, software or search space:\n  "
                + "\n  ".join(problems)
                + "\nstart a fresh sweep (drop --resume) or point --log at another file")
        _drop_torn_tail(path)
        return cls(path, old, {row.key for row in rows}), rows

    def append(self, row: Measurement) -> None:
        """Write one row and flush it to the OS (it survives a kill of this process)."""
        if row.key in self._keys:
            raise ValueError(f"row already logged: {row.key}")
        self._keys.add(row.key)
        self._file.write(json.dumps(row.to_json(), sort_keys=True) + "\n")
        self._file.flush()

    def extend(self, rows: Iterable[Measurement]) -> None:
        for row in rows:
            self.append(row)

    def __contains__(self, key) -> bool:
        return key in self._keys

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> "ResultsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (from a killed writer) so appended rows start on a line of their own."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def to_dataframe(rows: Iterable[Measurement]):
    """A pandas DataFrame, one row per measurement.

    Columns: backend, config (short params string), params (canonical JSON),
    n, k, m, stage, status, message, us, tflops, rel_error, spread, reps,
    predicted_us.
    """
    import pandas as pd

    records = []
    for row in rows:
        record = row.to_json()
        record["params"] = row.params_key
        record["config"] = short_params(row.params, row.backend)
        records.append(record)
    columns = ["backend", "config", "params", "n", "k", "m", "stage", "status", "message", "us", "tflops",
               "rel_error", "spread", "reps", "predicted_us"]
    return pd.DataFrame.from_records(records, columns=columns)


_SHORT_NAMES = {"block_m": "", "block_n": "x", "block_k": "x", "group_m": " g", "num_warps": " w",
                "num_stages": " s", "split_k": " sk", "k_unroll": " u"}
_HIDDEN_DEFAULTS = {"split_k": 1, "k_unroll": 1}


def short_params(params: dict[str, Any] | None, backend: str | None = None) -> str:
    """Compact label: ``64x128x128 g8 w4 s3 sk2 u2 tma`` for Triton-style params, the backend's own
    ``KernelParams.short()`` for other registered backends, ``k=v,...`` otherwise."""
    if not params:
        return "-"
    if all(name in params for name in ("block_m", "block_n", "block_k")):
        parts = [f"{prefix}{params[name]}" for name, prefix in _SHORT_NAMES.items()
                 if name in params and params[name] != _HIDDEN_DEFAULTS.get(name)]
        label = "".join(parts)
        extras = [name for name in params if name not in _SHORT_NAMES]
        for name in extras:
            value = params[name]
            if value is True:
                label += f" {name.replace('use_', '')}"
            elif value not in (False, None):
                label += f" {name}={value}"
        return label
    if backend is not None:
        from gemm.kernels import backend_names, get_backend

        if backend in backend_names():
            try:
                return get_backend(backend).params_from_dict(dict(params)).short()
            except (ImportError, TypeError, ValueError):
                pass  # a backend that cannot load here, or params of another version: the generic label
    return ",".join(f"{k}={v}" for k, v in params.items())
