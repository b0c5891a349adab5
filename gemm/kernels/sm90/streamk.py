"""Stream-K arithmetic of the Hopper kernel, mirrored from ``fp8_gemm_streamk.cuh`` and ``fp8_gemm.cuh``.

Over the G clusters of the grid (``grid_clusters``: the co-resident ones, capped by the iterations), T
tiles and KB K blocks of 128 per tile: with T >= 2G the first ``(T // G - 1) * G`` tiles run
data-parallel (cluster g takes tiles g, g + G, ...) and the other G to 2G - 1 are stream-K'd; with T < 2G
all are. The stream-K iterations (tile-major, then K block) are cut into G contiguous spans of as equal a
length as possible (the first ``I % G`` one longer), cluster g taking the g-th; a span is a run of
pieces (tile, kb_begin, kb_end), at most one per tile. A tile's owner is the contributor holding its
last K range (the highest cluster); every other contributor publishes its fp32 partial into its
cluster's slot and arrives on the tile's counter, and the owner adds the slots in ascending cluster
order before the epilogue. Cluster g's i-th unit is u = i * G + g: its data-parallel tiles first, then
its pieces from the span's last to its first, so that a cluster publishes before it does anything else
and fixes up last (walked the other way, the owners' waits chain through the clusters).

Nothing here needs a GPU; the CPU tests check these against the C++ (the exported ``streamk_plan`` and
``streamk_unit``) and check the schedule itself (coverage, spans, one partial per cluster, owners).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from gemm.kernels.sm90.params import consumers

#: What a unit does after its K loop (``FixUpRole`` in ``fp8_gemm_splitk.cuh``, packed by ``streamk_unit``).
WHOLE_TILE, PUBLISH, FIX_UP = 0, 1, 2


def grid_clusters(resident_clusters: int, tiles: int, k_blocks: int) -> int:
    """G: the co-resident clusters (>= 1), at most tiles x K blocks so that no span is empty."""
    if tiles < 1 or k_blocks < 1:
        raise ValueError(f"tiles and k_blocks must be >= 1, got {tiles} and {k_blocks}")
    return min(max(1, resident_clusters), tiles * k_blocks)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The stream-K schedule of ``tiles`` x ``k_blocks`` on ``clusters`` (G) clusters (``streamk_plan``)."""

    tiles: int
    k_blocks: int
    clusters: int
    dp_rounds: int  # data-parallel tiles per cluster
    sk_tiles: int

    @property
    def dp_tiles(self) -> int:
        return self.dp_rounds * self.clusters

    @property
    def iterations(self) -> int:
        """I: (tile, K block) pairs of the stream-K part."""
        return self.sk_tiles * self.k_blocks

    def span(self, cluster: int) -> tuple[int, int]:
        """Iterations [begin, end) of ``cluster``'s span (``streamk_span``)."""
        base, extra = divmod(self.iterations, self.clusters)
        begin = cluster * base + min(cluster, extra)
        return begin, begin + base + (1 if cluster < extra else 0)

    def cluster_of(self, iteration: int) -> int:
        """The cluster whose span holds stream-K ``iteration`` (``streamk_cluster_of``)."""
        base, extra = divmod(self.iterations, self.clusters)
        long_end = extra * (base + 1)
        return iteration // (base + 1) if iteration < long_end else extra + (iteration - long_end) // base

    def pieces(self, cluster: int) -> list[tuple[int, int, int]]:
        """(stream-K tile, kb_begin, kb_end) of ``cluster``'s span, in order."""
        begin, end = self.span(cluster)
        kb = self.k_blocks
        return [(t, max(begin - t * kb, 0), min(end - t * kb, kb)) for t in range(begin // kb, (end - 1) // kb + 1)]

    @property
    def units_per_cluster(self) -> int:
        """Most units of any cluster: the kernel walks G x this."""
        return self.dp_rounds + max(len(self.pieces(g)) for g in range(self.clusters))

    def contributors(self, sk_tile: int) -> list[int]:
        """Clusters whose spans meet stream-K tile ``sk_tile``, ascending; the last is its owner."""
        first = self.cluster_of(sk_tile * self.k_blocks)
        last = self.cluster_of((sk_tile + 1) * self.k_blocks - 1)
        return list(range(first, last + 1))

    def owner(self, sk_tile: int) -> int:
        """The cluster holding the tile's last K range: it adds the others' partials and stores the tile."""
        return self.contributors(sk_tile)[-1]


def schedule(tiles: int, k_blocks: int, resident_clusters: int) -> Schedule:
    """The schedule of a launch (``streamk_plan``): G clusters, data-parallel rounds, stream-K tiles."""
    g = grid_clusters(resident_clusters, tiles, k_blocks)
    dp_rounds = tiles // g - 1 if tiles >= 2 * g else 0
    return Schedule(tiles, k_blocks, g, dp_rounds, tiles - dp_rounds * g)


class Unit(NamedTuple):
    """One work unit: cluster, index in its walk, cluster tile (grouped order), K blocks, role, the lowest
    contributor (the cluster itself unless it fixes up) and the stream-K tile (negative for data-parallel)."""

    cluster: int
    index: int
    tile: int
    kb_begin: int
    kb_end: int
    role: int
    first: int
    sk_tile: int


def unit(s: Schedule, u: int) -> Unit | None:
    """Unit ``u`` = i * G + g (``streamk_unit`` and ``streamk_role``), or None past cluster g's units."""
    i, g = divmod(u, s.clusters)
    if i < s.dp_rounds:
        return Unit(g, i, i * s.clusters + g, 0, s.k_blocks, WHOLE_TILE, g, i * s.clusters + g - s.dp_tiles)
    pieces = s.pieces(g)[::-1]  # the span's last piece first
    if i - s.dp_rounds >= len(pieces):
        return None
    t, kb_begin, kb_end = pieces[i - s.dp_rounds]
    if kb_end < s.k_blocks:
        role, first = PUBLISH, g
    elif kb_begin == 0:
        role, first = WHOLE_TILE, g
    else:
        role, first = FIX_UP, s.cluster_of(t * s.k_blocks)
    return Unit(g, i, s.dp_tiles + t, kb_begin, kb_end, role, first, t)


def units(s: Schedule) -> list[Unit]:
    """Every unit in the kernel's order of u (idle slots left out)."""
    out = [unit(s, u) for u in range(s.clusters * s.units_per_cluster)]
    return [x for x in out if x is not None]


def mma_tiles(m: int, n: int, block_m: int, block_n: int) -> int:
    """Tiles of an m x n (MMA) problem."""
    return math.ceil(m / block_m) * math.ceil(n / block_n)


def counter_slots(s: Schedule, block_m: int) -> int:
    """int32 counters a launch needs: one per stream-K tile and consumer warp group."""
    return s.sk_tiles * consumers(block_m)


def partial_bytes(s: Schedule, block_m: int, block_n: int) -> int:
    """Bytes of fp32 partial tiles: one slot per cluster (each publishes at most one partial)."""
    return s.clusters * block_m * block_n * 4
