"""Running the benchmark: at every point each peer's candidates verified, then timed; rows saved as they come.

``run_bench`` writes into ``settings.out``: ``bench_rows.csv`` (every
candidate, rewritten after each point so a stopped run keeps what it timed),
``bench_best.csv`` (best verified time per peer and point, see
``gemm.bench.tables.summarize``) and ``ceilings.json`` (device, software
versions, measured ceilings, the command). ``gemm.bench.report`` turns a run
directory into the markdown summary and plots.

The device is a *rig* (``gemm.bench.peers.GpuRig`` on a GPU): an object with
``label``, ``device_name``, ``l2_bytes``, ``ceilings()``, ``inputs(problem, copies)``,
``time(fn, arg_sets)``, ``calls(problem, sets, settings)`` (the ``BenchSettings``) and
``release()``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from gemm.bench.measure import Ceilings, cold_l2_copies, floor_us, run_info
from gemm.bench.tables import TUNED, compared_peers, geomean, reference, summarize
from gemm.problem import GemmProblem

#: Largest relative error against the fp32 reference a verified candidate may have.
TOLERANCE = 1e-2


@dataclass(frozen=True)
class BenchSettings:
    """What to benchmark: (N, K) shapes x M values, which of our candidates besides the heuristic, where to.

    ``tuned`` times the tuned op, ``sweep`` a modest per-point sweep of the Triton kernel, ``cutlass`` the
    CUTLASS backend's default and space, ``sm90`` the Hopper kernel's default and the ``sm90_keep``
    candidates of its space the cost model ranks fastest (as the tuner's pruning ranks them). No point starts
    after ``time_limit_s``. ``command`` is recorded in ``ceilings.json``.
    """

    shapes: tuple[tuple[int, int], ...]
    m_values: tuple[int, ...]
    out: Path
    tuned: bool = True
    sweep: bool = False
    cutlass: bool = False
    sm90: bool = False
    sm90_keep: int = 12
    time_limit_s: float | None = None
    command: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.shapes or not self.m_values:
            raise ValueError("a benchmark needs at least one shape and one M")
        if self.sm90_keep < 1:
            raise ValueError(f"sm90_keep must be >= 1, got {self.sm90_keep}")


@dataclass(frozen=True)
class BenchOutcome:
    """A finished run: its candidate rows, best-per-point table, ceilings, and points skipped at the time limit."""

    device_name: str
    rows: pd.DataFrame
    table: pd.DataFrame
    ceilings: Ceilings
    skipped: int = 0


def bench_point(problem: GemmProblem, rig, settings: BenchSettings, ceilings: Ceilings) -> list[dict]:
    """One row per candidate at ``problem``: verified against the fp32 reference, then timed on ``rig``."""
    from gemm.reference import reference_matmul, relative_error

    m, n, k = problem.m, problem.n, problem.k
    bytes_per_set = n * k + m * k + 4 * (m + n) * math.ceil(k / 128)
    sets = rig.inputs(problem, cold_l2_copies(bytes_per_set, rig.l2_bytes))
    ref = reference_matmul(*sets[0])
    floor = floor_us(m, n, k, ceilings)
    rows = []
    for call in rig.calls(problem, sets, settings):
        if isinstance(call.fn, Exception):  # it did not build
            rows.append(dict(M=m, N=n, K=k, peer=call.peer, config=call.config, status=f"FAILED: {call.fn}"[:200],
                             floor_us=floor))
            continue
        err, status, timing = math.nan, "OK", None
        try:
            if call.verify:
                err = relative_error(call.fn(*call.arg_sets[0]), ref)
                if not err <= TOLERANCE:
                    status = "WRONG_RESULT"
            if status == "OK":
                timing = rig.time(call.fn, call.arg_sets)
        except Exception as exc:  # a benchmark records failures and goes on
            status, timing = f"FAILED: {type(exc).__name__}: {str(exc)[:200]}", None
        us = timing.us if timing else math.nan
        rows.append(dict(M=m, N=n, K=k, peer=call.peer, config=call.config, status=status, rel_err=err, us=us,
                         spread=timing.spread if timing else math.nan,
                         tflops=2 * m * n * k / us / 1e6 if timing else math.nan, floor_us=floor,
                         frac_floor=floor / us if timing else math.nan))
    del sets
    rig.release()
    return rows


def run_bench(settings: BenchSettings, rig, say: Callable[[str], None]) -> BenchOutcome:
    """Measure the ceilings, then every point in order (shapes outer, M inner); see the module docstring.

    ValueError when no candidate at all was verified.
    """
    settings.out.mkdir(parents=True, exist_ok=True)
    ceilings = rig.ceilings()
    say(f"{rig.device_name}: {ceilings}")
    info = run_info(rig.device_name, ceilings, list(settings.command))
    (settings.out / "ceilings.json").write_text(json.dumps(info, indent=2) + "\n")
    rows: list[dict] = []
    points = [(n, k, m) for n, k in settings.shapes for m in settings.m_values]
    start = time.time()
    skipped = 0
    for index, (n, k, m) in enumerate(points):
        if settings.time_limit_s is not None and time.time() - start > settings.time_limit_s:
            skipped = len(points) - index
            say(f"time limit reached; skipping M={m} N={n} K={k} and the {skipped - 1} points after it")
            break
        rows += bench_point(GemmProblem(m, n, k), rig, settings, ceilings)
        pd.DataFrame(rows).to_csv(settings.out / "bench_rows.csv", index=False)
        say(f"done M={m:>5} N={n:>5} K={k:>5}  ({time.time() - start:.0f}s)")
    if not rows:
        raise ValueError("no point was timed before the time limit")
    frame = pd.DataFrame(rows)
    table = summarize(frame)
    table.to_csv(settings.out / "bench_best.csv")
    return BenchOutcome(rig.device_name, frame, table, ceilings, skipped)


def merge_rows(paths: Iterable[Path], out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``bench_rows.csv`` files of earlier runs of one device as one run in ``out``: (rows, table), written."""
    frame = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "bench_rows.csv", index=False)
    table = summarize(frame)
    table.to_csv(out / "bench_best.csv")
    return frame, table


