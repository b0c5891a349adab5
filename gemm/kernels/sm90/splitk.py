"""Split-K arithmetic of the Hopper kernel, mirrored from ``fp8_gemm_splitk.cuh`` and ``fp8_gemm.cuh``.

With ``splits`` = S > 1 every output tile's K blocks are cut into S contiguous ranges, split s
taking the s-th (``split_range``); each (tile, split) is a work unit. The persistent grid runs rounds
of ``round_tiles`` tiles x S units, split-major inside a round with split 0 last (``unit_order``), so
the one unit of a tile that waits for the others (split 0, which adds their fp32 partial sums to its
own in K order) always runs on a higher cluster index than the units it waits for, in the same round:
the argument that no unit waits forever is in ``fp8_gemm_splitk.cuh``. The workspace the launcher
owns holds one int32 counter per tile and consumer warp group (``counter_slots``) and S-1 fp32 partial
tiles per tile (``partial_bytes``).

Nothing here needs a GPU; the CPU tests check these against the C++ (``workspace_sizes``) and check
the decomposition itself (every K block once, no empty split, the waiting order).
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple

from gemm.kernels.sm90.params import BLOCK_K, consumers

#: Largest split-K workspace (fp32 partials) a launch may ask for; ``check`` refuses more.
MAX_WORKSPACE_BYTES = 256 * 2**20


def split_range(k_blocks: int, splits: int, split: int) -> tuple[int, int]:
    """K blocks [begin, end) of ``split`` (0-based) of ``splits`` over ``k_blocks``; the remainder goes
    to the last splits, so split 0 (the one that adds the partials) has the fewest."""
    if not 1 <= splits <= k_blocks:
        raise ValueError(f"splits must be in [1, k_blocks={k_blocks}], got {splits}")
    if not 0 <= split < splits:
        raise ValueError(f"split must be in [0, {splits}), got {split}")
    base, extra = divmod(k_blocks, splits)
    lean = splits - extra  # splits [0, lean) have ``base`` blocks, the others base + 1
    begin = split * base + max(0, split - lean)
    return begin, begin + base + (1 if split >= lean else 0)


def round_tiles(resident_clusters: int, splits: int, cluster_tiles: int) -> int:
    """Cluster tiles per round (``splitk_round_tiles``): every cluster of the grid gets a unit, at least one tile."""
    return min(max(1, resident_clusters // splits), cluster_tiles)


class Unit(NamedTuple):
    """One work unit: the cluster that runs it, its round, the cluster tile and split, its K blocks."""

    cluster: int
    round: int
    tile: int
    split: int
    kb_begin: int
    kb_end: int


def grid_clusters(resident_clusters: int, splits: int, cluster_tiles: int) -> int:
    """Clusters of a split-K launch: ``round_tiles`` x ``splits``."""
    return round_tiles(resident_clusters, splits, cluster_tiles) * splits


def unit_order(cluster_tiles: int, k_blocks: int, splits: int, resident_clusters: int) -> Iterator[Unit]:
    """Every work unit of a split-K launch in the kernel's order (``splitk_unit``): unit u = round * G +
    cluster over the G clusters of the grid, split S-1 on the first clusters of a round and split 0 on the
    last, idle slots of a short last round left out."""
    per_round = round_tiles(resident_clusters, splits, cluster_tiles)
    clusters = per_round * splits
    rounds = math.ceil(cluster_tiles / per_round)
    for u in range(rounds * clusters):
        rnd, slot = divmod(u, clusters)
        first = rnd * per_round
        here = min(per_round, cluster_tiles - first)
        if slot >= here * splits:
            continue
        group, local = divmod(slot, here)
        split = splits - 1 - group
        yield Unit(slot, rnd, first + local, split, *split_range(k_blocks, splits, split))


def workspace_tiles(m: int, n: int, block_m: int, block_n: int, cluster_m: int = 1, cluster_n: int = 1) -> int:
    """Tiles with a workspace slot: every CTA tile of every cluster tile (``splitk_workspace_tiles``)."""
    return (math.ceil(math.ceil(m / block_m) / cluster_m) * math.ceil(math.ceil(n / block_n) / cluster_n)
            * cluster_m * cluster_n)


def counter_slots(m: int, n: int, block_m: int, block_n: int, splits: int, cluster_m: int = 1,
                  cluster_n: int = 1) -> int:
    """int32 counters a launch needs: one per tile and consumer warp group (0 with splits == 1)."""
    if splits == 1:
        return 0
    return workspace_tiles(m, n, block_m, block_n, cluster_m, cluster_n) * consumers(block_m)


def partial_bytes(m: int, n: int, block_m: int, block_n: int, splits: int, cluster_m: int = 1,
                  cluster_n: int = 1) -> int:
    """Bytes of fp32 partial tiles a launch needs: one per tile and split 1..S-1 (0 with splits == 1)."""
    return workspace_tiles(m, n, block_m, block_n, cluster_m, cluster_n) * (splits - 1) * block_m * block_n * 4


def k_blocks(k: int) -> int:
    """128-deep K blocks of K (the last may be ragged)."""
    return math.ceil(k / BLOCK_K)
