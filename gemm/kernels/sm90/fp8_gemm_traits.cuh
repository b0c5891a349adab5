// The traits of one instantiation of the project's Hopper block-FP8 GEMM (tile, stages, shared-memory
// layout, register split), the kernel's arguments and the device helpers it is built from.
// fp8_gemm_kernel.cuh holds the kernel itself; fp8_gemm.cuh describes the design.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "cute/arch/copy_sm90_desc.hpp"
#include "cute/arch/mma_sm90_desc.hpp"
#include "cute/arch/mma_sm90_gmma.hpp"
#include "cute/arch/mma_sm90_gmma_ext.hpp"
#include "fp8_gemm_splitk.cuh"
#include "fp8_gemm_streamk.cuh"

namespace gemm_sm90 {

constexpr int kBlockK = 128;     // K per stage = the scale block along K
constexpr int kScaleBlock = 128;  // rows of B (columns of D) per weight scale
constexpr int kTurnBarrier0 = 3;  // named barriers of the consumers' issue turns (1 and 2: the epilogues)
constexpr int kTurnBarrier1 = 4;
constexpr int kEpilogueCols = 16;  // columns of one TMA store box (32 bytes of bf16: the 32-byte swizzle span)

// Everything the device code needs, passed by value as one __grid_constant__ parameter.
struct KernelArgs {
  CUtensorMap tma_a;    // A [M, K] e4m3, box {128, kBlockM / cluster_n}, 128-byte swizzle (swap-AB: B [N, K])
  CUtensorMap tma_b;    // B [N, K] e4m3, box {128, kBlockN / cluster_m}, 128-byte swizzle (swap-AB: A [M, K])
  CUtensorMap tma_d;    // D [M, N], box {16, rows per consumer}, 32-byte swizzle (unused with swap-AB)
  CUtensorMap tma_sfa;  // MN-major SFA [K/128, sfa_ld] fp32, box {Traits::kSfaFloats, 1} (unused for row-major)
  float const* sfa;     // row-major SFA (copied into shared memory by the producer)
  float const* sfb;
  // The MMA's problem: m rows (A side) x n columns (B side). Swap-AB: m = N (weights), n = M (tokens),
  // and tma_a / tma_b map B / A; num_*_blocks and the cluster tiles count tiles of that problem.
  int m, n, k;
  int k_blocks, n_scale_blocks;
  int sfa_ld;
  int sfa_mn_major;
  int cluster_m, cluster_n, cluster_size;
  int dependent_launch;  // 1: launched as a programmatic dependent launch (RunOptions::dependent_launch)
  int raster, group;
  int cluster_tiles_m, cluster_tiles_n, cluster_tiles;
  int num_m_blocks, num_n_blocks;
  int work_units;     // what the persistent grid walks: cluster_tiles, split-K's rounds * grid size, or
                      // stream-K's grid size * units per cluster
  SplitKArgs split;   // splits == 1: data-parallel (one unit per cluster tile, all of K)
  StreamKArgs stream;  // enabled (splits == 1 then): the stream-K schedule of fp8_gemm_streamk.cuh
  void* d;           // D [M, N] row-major: swap-AB stores it from registers (tma_d is unused there)
};

template <int kBlockM_, int kBlockN_, int kStages_, bool kOverlap_, class OutT_, bool kSwapAB_ = false>
struct Traits {
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  // Two partial accumulators: block kb+1's wgmmas run while block kb is promoted.
  static constexpr bool kOverlap = kOverlap_;
  using OutT = OutT_;
  // Swap-AB (decode): the MMA computes D^T = B A^T, weights on its M side, tokens on its N side
  // (fp8_gemm_swapab.cuh).
  static constexpr bool kSwapAB = kSwapAB_;
  static constexpr int kConsumers = kBlockM == 64 ? 1 : 2;
  static constexpr int kRowsPerConsumer = kBlockM / kConsumers;  // 64 or 128
  static constexpr int kMmasPerConsumer = kRowsPerConsumer / 64;  // m64 wgmma per k step
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kAccum = kBlockN / 2;  // fp32 accumulators per thread per m64 wgmma
  // Scale blocks one tile can touch: with BLOCK_N not dividing 128, a tile may straddle a boundary.
  static constexpr bool kAlignedScales = (kScaleBlock % kBlockN == 0) || (kBlockN % kScaleBlock == 0);
  // Swap-AB: one weight scale per tile and K block (64-row slabs never straddle a 128-row weight block).
  static constexpr int kScaleSlots = kSwapAB          ? 1
                                     : kAlignedScales ? (kBlockN + kScaleBlock - 1) / kScaleBlock
                                                      : (kBlockN + 2 * kScaleBlock - 2) / kScaleBlock;
  // Activation scales per stage: one per tile row, with swap-AB one per tile column (token).
  static constexpr int kSfaFloats = kSwapAB ? kBlockN : kBlockM;
  // Activation scales a consumer thread holds per block: rows r and r + 8 of each 64-row slab, with swap-AB
  // the two columns it holds in each 8-column group.
  static constexpr int kSaRows = kSwapAB ? kBlockN / 8 : kMmasPerConsumer;
  // setmaxnreg moves registers between warpgroups inside what the launch allocated (168 per thread for 384
  // threads): a consumer's increase waits forever for registers the producer did not give back.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = kConsumers == 2 ? 232 : 240;
  static constexpr int kLaunchRegs = (65536 / kThreads) / 8 * 8 > 255 ? 248 : (65536 / kThreads) / 8 * 8;

