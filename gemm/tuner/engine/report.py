"""The comparison with a baseline as tables: per point, and per M range; written as CSV and markdown.

Speedups are baseline time over ours (> 1: ours faster), geomeans over the points with both times.
"file" is what the written config file holds (slower entries replaced by the baseline's); "search" is
the search's own pick before that replacement.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gemm.configs.store import atomic_write_text
from gemm.tuner.engine.compare import BaselinePoint, geomean
from gemm.tuner.results.measurement import short_params

#: M ranges of the per-range summary: decode, mid-size batches, prefill (upper bounds exclusive).
M_RANGES = ((1, 128), (128, 1024), (1024, None))


def points_table(points: list[BaselinePoint]) -> pd.DataFrame:
    """One row per point: ours, the baseline's entry, both times, the speedups and what happened."""
    rows = []
    for p in points:
        rows.append({
            "N": p.n, "K": p.k, "M": p.m,
            "ours": short_params(p.ours.params, p.ours.backend) if p.ours is not None else "-",
            "ours_us": round(p.ours.us, 3) if p.ours is not None else None,
            "baseline_M": p.key,
            "baseline": short_params(p.params) if p.params is not None else "-",
            "baseline_us": round(p.us, 3) if p.us is not None else None,
            "file_us": round(p.file_us, 3) if p.file_us is not None else None,
            "speedup": round(p.speedup, 4) if p.speedup is not None else None,
            "search_speedup": round(p.search_speedup, 4) if p.search_speedup is not None else None,
            "replaced": p.replaced,
            "note": p.note,
        })
    return pd.DataFrame(rows)


def _range_label(low: int, high: int | None) -> str:
    return f"M >= {low}" if high is None else (f"M < {high}" if low <= 1 else f"{low} <= M < {high}")


def ranges_table(points: list[BaselinePoint]) -> pd.DataFrame:
    """Per M range and overall: compared points, geomean and worst speedup of the file and of the search,
    entries replaced."""
    rows = []
    for label, chosen in [(_range_label(lo, hi), [p for p in points if p.m >= lo and (hi is None or p.m < hi)])
                          for lo, hi in M_RANGES] + [("all", list(points))]:
        compared = [p for p in chosen if p.speedup is not None]
        if not chosen:
            continue
        rows.append({
            "M range": label, "points": len(chosen), "compared": len(compared),
            "speedup": _rounded(geomean(p.speedup for p in compared)),
            "worst": _rounded(min((p.speedup for p in compared), default=None)),
            "search_speedup": _rounded(geomean(p.search_speedup for p in compared)),
            "replaced": sum(p.replaced for p in chosen),
        })
    return pd.DataFrame(rows)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of ``frame`` (no extra dependency: pandas' own needs ``tabulate``)."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        return str(value).replace("|", "/")

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def write_report(points: list[BaselinePoint], out_dir: Path, stem: str, title: str) -> tuple[Path, Path]:
    """``out_dir/<stem>.csv`` (every point) and ``out_dir/<stem>.md`` (per M range, then every point);
    each written whole or not at all. Returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = points_table(points)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    atomic_write_text(csv_path, table.to_csv(index=False))
    text = (f"# {title}\n\nSpeedup: the baseline's time over ours in the same run (> 1: ours faster); "
            f"`file`: what the written file holds (entries slower than the baseline's replaced by them), "
            f"`search`: the search's own pick.\n\n{markdown(ranges_table(points))}\n\n## Every point\n\n"
            f"{markdown(table)}\n")
    atomic_write_text(md_path, text)
    return csv_path, md_path
