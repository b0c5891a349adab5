"""Measurement rows: one candidate at one point after one stage, with its status and times.

Rows are what a sweep records (``gemm.tuner.results.log`` writes them one JSON
line each) and what selection, tables, plots and the cost model's fit read.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass
from typing import Any


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
