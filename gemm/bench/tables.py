"""Tables of the performance report, computed from ``bench_rows.csv`` frames (pandas only, no GPU).

A *rows* frame has one row per timed candidate, as ``gemm.bench.run`` writes it
(M, N, K, peer, config, status, rel_err, us, spread, tflops, floor_us, frac_floor).
A *table* (``summarize``) has one row per point (N, K, M) and one column per
peer holding that peer's best verified time in microseconds, plus ``floor_us``
and ``ours``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

COLUMNS = ("M", "N", "K", "peer", "config", "status", "rel_err", "us", "spread", "tflops", "floor_us", "frac_floor")
OUR_BACKENDS = ("triton_sweep", "triton_heuristic", "cutlass_sweep", "cutlass_default", "sm90_sweep",
                "sm90_default")
TUNED = "tuned_op"
PEER_LABELS = {
    "cublas_blockwise": "cuBLAS blockwise",
    "cublas_per_tensor": "cuBLAS per-tensor FP8",
    "classic_default": "classic Triton kernel, default config",
    "bf16_matmul": "bf16 torch.matmul",
}
BACKEND_LABELS = {
    "ours": "best of our backends per point",
    "triton_sweep": "Triton, best of sweep",
    "triton_heuristic": "Triton, heuristic config",
    "cutlass_sweep": "CUTLASS, best of space",
    "cutlass_default": "CUTLASS, default params",
    "sm90_sweep": "Hopper kernel, best of pruned space",
    "sm90_default": "Hopper kernel, default params",
}
WINNER_LETTERS = {"triton_sweep": "T", "triton_heuristic": "t", "cutlass_sweep": "C", "cutlass_default": "c",
                  "sm90_sweep": "H", "sm90_default": "h"}
#: (label, lowest M, highest M); points with 64 < M < 128 fall only into "all".
M_RANGES = (("M ≤ 64", 1, 64), ("128 ≤ M ≤ 512", 128, 512), ("M ≥ 1024", 1024, math.inf), ("all", 1, math.inf))


def read_rows(path) -> pd.DataFrame:
    """The rows of one ``bench_rows.csv``; ValueError naming the file if columns are missing."""
    frame = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}")
    frame["status"] = frame["status"].fillna("").astype(str)
    return frame


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Best OK time per (N, K, M) and peer, with ``floor_us`` and ``ours`` = fastest of OUR_BACKENDS."""
    ok = rows[rows.status == "OK"].dropna(subset=["us"])
    if ok.empty:
        raise ValueError("no row has status OK")
    best = ok.loc[ok.groupby(["M", "N", "K", "peer"]).us.idxmin()]
    table = best.pivot_table(index=["N", "K", "M"], columns="peer", values="us")
    table["floor_us"] = rows.groupby(["N", "K", "M"]).floor_us.first()
    ours = [c for c in OUR_BACKENDS if c in table]
    table["ours"] = table[ours].min(axis=1) if ours else np.nan
    return table


def reference(table: pd.DataFrame) -> str:
    """The column the report calls "ours": the tuned op when it was timed, else the best backend."""
    return TUNED if TUNED in table else "ours"


def timed_backends(table: pd.DataFrame) -> list[str]:
    """The columns of OUR_BACKENDS with at least one verified time."""
    return [c for c in OUR_BACKENDS if c in table and table[c].notna().any()]


def compared_peers(table: pd.DataFrame) -> list[str]:
    """Columns compared against the reference: external peers first, then our own backends.

    ``ours`` is left out when fewer than two of our backends were timed: it is then the one timed
    backend's column under another name.
    """
    ref = reference(table)
    names = list(PEER_LABELS) + list(BACKEND_LABELS)
    if len(timed_backends(table)) < 2:
        names.remove("ours")
    return [c for c in names if c in table and c != ref and table[c].notna().any()]


def label(peer: str) -> str:
    """Readable name of a peer column."""
    if peer == TUNED:
        return "tuned op (shipped configs)"
    return PEER_LABELS.get(peer) or BACKEND_LABELS.get(peer, peer)


