"""The performance report: ``<out>/performance.md`` (and its plots) from benchmark runs (``gemm bench``).

Each run is one device and the directory of one run on it:
``DIR/bench_rows.csv`` (required), ``DIR/ceilings.json`` (optional: device,
versions, measured ceilings) and ``DIR/NOTES.md`` (optional: what a reader must
know about that run, printed under the device's heading). Every number in the
report comes from those files.
"Ours" is the tuned op (peer ``tuned_op``) where the run timed it, else the
fastest of our backends at each point.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pandas as pd

from gemm.bench import tables as lib
from gemm.bench.plots import plot_device
from gemm.bench.runs import Device, load_device

CEILING_LABELS = {"fp8_tflops": ("FP8 per-tensor cuBLAS", "TFLOPS"), "bf16_tflops": ("bf16 torch.matmul", "TFLOPS"),
                  "copy_tbps": ("copy bandwidth", "TB/s")}


def slug(label: str) -> str:
    """A file-name-safe form of a device label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_").lower() or "device"


def header_lines(device: Device) -> list[str]:
    """Markdown lines naming the device, versions, ceilings and the source files of one run."""
    ms = sorted(device.table.index.get_level_values("M").unique())
    shapes = device.table.index.droplevel("M").unique()
    out = [f"Source: `{device.directory / 'bench_rows.csv'}` ({len(device.rows)} timed candidates; "
           f"{len(shapes)} shapes x M in {{{', '.join(map(str, ms))}}} = {len(device.table)} points)."]
    info = device.info
    if info is None:
        return out + ["", f"No `ceilings.json` in `{device.directory}`: device, versions and ceilings not recorded."]
    versions = ", ".join(f"{key} {info[key]}" for key in ("torch", "cuda", "triton", "cutlass", "nvcc", "gemm")
                         if info.get(key))
    out += ["", f"Device: **{info.get('device', device.label)}**" + (f"; {versions}." if versions else ".")]
    ceilings = [f"{name} {info[key]:.{2 if unit == 'TB/s' else 0}f} {unit}"
                for key, (name, unit) in CEILING_LABELS.items() if isinstance(info.get(key), (int, float))]
    if ceilings:
        size = f" (GEMMs at M = N = K = {info['ceiling_size']})" if info.get("ceiling_size") else ""
        out += ["", f"Measured ceilings{size}: " + "; ".join(ceilings) + "."]
    if info.get("command"):
        out += ["", f"Benchmark command: `{info['command']}`"]
    return out


def speedup_section(device: Device) -> list[str]:
    """Geomean table of peer_us / ours_us per M range, and the points left out per peer."""
    table = lib.speedups(device.table)
    header = ["peer"] + [name for name, _, _ in lib.M_RANGES] + ["points"]
    body = [[lib.label(peer)] + [table.at[peer, name] for name, _, _ in lib.M_RANGES] + [int(table.at[peer, "points"])]
            for peer in table.index]
    out = [f"Geomean of peer µs / ours µs (> 1: ours faster). Ours = {lib.label(lib.reference(device.table))}. "
           "Only verified points count; points with 64 < M < 128 count only under \"all\".", "",
           lib.markdown_table(header, body)]
    for peer, bad in lib.left_out(device.rows).items():
        where = "; ".join(f"N={n} K={k} M={', '.join(map(str, group.M))} ({', '.join(group.status.unique())})"
                          for (n, k), group in bad.groupby(["N", "K"], sort=False))
        count = f"{len(bad)} point{'s' if len(bad) > 1 else ''}"
        out += ["", f"Left out for {lib.label(peer)} ({count} without a verified result): {where}."]
    return out


def floor_section(device: Device) -> list[str]:
    """Geomean fraction of the floor per M range, then every point's fraction in a collapsed table."""
    geo = lib.floor_fraction_geomeans(device.table)
    header = ["peer"] + [name for name, _, _ in lib.M_RANGES]
    ref = lib.reference(device.table)
    body = [[f"ours: {lib.label(c)}" if c == ref else lib.label(c)] + list(geo.loc[c]) for c in geo.index]
    frac = lib.floor_fractions(device.table)
    point_header = ["N", "K", "M", "floor µs", "ours µs", "ours"] + [lib.label(c) for c in frac.columns[1:]]
    points = [[str(n), str(k), str(m), device.table.at[(n, k, m), "floor_us"], device.table.at[(n, k, m), ref]]
              + list(values) for (n, k, m), values in zip(frac.index, frac.values)]
    return ["Fraction of each point's floor, floor_us / us (1 = at the floor; the floor is the larger of the "
            "time at the measured FP8 ceiling and the minimum bytes at the measured copy bandwidth). "
            "Geomean per M range:", "", lib.markdown_table(header, body), "",
            "<details><summary>Every point: floor, ours in µs, then floor_us / us of each</summary>", "",
            lib.markdown_table(point_header, points), "",
            "</details>"]


