// Stream-K of the project's Hopper block-FP8 GEMM: a hybrid data-parallel + stream-K schedule of the
// persistent grid, and how the partial sums of a tile shared by several clusters meet. It reuses the
// split-K pieces (the fp32 slot store and reduce, the counter arrive and wait-and-reset) of
// fp8_gemm_splitk.cuh. fp8_gemm_kernel.cuh includes this file; fp8_gemm.cuh sizes the grid and the
// workspace with the host helpers at the end; gemm/kernels/sm90/streamk.py mirrors the arithmetic.
//
// Schedule. G clusters (the resident ones, capped by max_ctas and by the iteration count below), T cluster
// tiles, KB K blocks of 128 per tile. If T >= 2G, the first dp_tiles = (T / G - 1) * G tiles run
// data-parallel, dp_rounds = T / G - 1 of them per cluster (cluster g: tiles g, g + G, ...); the other
// sk_tiles = T - dp_tiles (G to 2G - 1 of them) are stream-K'd. If T < 2G every tile is stream-K'd. The
// stream-K iterations, I = sk_tiles * KB (tile-major, then K block), are cut into G contiguous spans of
// base = I / G or base + 1 iterations (the first I % G clusters take base + 1); G <= I, so none is empty.
// A span decomposes into pieces, at most one per tile: (tile, kb_begin, kb_end). Cluster g's i-th unit is
// u = i * G + g (the kernel's walk u = cluster, += G): its dp_rounds data-parallel tiles, then the pieces
// of its span from the LAST to the first; streamk_unit is false past them.
//
// Order of the pieces. A tile's lower contributors hold pieces that end their spans; its owner holds the
// piece that starts its span. Walked first to last, an owner would wait at its first piece for a lower
// cluster's last one, which runs after that cluster's own first piece, itself perhaps an owner waiting on
// the cluster below: a chain through the clusters whose length grows with the tile count (measured on the
// H200: 323 us against 40 for split-K at M = 16, N = 7168, K = 18432). Walked last to first, every cluster
// publishes (or finishes a whole tile) before anything else and fixes up at the end, when the pieces it
// waits for, the first units of the lower clusters, are long done: a launch takes about one span.
//
// Fix-up. A tile's contributors are the clusters whose spans meet it: a contiguous run [first, owner].
// The OWNER is the one holding the tile's last K range (the highest contributor). Every other piece
// (it does not reach the tile's last K block) stores its fp32 `total` into its cluster's slot and arrives
// on the tile's counter; the owner waits for owner - first arrivals, adds the slots of first, first + 1,
// .., owner - 1 to its own `total` in that order whoever finished first (bitwise deterministic), resets the
// counter to zero and runs the normal epilogue. A piece covering the whole tile needs none of this.
//
// At most one published partial per cluster. A piece publishes iff it ends before its tile's last K
// block. Every piece but the last of a span ends where its tile ends (the span continues into the next
// tile), so only a span's last piece can publish: that covers spans inside a single tile too (one piece,
// which is the span's last). So slot g of the workspace belongs to cluster g alone. Cluster G - 1's span
// ends at I, the end of the last tile, so G - 1 slots would do; the workspace has G for simple indexing.
//
// Why no unit waits forever (split-K's argument, fp8_gemm_splitk.cuh, carried over). The only waiting
// unit is an owner with other contributors; they are clusters first .. owner - 1, all LOWER than the owner.
// (The owner's piece does not start the tile, so its span starts inside the tile. Each lower
// contributor's span ends inside the tile: its piece is the last of its span, which its cluster walks
// first, after its data-parallel tiles; it publishes and waits for nothing.) Take the unfinished unit of
// the lowest cluster index c, earliest in c's walk. Clusters below c finish and exit; clusters start in
// index order (how the work distributor hands them out), so c starts once they have at the latest; c's
// earlier units finished; this unit waits for nothing or for clusters below c, which finished. So no
// co-residency is assumed (the grid is sized to be co-resident anyway).
//
// Workspace (the caller's, as for split-K): G slots of kBlockM x kBlockN fp32, each split into the
// consumer warp groups' row parts exactly as a split-K slot is, and one int32 counter per stream-K tile
// and consumer warp group, zero between launches (every owner resets its counter), so no memset precedes
// a launch and CUDA-graph replays need nothing in between.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fp8_gemm_splitk.cuh"

