"""Write ``<out>/performance.md`` and its plots from benchmark runs of ``scripts/bench_peers.py``.

Each DEVICE=DIR argument names one device and the directory of one run on it:
``DIR/bench_rows.csv`` (required), ``DIR/ceilings.json`` (optional: device,
versions, measured ceilings) and ``DIR/NOTES.md`` (optional: what a reader must
know about that run, printed under the device's heading). Every number in the
report comes from those files.
"Ours" is the tuned op (peer ``tuned_op``) where the run timed it, else the
fastest of our backends at each point.

    python scripts/performance_report.py H100=docs/bench/h100 H200=docs/bench/h200 --out docs
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_lib as lib  # noqa: E402

PLOTTED = ("cublas_blockwise", "cublas_per_tensor", "classic_default", "bf16_matmul")
CEILING_LABELS = {"fp8_tflops": ("FP8 per-tensor cuBLAS", "TFLOPS"), "bf16_tflops": ("bf16 torch.matmul", "TFLOPS"),
                  "copy_tbps": ("copy bandwidth", "TB/s")}


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


def slug(label: str) -> str:
    """A file-name-safe form of a device label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_").lower() or "device"


def plot_device(device: Device, path: Path) -> None:
    """One subplot per (N, K): TFLOPS vs M (log2) of ours, the external peers and the floor; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, ref = device.table, lib.reference(device.table)
    shapes = list(dict.fromkeys((n, k) for n, k, _ in table.index))
    cols = min(3, len(shapes))
    rows = -(-len(shapes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (n, k) in zip(axes.flat, shapes):
        point = table.loc[(n, k)]
        ms = point.index.to_numpy()

        def tflops(us: pd.Series):
            return 2.0 * ms * n * k / us.to_numpy() / 1e6

        ax.plot(ms, tflops(point.floor_us), ":", color="grey", label="floor")
        ax.plot(ms, tflops(point[ref]), "o-", lw=2.2, color="black", label=f"ours: {lib.label(ref)}")
        for peer in PLOTTED:
            if peer in point:
                ax.plot(ms, tflops(point[peer]), ".-", label=lib.label(peer))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # decode points sit two orders of magnitude below prefill ones
        ticks = [2**e for e in range(int(math.log2(ms.min())), math.ceil(math.log2(ms.max())) + 1)]
        # Powers of two keep dense M grids legible; 1k/2k/... keep the four-digit ones from running together.
        ax.set_xticks(ticks, [f"{t // 1024}k" if t >= 1024 else str(t) for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_title(f"N={n}, K={k}", fontsize=9)
        ax.set_xlabel("M", fontsize=8)
        ax.set_ylabel("TFLOPS", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shapes):]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    labels = list(handles)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"{device.label}: TFLOPS vs M (cold L2, CUDA-graph replay; gaps: not verified)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 4), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
           "(`scripts/bench_peers.py`)."]
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("devices", nargs="+", metavar="DEVICE=DIR", help="a device label and the directory of its run")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where performance.md and performance/ go")
    parser.add_argument("--no-plots", action="store_true", help="write the markdown only (no matplotlib needed)")
    args = parser.parse_args(argv)
    devices = []
    for arg in args.devices:
        try:
            devices.append(load_device(*parse_device(arg)))
        except ValueError as exc:
            parser.error(f"argument {arg!r}: {exc}")
    labels = [d.label for d in devices]
    if len({slug(label) for label in labels}) != len(labels):
        parser.error(f"device labels must differ (also as file names), got {', '.join(labels)}")
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("the plots need matplotlib: install it or pass --no-plots")
    plots = {}
    if not args.no_plots:
        (args.out / "performance").mkdir(parents=True, exist_ok=True)
        for device in devices:
            plots[device.label] = f"performance/{slug(device.label)}_tflops.png"
            plot_device(device, args.out / plots[device.label])
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "scripts/performance_report.py", *args.devices, "--out", str(args.out)]
                         + (["--no-plots"] if args.no_plots else []))
    document = render(devices, command, datetime.date.today().isoformat(), plots)
    (args.out / "performance.md").write_text(document)
    print(f"wrote {args.out / 'performance.md'}" + (f" and {len(plots)} plot(s) under {args.out / 'performance'}"
                                                    if plots else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