  static constexpr int kABytes = kBlockM * kBlockK;  // one stage of A (fp8)
  static constexpr int kBBytes = kBlockN * kBlockK;
  // Padded to 128 bytes: the MN-major scales land by TMA, whose shared-memory address needs that alignment
  // (a no-op without swap-AB: kBlockM * 4 is 256 bytes or more).
  static constexpr int kSfaBytes = (kSfaFloats * 4 + 127) / 128 * 128;
  static constexpr int kSfaStride = kSfaBytes / 4;  // floats between two stages' activation scales
  static constexpr int kSfbFloats = 4;  // per stage: the tile's (at most 3) weight scales, padded to 16 bytes
  // Swap-AB stores D from registers: no epilogue buffer.
  static constexpr int kDBytes = kSwapAB ? 0 : kBlockM * kBlockN * int(sizeof(OutT));
  // Shared memory layout (offsets from a 1024-byte aligned base).
  static constexpr int kOffA = 0;
  static constexpr int kOffB = kOffA + kStages * kABytes;
  static constexpr int kOffSfa = kOffB + kStages * kBBytes;
  static constexpr int kOffSfb = kOffSfa + kStages * kSfaBytes;
  static constexpr int kOffD = (kOffSfb + kStages * kSfbFloats * 4 + 1023) / 1024 * 1024;
  // The full barrier of a stage: the TMA thread's arrive (with the byte count) plus one cp.async arrival
  // per lane of the producer warp (the scales).
  static constexpr int kFullArrivals = 1 + 32;
  static constexpr int kOffBarriers = kOffD + kDBytes;
  static constexpr int kSmemBytes = kOffBarriers + 2 * kStages * 8;
  static constexpr int kSmemLaunchBytes = kSmemBytes + 1024;  // room to align the base

  static_assert(kBlockM == 64 || kBlockM == 128 || kBlockM == 256, "BLOCK_M must be 64, 128 or 256");
  static_assert(kBlockN % 16 == 0 && kBlockN >= 16 && kBlockN <= 256, "BLOCK_N must be a multiple of 16 in [16, 256]");
  static_assert(kStages >= 2, "at least two pipeline stages");
  static_assert(!kSwapAB || kBlockM == 64 || kBlockM == 128,
                "swap-AB needs 64-row slabs inside one 128-row weight-scale block: BLOCK_M 64 or 128");
  static_assert((kProducerRegs + kConsumers * kConsumerRegs) * 128 <= kLaunchRegs * kThreads,
                "register reconfiguration asks for more registers than the launch holds");
  static_assert(kScaleSlots <= kSfbFloats, "a tile touches at most 3 weight-scale blocks");
  static_assert(kSmemLaunchBytes <= 232448, "tile, stages and epilogue exceed the 227 KB of shared memory per block");
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "128-byte swizzled tiles need 1024-byte alignment");
};