def geomean(values) -> float:
    """Geometric mean of the finite positive values; NaN if there are none."""
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr) & (arr > 0)]
    return float(np.exp(np.log(arr).mean())) if arr.size else math.nan


def in_range(table: pd.DataFrame, lo: float, hi: float) -> pd.Series:
    """Boolean mask of the points whose M lies in [lo, hi]."""
    ms = table.index.get_level_values("M")
    return pd.Series((ms >= lo) & (ms <= hi), index=table.index)


def speedups(table: pd.DataFrame) -> pd.DataFrame:
    """Geomean of peer_us / ours_us per M range (>1: ours faster), one row per compared peer.

    Only points where both have a verified time count; column ``points`` counts them over all M.
    """
    ref = reference(table)
    out = {}
    for peer in compared_peers(table):
        ratio = table[peer] / table[ref]
        cells = {name: geomean(ratio[in_range(table, lo, hi)]) for name, lo, hi in M_RANGES}
        cells["points"] = int(ratio.notna().sum())
        out[peer] = cells
    return pd.DataFrame.from_dict(out, orient="index")


def floor_fractions(table: pd.DataFrame) -> pd.DataFrame:
    """floor_us / us of every point for the reference and each compared peer (NaN where not verified)."""
    columns = [reference(table)] + compared_peers(table)
    return pd.DataFrame({c: table.floor_us / table[c] for c in columns})


def floor_fraction_geomeans(table: pd.DataFrame) -> pd.DataFrame:
    """Geomean of floor_us / us per M range, one row per column of ``floor_fractions``."""
    fractions = floor_fractions(table)
    return pd.DataFrame({name: fractions[in_range(table, lo, hi)].apply(geomean) for name, lo, hi in M_RANGES})


def left_out(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per peer, the points where it ran but no candidate was verified OK, with the first status seen.

    Returns {peer: frame of N, K, M, status}; peers with no such point are omitted.
    """
    per_point = rows.groupby(["peer", "N", "K", "M"]).status
    any_ok = per_point.apply(lambda s: (s == "OK").any())
    first = per_point.first().str.split(":").str[0]
    bad = first[~any_ok].rename("status").reset_index()
    return {peer: group.drop(columns="peer").reset_index(drop=True) for peer, group in bad.groupby("peer")}


def winners(table: pd.DataFrame) -> pd.DataFrame | None:
    """(N, K) x M frame of the fastest of OUR_BACKENDS at each point, or None with fewer than two timed."""
    present = timed_backends(table)
    if len(present) < 2:
        return None
    won = table[present].apply(lambda row: row.idxmin() if row.notna().any() else "", axis=1)
    return won.unstack("M").fillna("")


def tuned_backends(rows: pd.DataFrame) -> pd.DataFrame | None:
    """(N, K) x M frame of the backend the tuned op dispatched to (config ``backend:params``), or None."""
    tuned = rows[(rows.peer == TUNED) & (rows.status == "OK")]
    if tuned.empty:
        return None
    backend = tuned.config.astype(object).fillna("").astype(str).str.split(":").str[0]
    return backend.groupby([tuned.N, tuned.K, tuned.M]).first().unstack("M").fillna("")


def fmt(value, digits: int = 3) -> str:
    """A table cell: fixed decimals, an em dash for NaN, integers as they are."""
    if isinstance(value, (int, np.integer)):
        return str(value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def markdown_table(header: list[str], body: list[list]) -> str:
    """A GitHub markdown table; cells are formatted with ``fmt`` unless already strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in body:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |")
    return "\n".join(lines)


def shape_by_m_table(frame: pd.DataFrame, cell=str) -> str:
    """Markdown of an (N, K) x M frame such as ``winners``; ``cell`` maps each value to its text."""
    header = ["N", "K"] + [f"M={m}" for m in frame.columns]
    body = [[str(n), str(k)] + [cell(v) for v in values] for (n, k), values in zip(frame.index, frame.values)]
    return markdown_table(header, body)