def backend_section(device: Device) -> list[str]:
    """Which of our backends was fastest at each point, and what the tuned op dispatched to."""
    out = []
    won = lib.winners(device.table)
    if won is None:
        out.append("Fewer than two of our backends were timed in this run: no per-point winner.")
    else:
        legend = "; ".join(f"{lib.WINNER_LETTERS[b]} = {lib.label(b)}" for b in lib.OUR_BACKENDS
                           if b in device.table)
        out += [f"Fastest of our backends per point ({legend}):", "",
                lib.shape_by_m_table(won, lambda b: lib.WINNER_LETTERS.get(b, b))]
    dispatched = lib.tuned_backends(device.rows)
    if dispatched is not None:
        out += ["", "Backend the tuned op dispatched to (from the shipped configs):", "",
                lib.shape_by_m_table(dispatched)]
    return out


def render(devices: list[Device], command: str, date: str, plots: dict[str, str]) -> str:
    """The whole markdown document; ``plots`` maps a device label to its PNG path relative to the document."""
    out = ["# Performance", "", f"Generated {date} from benchmark CSVs; regenerate with:", "", f"    {command}", "",
           "Times are medians of CUDA-graph replays that cycle over enough input copies to exceed twice the L2 "
           "(weights read cold), every candidate verified against the fp32 reference before it is timed "
           "(`gemm bench`)."]
    if len(devices) > 1:
        out += ["", "## Summary", "", "Geomean of peer µs / ours µs over all points (> 1: ours faster):", ""]
        per = {d.label: lib.speedups(d.table).get("all", pd.Series(dtype=float)) for d in devices}
        seen = {p for s in per.values() for p in s.index}
        peers = [p for p in [*lib.PEER_LABELS, *lib.BACKEND_LABELS] if p in seen]
        refs = {d.label: lib.label(lib.reference(d.table)) for d in devices}
        out.append(lib.markdown_table(["device", "ours"] + [lib.label(p) for p in peers],
                                      [[label, refs[label]] + [s.get(p, float("nan")) for p in peers]
                                       for label, s in per.items()]))
    for device in devices:
        out += ["", f"## {device.label}", ""] + header_lines(device)
        if device.notes:
            out += ["", device.notes]
        if device.label in plots:
            out += ["", f"![{device.label}: TFLOPS vs M]({plots[device.label]})"]
        out += ["", f"### {device.label}: speed-up of ours over each peer", ""] + speedup_section(device)
        out += ["", f"### {device.label}: fraction of the floor", ""] + floor_section(device)
        out += ["", f"### {device.label}: which backend won", ""] + backend_section(device)
    return "\n".join(out) + "\n"


def write_report(devices: list[Device], out: Path, command: str, plots: bool = True) -> tuple[Path, list[Path]]:
    """``out/performance.md`` of ``devices`` and, with ``plots``, one PNG per device under ``out/performance/``.

    ``command`` is the command line that regenerates the report. Plots need matplotlib (ImportError
    otherwise, before anything is written). Returns the markdown's path and the plots' paths.
    """
    pictures = {}
    if plots:
        import matplotlib  # noqa: F401 -- fail before anything is written

        (out / "performance").mkdir(parents=True, exist_ok=True)
        for device in devices:
            pictures[device.label] = f"performance/{slug(device.label)}_tflops.png"
            plot_device(device, out / pictures[device.label])
    out.mkdir(parents=True, exist_ok=True)
    document = render(devices, command, datetime.date.today().isoformat(), pictures)
    path = out / "performance.md"
    path.write_text(document)
    return path, [out / name for name in pictures.values()]


def report_run(directory: Path, label: str, command: str, plots: bool = True) -> tuple[Path, list[Path]]:
    """``write_report`` of the one run in ``directory`` (labelled ``label``), into that directory."""
    return write_report([load_device(label, directory)], directory, command, plots)
