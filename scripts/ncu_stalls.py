"""Where the warps of each kernel wait, from an ncu source page: stall samples per instruction class.

    ncu --set full --import-source yes -o prof ...            # on the GPU (see scripts/profile_sm90.py)
    ncu -i prof.ncu-rep --page source --csv --print-source sass > prof_sass.csv
    python scripts/ncu_stalls.py prof_sass.csv [--top 12] [--loops 6] [--out DIR]

For every kernel in the CSV: the share of its warp-stall samples per stall reason and per instruction
class (wgmma waits ``WARPGROUP.DEPBAR``, mbarrier waits ``SYNCS``/``NANOSLEEP``, named barriers ``BAR``,
the wgmmas, promotion FFMA/FMUL, shared loads, stores and TMA, branches), then the instructions with the
most samples. With ``--loops N``, the N execution counts holding the most samples: instructions that ran
equally often are one loop body (or straight-line code between branches), so each line says how many
instructions a pass of it runs and how many times it ran, e.g. a producer's per-stage instruction count or
a wait's retries against its first tries. Samples are taken at a fixed rate per warp, so a kernel's total is proportional to its
warps x time: two kernels' totals compare their cost. Rows go to ``DIR/stalls.csv`` with ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import sys
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"
#: (class, substrings of the SASS text that put an instruction in it), first match wins.
CLASSES = (
    ("wgmma wait", ("WARPGROUP.DEPBAR",)),
    ("mbarrier wait", ("SYNCS.", "NANOSLEEP")),
    ("named barrier", ("BAR.SYNC", "BAR.ARV", "BAR.RED")),
    ("wgmma", ("GMMA",)),
    ("ffma/fmul", ("FFMA", "FMUL", "FADD")),
    ("shared load", ("LDS",)),
    ("store/tma", ("STS", "STG", "UTMA", "UBLKCP")),
    ("global load", ("LDG", "LDGSTS")),
    ("branch", ("BRA",)),
)


@dataclass
class KernelStalls:
    """The stall samples of one kernel of the CSV."""

    name: str
    total: int = 0
    by_reason: collections.Counter = field(default_factory=collections.Counter)
    by_class: collections.Counter = field(default_factory=collections.Counter)
    instructions: list[tuple[int, str, str]] = field(default_factory=list)  # (samples, sass, top reason)
    executions: list[int] = field(default_factory=list)  # warp-level executions, parallel to instructions
    addresses: list[str] = field(default_factory=list)


def loops(kernel: KernelStalls) -> list[tuple[int, int, int, str]]:
    """(executions, instructions, samples, first address) per distinct execution count > 0, most samples
    first: instructions that ran equally often form one loop body or one straight run between branches."""
    groups: dict[int, list[int]] = {}
    for i, executed in enumerate(kernel.executions):
        if executed > 0:
            groups.setdefault(executed, []).append(i)
    out = [(executed, len(idx), sum(kernel.instructions[i][0] for i in idx), kernel.addresses[idx[0]])
           for executed, idx in groups.items()]
    return sorted(out, key=lambda g: (-g[2], -g[0]))


def instruction_class(sass: str) -> str:
    """The class of one SASS instruction (``CLASSES``), ``other`` if none matches."""
    for name, needles in CLASSES:
        if any(n in sass for n in needles):
            return name
    return "other"


def read_source_csv(path: Path) -> list[KernelStalls]:
    """The kernels of an ``ncu --page source --csv --print-source sass`` export (gzipped if it ends in
    ``.gz``), in file order.

    Each kernel's block starts with a ``"Kernel Name",<name>`` row and an ``Address,Source,...`` header;
    raises ValueError when the file holds no such block."""
    kernels: list[KernelStalls] = []
    header: list[str] | None = None
    opener = gzip.open if path.suffix == ".gz" else open  # the records under docs/bench are gzipped
    with opener(path, "rt", newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            if row[0] == "Kernel Name":
                kernels.append(KernelStalls(row[1] if len(row) > 1 else "?"))
                header = None
            elif row[0] == "Address":
                header = row
            elif header is not None and kernels and len(row) == len(header):
                add_instruction(kernels[-1], dict(zip(header, row)))
    if not kernels or not any(k.instructions for k in kernels):
        raise ValueError(f"{path}: no kernel with SASS rows (expected ncu --page source --csv --print-source sass)")
    return kernels


def add_instruction(kernel: KernelStalls, row: dict[str, str]) -> None:
    samples = int(row.get(SAMPLES) or 0)
    reasons = {k[len("stall_"):]: int(v or 0) for k, v in row.items()
               if k.startswith("stall_") and "Not Issued" not in k}
    kernel.total += samples
    kernel.by_reason.update(reasons)
    sass = row.get("Source", "").strip()
    kernel.by_class[instruction_class(sass)] += samples
    top = max(reasons.items(), key=lambda kv: kv[1])[0] if reasons and max(reasons.values()) else "-"
    kernel.instructions.append((samples, sass, top))
    kernel.executions.append(int((row.get(EXECUTED) or "0").replace(",", "") or 0))
    kernel.addresses.append(row.get("Address", ""))


def share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, help="ncu source-page CSV export")
    parser.add_argument("--top", type=int, default=12, help="instructions with the most samples to list")
    parser.add_argument("--loops", type=int, default=0,
                        help="also list the execution counts holding the most samples (loop bodies)")
    parser.add_argument("--out", type=Path, help="write DIR/stalls.csv (kernel, class, samples, share)")
    args = parser.parse_args(argv)
    if args.top < 0 or args.loops < 0:
        parser.error(f"--top and --loops take counts >= 0, got {args.top} and {args.loops}")
    try:
        kernels = read_source_csv(args.csv)
    except OSError as exc:
        print(f"ncu_stalls: cannot read {args.csv}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ncu_stalls: {exc}", file=sys.stderr)
        return 2
    rows = []
    for kernel in kernels:
        print(f"== {kernel.name[:150]}\n   {kernel.total} samples, {len(kernel.instructions)} instructions")
        print("   by reason: " + ", ".join(f"{r} {share(v, kernel.total)}" for r, v in kernel.by_reason.most_common(8)))
        print("   by class:  " + ", ".join(f"{c} {share(v, kernel.total)}" for c, v in kernel.by_class.most_common()))
        for samples, sass, top in sorted(kernel.instructions, key=lambda t: -t[0])[:args.top]:
            print(f"   {share(samples, kernel.total):>6s}  {sass[:72]:72s} {top}")
        for executed, count, samples, address in loops(kernel)[:args.loops]:
            print(f"   loop  {executed:>10d} passes x {count:4d} instructions  {share(samples, kernel.total):>6s} "
                  f"of the samples, from {address}")
        rows += [dict(kernel=kernel.name, instruction_class=c, samples=v, share=v / kernel.total if kernel.total else 0.0)
                 for c, v in kernel.by_class.most_common()]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "stalls.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["kernel", "instruction_class", "samples", "share"])
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