def console_summary(table: pd.DataFrame, ceilings: Ceilings | None, peers: Sequence[str] | None = None) -> str:
    """Text for a terminal: every point's best time per peer, the ceilings, then geomean speed-ups of ours
    over ``peers`` (default: the report's ``compared_peers``, so "ours" only where two backends were timed)."""
    ref = reference(table)
    if peers is None:
        peers = compared_peers(table)
    shown = table.copy()
    shown[f"{ref}_frac_floor"] = shown.floor_us / shown[ref]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        lines = [shown.round(2).to_string()]
    if ceilings is not None:
        lines.append(f"\nceilings: FP8 per-tensor {ceilings.fp8_tflops:.0f} TFLOPS, bf16 {ceilings.bf16_tflops:.0f} "
                     f"TFLOPS, copy {ceilings.copy_tbps:.2f} TB/s")
    ms = table.index.get_level_values("M")
    what = "the tuned op" if ref == TUNED else "ours (best of all our candidates)"
    lines.append(f"\ngeomean speed-up of {what} over each peer (>1: {ref} faster)")
    lines.append(f"{'peer':<20}{'all':>8}{'M<=64':>8}{'M<=128':>8}{'M>=1024':>9}")
    for peer in peers:
        if peer not in table or peer == ref:
            continue
        ratio = table[peer] / table[ref]
        cells = [geomean(ratio), geomean(ratio[ms <= 64]), geomean(ratio[ms <= 128]), geomean(ratio[ms >= 1024])]
        lines.append(f"{peer:<20}" + "".join(f"{c:>8.3f}" for c in cells))
    lines.append(f"geomean fraction of floor, {ref}: {geomean(table.floor_us / table[ref]):.3f}")
    return "\n".join(lines)