// ----------------------------------------------------------------------------------- device helpers

// Matrix descriptor of a K-major, 128-byte swizzled operand tile (rows of 128 fp8), as wgmma reads it.
__device__ __forceinline__ uint64_t make_smem_desc(void const* smem) {
  cute::GmmaDescriptor desc;
  uint32_t const address = cute::cast_smem_ptr_to_uint(smem);
  desc.bitfield.start_address_ = static_cast<uint16_t>((address & 0x3FFFF) >> 4);
  desc.bitfield.leading_byte_offset_ = 1;          // unused with swizzled K-major layouts
  desc.bitfield.stride_byte_offset_ = 1024 >> 4;   // 8 rows x 128 bytes between core-matrix groups
  desc.bitfield.base_offset_ = 0;
  desc.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
  return desc.desc_;
}

template <class Mma, int kN, size_t... I>
__device__ __forceinline__ void wgmma_impl(uint64_t desc_a, uint64_t desc_b, float (&d)[kN], bool accumulate,
                                           std::index_sequence<I...>) {
  Mma::fma(desc_a, desc_b, d[I]..., accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

template <class Mma, int kN>
__device__ __forceinline__ void wgmma(uint64_t desc_a, uint64_t desc_b, float (&d)[kN], bool accumulate) {
  wgmma_impl<Mma>(desc_a, desc_b, d, accumulate, std::make_index_sequence<kN>{});
}

template <int kN>
__device__ __forceinline__ void fence_accumulators(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) cute::warpgroup_fence_operand(d[i]);
}

// The cluster's index in the grid, the grid's cluster count (clusters of `cluster_size` = 1 or 2 CTAs
// along x) and the CTA's rank in its cluster, read from special registers wherever they are used (volatile:
// never computed once at the top of the kernel and kept live through both warp groups' code, which made
// ptxas spill them beside the 40-register producer's loop and beside 208 accumulators).
__device__ __forceinline__ int cluster_index(int cluster_size) {
  uint32_t v;
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(v));
  return int(cluster_size == 2 ? v >> 1 : v);
}

__device__ __forceinline__ int cluster_count(int cluster_size) {
  uint32_t v;
  asm volatile("mov.u32 %0, %%nctaid.x;" : "=r"(v));
  return int(cluster_size == 2 ? v >> 1 : v);
}

// Only for clusters of two (0 otherwise, which the callers select themselves).
__device__ __forceinline__ int rank_in_cluster() {
  uint32_t v;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(v));
  return int(v);
}

__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" : : "r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" : : "r"(id), "r"(threads) : "memory");
}


template <class OutT>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Cluster tile t -> (cluster tile row, cluster tile column) in grouped order.
__device__ __forceinline__ void cluster_tile_coords(KernelArgs const& args, int t, int& ctm, int& ctn) {
  if (args.raster == 0) {  // groups of `group` rows of cluster tiles; M fastest inside a group
    int const per_group = args.group * args.cluster_tiles_n;
    int const g = t / per_group;
    int const first = g * args.group;
    int const rows = min(args.cluster_tiles_m - first, args.group);
    int const local = t - g * per_group;
    ctm = first + local % rows;
    ctn = local / rows;
  } else {  // groups of `group` columns; N fastest inside a group
    int const per_group = args.group * args.cluster_tiles_m;
    int const g = t / per_group;
    int const first = g * args.group;
    int const cols = min(args.cluster_tiles_n - first, args.group);
    int const local = t - g * per_group;
    ctn = first + local % cols;
    ctm = local / cols;
  }
}

}  // namespace gemm_sm90
