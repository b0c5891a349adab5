// Split-K of the project's Hopper block-FP8 GEMM: how work units are laid out and how the partial sums of
// one output tile meet. fp8_gemm_kernel.cuh includes this file; fp8_gemm.cuh sizes the grid and the
// workspace with the host helpers at the end.
//
// With splits = S > 1 the K blocks of every output tile are cut into S contiguous ranges, split s taking
// the s-th (split_range), and each (tile, split) is one work unit of the persistent grid. Every unit
// promotes its own range per 128-deep block into its fp32 `total`, as the data-parallel kernel does.
// Units of splits 1..S-1 then store `total` into slot s-1 of the tile's workspace and arrive on the
// tile's counter; the unit of split 0 waits until the counter says all S-1 have arrived, adds the slots of
// splits 1, 2, .., S-1 to its own `total` in that order, i.e. the ranges' sums in K order, whoever
// finished first (bitwise deterministic), resets the counter to zero and runs the normal epilogue. The
// slots are loaded into the registers of the (dead) partial accumulator and added straight into `total`,
// which is why the fixing-up unit owns the first range rather than adding the others apart first: that
// would need a third accumulator's registers (it spilled at 64x208). The kernel leaves every counter at
// zero, so no memset precedes a launch and CUDA-graph replays need nothing in between.
//
// Each consumer warp group owns its own rows of the tile, so it has its own counter and its own part of
// every slot: the two consumers of a 128- or 256-row tile never wait for each other. A thread stores its
// accumulator fragment as float4s at (fragment chunk) * 128 + (thread), so a warp writes 512 contiguous
// bytes per chunk, and the fixing-up thread of the same fragment reads the same addresses back: no shared
// memory is involved. Rows beyond M and 8-column groups beyond N are neither stored nor read.
//
// Work-unit order and why no unit waits forever. The grid has G = R * S clusters (R tiles per round,
// R = floor(resident clusters / S), at most the tile count). Round r covers tiles [r R, r R + R') with
// R' = min(R, tiles - r R); in it, cluster c < R' S runs split S-1 - c / R' of tile r R + c % R'
// (split-major inside the round, split 0 last), clusters c >= R' S of a short last round idle. A cluster
// walks rounds 0, 1, ... in order (unit u = r G + c, u += G). So the one unit that waits, split 0 of a
// tile, runs on a cluster whose index is higher than those of all the units it waits for, in the same
// round. Claim: every unit finishes. Suppose not, and take the unfinished unit of the lowest cluster index
// c, earliest in c's walk. Clusters below c finish all their units and exit; the hardware starts clusters
// in index order (CUDA does not promise it, but that is how the work distributor hands them out), so
// cluster c starts once they have, at the latest; its earlier units finish; the unit itself either waits
// for nothing, or for units of clusters below c, which finished. So the whole grid need not be
// co-resident (it is sized to be: G <= resident clusters, unless max_ctas or a round of one tile with
// S > resident clusters asks for more); units of splits 1..S-1 never wait on anything outside their own
// cluster.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace gemm_sm90 {

// What the device code needs for split-K.
struct SplitKArgs {
  int splits;        // K ranges per output tile (1: data-parallel, the fields below unused)
  int round_tiles;   // R: tiles (cluster tiles) per round; the grid has R * splits clusters
  int32_t* counters;  // [cluster tiles * cluster size][consumers] arrivals, zero between launches
  float* partials;    // [cluster tiles * cluster size][splits - 1][kBlockM * kBlockN] fp32 sums of splits >= 1
};

// K blocks [begin, end) of split `split` of `splits` over `k_blocks` (1 <= splits <= k_blocks): as even as
// possible, never empty. The remainder goes to the last splits, so split 0 (which also adds the others'
// partials) has the fewest blocks. gemm/kernels/sm90/splitk.py mirrors it (split_range).
__host__ __device__ __forceinline__ void split_range(int k_blocks, int splits, int split, int& begin, int& end) {
  int const base = k_blocks / splits;
  int const lean = splits - k_blocks % splits;  // splits [0, lean) have `base` blocks, the others base + 1
  begin = split * base + (split > lean ? split - lean : 0);
  end = begin + base + (split >= lean ? 1 : 0);
}

// One unit of work: a cluster tile and the K blocks [kb_begin, kb_end) of it.
struct WorkUnit {
  int tile;
  int split;
  int kb_begin, kb_end;
};

