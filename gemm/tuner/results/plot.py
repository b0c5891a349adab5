"""PNG charts of results logs (``gemm plot``; needs matplotlib, the ``plot`` extra).

* ``tflops.png``: TFLOPS against M, one panel per shape, one line per backend
  (each backend's best carefully timed candidate at each M);
* ``winners.png``: which backend wins at each (shape, M), annotated with its
  speed-up over the best other backend.
"""

from __future__ import annotations

import math
from pathlib import Path

from gemm.tuner.results.measurement import Stage, Status

_COLORS = {"triton": "#1f77b4", "cutlass": "#2ca02c", "cublas": "#d62728"}


def best_per_backend(rows) -> dict[tuple[int, int], dict[str, dict[int, float]]]:
    """``{(n, k): {backend: {m: best us}}}`` over OK FINAL rows."""
    best: dict[tuple[int, int], dict[str, dict[int, float]]] = {}
    for row in rows:
        if row.stage != Stage.FINAL or row.status != Status.OK or row.us is None:
            continue
        per_m = best.setdefault((row.n, row.k), {}).setdefault(row.backend, {})
        if row.m not in per_m or row.us < per_m[row.m]:
            per_m[row.m] = row.us
    return best


def plot_tflops(best, path: Path, device: str = "") -> None:
    import matplotlib.pyplot as plt

    shapes = sorted(best)
    cols = min(3, len(shapes))
    rows = math.ceil(len(shapes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (n, k) in zip(axes.flat, shapes):
        for backend, per_m in sorted(best[(n, k)].items()):
            ms = sorted(per_m)
            tflops = [2 * m * n * k / (per_m[m] * 1e-6) / 1e12 for m in ms]
            ax.plot(ms, tflops, marker="o", markersize=3, label=backend, color=_COLORS.get(backend))
        ax.set_xscale("log", base=2)
        ax.set_title(f"N={n} K={k}", fontsize=10)
        ax.set_xlabel("M (tokens)")
        ax.set_ylabel("TFLOPS")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    if device:
        fig.suptitle(f"{device}: best TFLOPS per backend", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_winners(best, path: Path, device: str = "") -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    shapes = sorted(best)
    ms = sorted({m for per_backend in best.values() for per_m in per_backend.values() for m in per_m})
    backends = sorted({b for per_backend in best.values() for b in per_backend})
    grid = [[math.nan] * len(ms) for _ in shapes]
    labels = [[""] * len(ms) for _ in shapes]
    for i, shape in enumerate(shapes):
        for j, m in enumerate(ms):
            times = sorted((per_m[m], b) for b, per_m in best[shape].items() if m in per_m)
            if not times:
                continue
            grid[i][j] = backends.index(times[0][1])
            labels[i][j] = f"{times[1][0] / times[0][0]:.2f}x" if len(times) > 1 else ""
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(ms) + 2), 0.5 * len(shapes) + 2))
    cmap = ListedColormap([_COLORS.get(b, f"C{i + 3}") for i, b in enumerate(backends)])
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(backends) - 0.5, aspect="auto")
    for i in range(len(shapes)):
        for j in range(len(ms)):
            if labels[i][j]:
                ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(ms)), [str(m) for m in ms], rotation=90, fontsize=8)
    ax.set_yticks(range(len(shapes)), [f"N={n} K={k}" for n, k in shapes], fontsize=8)
    ax.set_xlabel("M (tokens)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(backends))]
    ax.legend(handles, backends, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title(f"{device + ': ' if device else ''}fastest backend (label: speed-up over the next backend)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(best, out: Path, device: str = "") -> tuple[Path, Path]:
    """``tflops.png`` and ``winners.png`` of ``best_per_backend`` under ``out`` (made if missing); their paths.

    ``device`` (the logs' GPU) titles both charts. Raises ImportError when matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    out.mkdir(parents=True, exist_ok=True)
    tflops, winners = out / "tflops.png", out / "winners.png"
    plot_tflops(best, tflops, device)
    plot_winners(best, winners, device)
    return tflops, winners
