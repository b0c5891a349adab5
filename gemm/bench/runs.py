"""A benchmark run as the report reads it: one device's directory of ``bench_rows.csv`` (required),
``ceilings.json`` and ``NOTES.md`` (optional)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gemm.bench import tables as lib


@dataclass
class Device:
    """One device's run: its label, directory, candidate rows, per-point table, ceilings.json and NOTES.md."""

    label: str
    directory: Path
    rows: pd.DataFrame
    table: pd.DataFrame
    info: dict | None
    notes: str = ""


def parse_device(arg: str) -> tuple[str, Path]:
    """``"H100=docs/bench/h100"`` -> ("H100", Path(...)); ValueError saying what is wrong."""
    label, sep, directory = arg.partition("=")
    if not sep or not label.strip() or not directory.strip():
        raise ValueError("expected DEVICE=DIR, e.g. H100=docs/bench/h100")
    path = Path(directory.strip())
    if not path.is_dir():
        raise ValueError(f"directory {path} does not exist")
    if not (path / "bench_rows.csv").is_file():
        raise ValueError(f"{path} holds no bench_rows.csv")
    return label.strip(), path


def load_device(label: str, directory: Path) -> Device:
    """Read DIR/bench_rows.csv and DIR/ceilings.json; ValueError naming the file that cannot be used."""
    rows = lib.read_rows(directory / "bench_rows.csv")
    try:
        table = lib.summarize(rows)
    except ValueError as exc:
        raise ValueError(f"{directory / 'bench_rows.csv'}: {exc}") from None
    info_path = directory / "ceilings.json"
    info = None
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{info_path} is not valid JSON: {exc}") from None
    notes_path = directory / "NOTES.md"
    notes = notes_path.read_text().strip() if notes_path.is_file() else ""
    return Device(label, directory, rows, table, info, notes)