// Unit `u` of the split-K order described above (num_clusters = round_tiles * splits); false for an idle
// slot of a short last round. The producer and the consumers of a CTA call it with the same u. (Host code
// too: the CPU tests compare it with the Python mirror, gemm/kernels/sm90/splitk.py.)
__host__ __device__ __forceinline__ bool splitk_unit(SplitKArgs const& s, int cluster_tiles, int k_blocks,
                                                     int num_clusters, int u, WorkUnit& w) {
  int const round = u / num_clusters;
  int const slot = u - round * num_clusters;
  int const first = round * s.round_tiles;
  int const here = s.round_tiles < cluster_tiles - first ? s.round_tiles : cluster_tiles - first;
  if (slot >= here * s.splits) return false;
  int const group = slot / here;  // clusters [group R', (group + 1) R') of the round run one split
  w.split = s.splits - 1 - group;
  w.tile = first + (slot - group * here);
  split_range(k_blocks, s.splits, w.split, w.kb_begin, w.kb_end);
  return true;
}

// Unit `u` of a cluster's walk (u = cluster index, += num_clusters): data-parallel (splits == 1), the whole
// K of cluster tile u; split-K, one K range of a tile (splitk_unit), or nothing (false) in an idle slot of a
// short last round. Decided once per unit; the kernel's K loops only see the range.
__device__ __forceinline__ bool work_unit(SplitKArgs const& s, int cluster_tiles, int k_blocks, int num_clusters,
                                          int u, WorkUnit& w) {
  if (s.splits == 1) {
    w.tile = u;
    w.split = 0;
    w.kb_begin = 0;
    w.kb_end = k_blocks;
    return true;
  }
  return splitk_unit(s, cluster_tiles, k_blocks, num_clusters, u, w);
}

// Publishing a partial: a release reduction on the counter after the warp group's stores (each thread
// fences its stores, then the caller's named barrier puts them all before thread 0's release).
__device__ __forceinline__ void splitk_arrive(int32_t* counter) {
  asm volatile("red.release.gpu.global.add.s32 [%0], %1;" : : "l"(counter), "r"(1) : "memory");
}

// Spin until `target` units have arrived (acquire: their stores are visible afterwards), then reset the
// counter for the next launch; nothing else touches it in this launch.
__device__ __forceinline__ void splitk_wait_and_reset(int32_t* counter, int target) {
  int32_t seen;
  do {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
  } while (seen != target);
  asm volatile("st.relaxed.gpu.global.b32 [%0], %1;" : : "l"(counter), "r"(0) : "memory");
}

// The fragment of a consumer thread as float4 chunks: chunk (mi, q) holds total[mi][4q .. 4q+3] (rows r
// and r + 8, columns c and c + 1 of the q-th 8-column group of the mi-th 64-row wgmma slab).
// `part` points at the consumer warp group's part of one slot; a thread's chunk (mi, q) is at
// (mi * kQuads + q) * 128 + tid.
template <int kMmas, int kAccum>
__device__ __forceinline__ void splitk_store(float* part, float const (&total)[kMmas][kAccum], int tid,
                                             int rows_left, int cols_left, int thread_row) {
  constexpr int kQuads = kAccum / 4;
  float4* out = reinterpret_cast<float4*>(part);
#pragma unroll
  for (int mi = 0; mi < kMmas; ++mi) {
    if (mi * 64 + thread_row >= rows_left) continue;  // rows r and r + 8 of the slab are beyond M
#pragma unroll
    for (int q = 0; q < kQuads; ++q) {
      if (8 * q >= cols_left) continue;  // this 8-column group lies beyond N
      __stcg(out + (mi * kQuads + q) * 128 + tid,
             make_float4(total[mi][4 * q], total[mi][4 * q + 1], total[mi][4 * q + 2], total[mi][4 * q + 3]));
    }
  }
}

// total = (((total + slot 0) + slot 1) + ...) + slot count-1, each thread over its own chunks. A slot is
// loaded whole into `landing` (a dead partial accumulator of the same shape: no extra registers), so a
// thread's loads of one slot are independent and in flight together; one L2 round trip per slot. Loads
// bypass L1 (.cg): the slots were written by other SMs.
template <int kMmas, int kAccum>
__device__ __forceinline__ void splitk_reduce(float const* part, size_t slot_floats, int count,
                                              float (&landing)[kMmas][kAccum], float (&total)[kMmas][kAccum],
                                              int tid, int rows_left, int cols_left, int thread_row) {
  constexpr int kQuads = kAccum / 4;
  for (int s = 0; s < count; ++s) {
    float4 const* slot = reinterpret_cast<float4 const*>(part + size_t(s) * slot_floats);
#pragma unroll
    for (int mi = 0; mi < kMmas; ++mi) {
      if (mi * 64 + thread_row >= rows_left) continue;  // rows r and r + 8 of the slab are beyond M
#pragma unroll
      for (int q = 0; q < kQuads; ++q) {
        if (8 * q >= cols_left) continue;  // this 8-column group lies beyond N
        float4 const v = __ldcg(slot + (mi * kQuads + q) * 128 + tid);
        landing[mi][4 * q] = v.x;
        landing[mi][4 * q + 1] = v.y;
        landing[mi][4 * q + 2] = v.z;
        landing[mi][4 * q + 3] = v.w;
      }
    }
    // Unconditional: what the skipped loads leave in `landing` lands in rows and columns the store clips.
#pragma unroll
    for (int mi = 0; mi < kMmas; ++mi) {
#pragma unroll
      for (int i = 0; i < kAccum; ++i) total[mi][i] += landing[mi][i];
    }
  }
}