namespace gemm_sm90 {

// x / d for 0 <= x < 2^31 by a multiply-high and a shift, with the multiplier and shift made on the host
// (the round-up method CUTLASS's FastDivmod uses: p = 31 + ceil(log2 d), m = ceil(2^p / d)). The unit
// function runs in the producer warp, which has 40 registers: a run-time integer division there spilled.
struct FastDiv {
  int d;
  uint32_t mul;    // unused for d == 1
  uint32_t shift;  // p - 32
};

inline FastDiv make_fast_div(int d) {
  FastDiv f{d, 0u, 0u};
  if (d > 1) {
    int log2_ceil = 0;
    while ((1ll << log2_ceil) < d) ++log2_ceil;
    int const p = 31 + log2_ceil;
    f.mul = uint32_t(((uint64_t(1) << p) + uint64_t(d) - 1) / uint64_t(d));
    f.shift = uint32_t(p - 32);
  }
  return f;
}

__host__ __device__ __forceinline__ int fast_div(FastDiv const& f, int x) {
  if (f.d == 1) return x;
#if defined(__CUDA_ARCH__)
  uint32_t const high = __umulhi(uint32_t(x), f.mul);
#else
  uint32_t const high = uint32_t((uint64_t(uint32_t(x)) * f.mul) >> 32);
#endif
  return int(high >> f.shift);
}

// What the device code needs for stream-K (enabled == 0: the other fields unused).
struct StreamKArgs {
  int enabled;
  int dp_rounds;   // data-parallel tiles per cluster; the first dp_rounds * G tiles are data-parallel
  int dp_tiles;    // dp_rounds * G (here so that the consumers' fix-up needs no grid size in a register)
  int sk_tiles;    // stream-K tiles, after the data-parallel ones
  int span_base;   // a span has span_base iterations, span_base + 1 on clusters [0, span_extra)
  int span_extra;
  FastDiv by_clusters;  // G
  FastDiv by_k_blocks;  // KB
  int32_t* counters;  // [sk_tiles][consumers] arrivals, zero between launches
  float* partials;    // [G][kBlockM * kBlockN] fp32: cluster g's one published partial
};

// Iterations [begin, end) of cluster g's span.
__host__ __device__ __forceinline__ void streamk_span(StreamKArgs const& s, int g, int& begin, int& end) {
  begin = g * s.span_base + (g < s.span_extra ? g : s.span_extra);
  end = begin + s.span_base + (g < s.span_extra ? 1 : 0);
}

// The cluster whose span holds stream-K iteration `x` (span_base >= 1).
__host__ __device__ __forceinline__ int streamk_cluster_of(StreamKArgs const& s, int x) {
  int const long_end = s.span_extra * (s.span_base + 1);  // where the spans of span_base + 1 end
  return x < long_end ? x / (s.span_base + 1) : s.span_extra + (x - long_end) / s.span_base;
}

// Unit u = i * G + g: the i-th of cluster g (data-parallel tiles first, then the pieces of its span);
// false past the cluster's last piece. w.tile is the cluster tile of the grid's grouped order; w.split
// packs the cluster and the unit's role (FixUpRole, fp8_gemm_splitk.cuh) as 4 g + role, so that the
// consumers keep one register, not the cluster index and the K range, live across the K loop (at 64x208
// without overlap one more spilled). The role: kPublish if the piece ends before its tile's last K block,
// kWholeTile if it covers all of K (data-parallel tiles too), else kFixUp (the tile's owner, with lower
// contributors). The producer and the consumers of a CTA call it with the same u. (Host code too: the
// CPU tests compare it with gemm/kernels/sm90/streamk.py.)
__host__ __device__ __forceinline__ bool streamk_unit(StreamKArgs const& s, int k_blocks, int num_clusters, int u,
                                                      WorkUnit& w) {
  int const i = fast_div(s.by_clusters, u);  // = u / num_clusters
  int const g = u - i * num_clusters;
  if (i < s.dp_rounds) {
    w.split = 4 * g + kWholeTile;
    w.tile = i * num_clusters + g;
    w.kb_begin = 0;
    w.kb_end = k_blocks;
    return true;
  }
  int begin, end;
  streamk_span(s, g, begin, end);
  // The pieces from the span's last to its first: see "Order of the pieces" at the top of the file.
  int const t = fast_div(s.by_k_blocks, end - 1) - (i - s.dp_rounds);  // stream-K tile of this piece
  int const tile_first = t * k_blocks;                 // its first iteration
  if (tile_first + k_blocks <= begin) return false;
  w.tile = s.dp_tiles + t;
  w.kb_begin = begin > tile_first ? begin - tile_first : 0;
  w.kb_end = end - tile_first < k_blocks ? end - tile_first : k_blocks;
  w.split = 4 * g + (w.kb_end < k_blocks ? kPublish : w.kb_begin == 0 ? kWholeTile : kFixUp);
  return true;
}

// The role of a unit (packed by streamk_unit), its cluster g, and for kFixUp `first`, the lowest
// contributor: the owner adds the slots of clusters first .. g - 1 (else first == g). `sk_tile`: the tile's
// counter row (negative for data-parallel tiles).
__host__ __device__ __forceinline__ int streamk_role(StreamKArgs const& s, int k_blocks, WorkUnit const& w, int& g,
                                                     int& sk_tile, int& first) {
  int const role = w.split & 3;
  g = w.split >> 2;
  sk_tile = w.tile - s.dp_tiles;
  first = role == kFixUp ? streamk_cluster_of(s, sk_tile * k_blocks) : g;
  return role;
}

// The fix-up of a stream-K unit of cluster g for one consumer warp group: kPublish into slot g, kFixUp
// adding slots first .. g - 1 (ascending cluster order), both on the tile's counter.
template <int kBlockM, int kBlockN, int kConsumers>
__device__ __forceinline__ FixUp streamk_fixup(StreamKArgs const& s, WorkUnit const& w, int k_blocks, int consumer,
                                               int row_base) {
  int g, sk_tile, first;
  FixUp f;
  f.role = streamk_role(s, k_blocks, w, g, sk_tile, first);
  f.count = g - first;
  f.counter = s.counters + sk_tile * kConsumers + consumer;
  f.slots = s.partials + (size_t(first) * kBlockM + row_base) * kBlockN;  // kPublish: first == g
  return f;
}

// ----------------------------------------------------------------------------------- host side

// The stream-K plan of one launch: grid, schedule, units per cluster, workspace.
struct StreamKPlan {
  int clusters;           // G
  int dp_tiles;           // data-parallel tiles (dp_rounds * G)
  int sk_tiles;
  int units_per_cluster;  // most units of any cluster (the grid walks G * this)
  StreamKArgs args;       // counters / partials null
};

// G = resident clusters capped by the iterations of the stream-K part (every span non-empty).
// tiles * k_blocks must fit an int (the caller checks).
inline StreamKPlan streamk_plan(int resident_clusters, int tiles, int k_blocks) {
  StreamKPlan p;
  int64_t const all = int64_t(tiles) * k_blocks;
  int g = resident_clusters < 1 ? 1 : resident_clusters;
  if (all < g) g = int(all);
  p.clusters = g;
  int const dp_rounds = tiles >= 2 * g ? tiles / g - 1 : 0;
  p.dp_tiles = dp_rounds * g;
  p.sk_tiles = tiles - p.dp_tiles;
  int const iterations = p.sk_tiles * k_blocks;
  p.args = StreamKArgs{1, dp_rounds, p.dp_tiles, p.sk_tiles, iterations / g, iterations % g,
                       make_fast_div(g), make_fast_div(k_blocks), nullptr, nullptr};
  int most = 0;
  for (int c = 0; c < g; ++c) {
    int begin, end;
    streamk_span(p.args, c, begin, end);
    int const pieces = (end - 1) / k_blocks - begin / k_blocks + 1;
    if (pieces > most) most = pieces;
  }
  p.units_per_cluster = dp_rounds + most;
  return p;
}

}  // namespace gemm_sm90
