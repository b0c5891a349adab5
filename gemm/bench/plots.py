"""TFLOPS-vs-M plots of a benchmark run (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from gemm.bench import tables as lib
from gemm.bench.runs import Device

#: The external peers drawn beside ours and the floor.
PLOTTED = ("cublas_blockwise", "cublas_per_tensor", "classic_default", "bf16_matmul")


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