// What a unit does after its K loop, for one consumer warp group: split-K (splitk_fixup) and stream-K
// (streamk_fixup in fp8_gemm_streamk.cuh) each say it with a FixUp; fixup_combine does it. One copy of the
// store and reduce code serves both (two inlined copies made ptxas spill at 64x208 without overlap).
enum FixUpRole : int {
  kWholeTile = 0,  // nothing to meet: straight to the epilogue
  kPublish = 1,    // store `total` into the slot at `slots`, arrive on `counter`; no epilogue
  kFixUp = 2,      // wait for `count` arrivals on `counter`, add the `count` slots from `slots` on, epilogue
};

struct FixUp {
  int role;
  int count;         // kFixUp: the slots to add (in this order), i.e. the arrivals to wait for
  int32_t* counter;  // the tile's counter of this consumer
  float* slots;      // this consumer's part of the slot to store (kPublish) or of the first to add (kFixUp)
};

// Split-K: splits 1..S-1 publish into slot split - 1 of the tile; split 0 adds slots 0 .. S-2 (K order).
template <int kBlockM, int kBlockN, int kConsumers>
__device__ __forceinline__ FixUp splitk_fixup(SplitKArgs const& s, WorkUnit const& w, int ws_tile, int consumer,
                                              int row_base) {
  int const slices = s.splits - 1;
  constexpr size_t kSlotFloats = size_t(kBlockM) * kBlockN;
  FixUp f;
  f.counter = s.counters + ws_tile * kConsumers + consumer;
  f.slots = s.partials + size_t(ws_tile) * slices * kSlotFloats + size_t(row_base) * kBlockN;
  f.count = slices;
  f.role = kFixUp;
  if (w.split > 0) {
    f.role = kPublish;
    f.slots += (w.split - 1) * kSlotFloats;
  }
  return f;
}

// Runs `f` (kPublish or kFixUp) for one consumer warp group (`rows_left` / `cols_left`: its rows inside M,
// the tile's columns inside N; `sync`: the warp group's named barrier). kPublish: store, fence, arrive;
// false, the unit is done. kFixUp: wait for the arrivals, add the slots to `total` in order with
// `landing` (a dead partial accumulator) as the load buffer, reset the counter; true, the caller runs the
// epilogue.
template <int kBlockM, int kBlockN, int kMmas, int kAccum, class Sync>
__device__ __forceinline__ bool fixup_combine(FixUp const& f, int tid, int rows_left, int cols_left, int thread_row,
                                              Sync const& sync, float (&total)[kMmas][kAccum],
                                              float (&landing)[kMmas][kAccum]) {
  constexpr size_t kSlotFloats = size_t(kBlockM) * kBlockN;
  if (f.role == kPublish) {
    splitk_store<kMmas, kAccum>(f.slots, total, tid, rows_left, cols_left, thread_row);
    // Every thread's stores are visible GPU-wide before thread 0's release (the release alone would be
    // cumulative over the barrier too; the fence costs one L2 round trip per unit, in parallel).
    __threadfence();
    sync();
    if (tid == 0) splitk_arrive(f.counter);
    return false;
  }
  if (tid == 0) splitk_wait_and_reset(f.counter, f.count);
  sync();  // thread 0's acquire precedes every thread's loads
  splitk_reduce<kMmas, kAccum>(f.slots, kSlotFloats, f.count, landing, total, tid, rows_left, cols_left, thread_row);
  return true;
}

// ----------------------------------------------------------------------------------- host side

// Cluster tiles per round: as many as leave every cluster of the grid a unit (at least one tile).
inline int splitk_round_tiles(int resident_clusters, int splits, int cluster_tiles) {
  int tiles = resident_clusters / splits;
  if (tiles < 1) tiles = 1;
  return tiles < cluster_tiles ? tiles : cluster_tiles;
}

// CTA tiles with a workspace slot and counters: every CTA of every cluster tile, also one beyond M or N
// (Gemm::workspace_sizes sizes the workspace by it; splitk.py mirrors it as workspace_tiles).
inline int64_t splitk_workspace_tiles(int m, int n, int block_m, int block_n, int cluster_m, int cluster_n) {
  int64_t const cluster_tiles_m = ((m + block_m - 1) / block_m + cluster_m - 1) / cluster_m;
  int64_t const cluster_tiles_n = ((n + block_n - 1) / block_n + cluster_n - 1) / cluster_n;
  return cluster_tiles_m * cluster_tiles_n * cluster_m * cluster_n;
}

}  // namespace gemm_sm90
