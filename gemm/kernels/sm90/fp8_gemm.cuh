// The project's own block-scaled FP8 GEMM for Hopper (sm_90a), behind a small C ABI.
//
//   D[M, N] = sum_kb (A[:, kb] @ B[:, kb]^T) * SFA[m, kb] * SFB[n / 128, kb]     (kb: 128-wide K blocks)
//
// A   [M, K]  e4m3, row-major with row stride lda (K contiguous)
// B   [N, K]  e4m3, row-major
// SFA fp32, one scale per row per 128 K: row-major [M, K/128] with row stride sfa_ld (the DeepSeek layout),
//     or MN-major: element (m, kb) at kb * sfa_ld + m, with sfa_ld = roundup(M, 4) (TMA-aligned)
// SFB fp32 [ceil(N/128), K/128] row-major, one scale per 128 x 128 weight block
// D   [M, N]  bf16 or fp16, row-major
//
// Design (one CTA per SM, persistent):
// * Warp group 0 is the producer: one thread issues TMA loads of the A and B tiles (128-byte
//   swizzled, BLOCK_K = 128) and, for MN-major activation scales, the tile's scales, into a ring of
//   kStages shared-memory stages guarded by "full"/"empty" mbarriers. With a cluster of two CTAs
//   that share an operand (2x1: the B tile, 1x2: the A tile), each CTA loads half of the shared
//   tile and multicasts it to both.
// * Warp groups 1..kConsumers are consumers. Each owns kBlockM / kConsumers rows of the tile and
//   issues wgmma.mma_async m64nNk32 e4m3 x e4m3 -> fp32 for one K block into a partial
//   accumulator, then promotes it on the CUDA cores: total += partial * (sa[m] * sb[n / 128]).
//   Promoting every 128-deep block in fp32 is what keeps FP8 accuracy at large K; the two consumer
//   warp groups drift apart, so one's promotion overlaps the other's tensor-core work.
// * BLOCK_N is any multiple of 16 up to 256: a tile that straddles two or three 128-column weight
//   scale blocks picks each 8-column group's own scale.
// * Epilogue: bf16/fp16 into 32-byte swizzled shared memory (conflict-free for the wgmma
//   accumulator layout), then TMA stores of 16-column boxes; out-of-bounds rows and columns of ragged
//   tiles are clipped by TMA, and loads beyond M, N or K are zero-filled by TMA.
// * Tiles are walked in grouped order (groups of `group` cluster tiles along M or along N) so the
//   tiles in flight share operands in L2.
//
// M, N and K are run-time arguments: one build serves every shape. Compile-time: the tile shape,
// the stage count and the output type. Cluster shape, tile order and the activation-scale layout
// are run-time options. Nothing here allocates memory; launches go to the caller's stream and never
// synchronize, so they can be captured in CUDA graphs.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "cute/arch/cluster_sm90.hpp"
#include "cute/arch/copy_sm80.hpp"
#include "cute/arch/copy_sm90_desc.hpp"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cute/arch/mma_sm90_desc.hpp"
#include "cute/arch/mma_sm90_gmma.hpp"
#include "cute/arch/mma_sm90_gmma_ext.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"

#define GEMM_SM90_EXPORT extern "C" __attribute__((visibility("default")))

// Measurement aid (0 in every real build): 1 leaves the promotion out, 2 the operand and scale loads after
// the first ring of stages, 4 the scale copies only; the result is wrong, only the time means something.
#ifndef GEMM_SM90_ABLATE
#define GEMM_SM90_ABLATE 0
#endif

namespace gemm_sm90 {

// Return codes of the C ABI; launcher.py mirrors them.
enum StatusCode : int {
  kOk = 0,
  kUnsupported = 1,  // this build cannot run the problem (alignment, sizes)
  kBadArgument = 2,  // a pointer, stride or option is not what the kernel needs
  kCudaError = 3,    // a CUDA call or the launch failed
};

// Run-time knobs of one launch; launcher.py mirrors the layout with ctypes.
struct RunOptions {
  int32_t cluster_m;  // 1 or 2: two CTAs along M share (multicast) the B tile
  int32_t cluster_n;  // 1 or 2: two CTAs along N share the A tile
  int32_t raster;     // 0: groups of cluster tiles along M (M fastest), 1: along N
  int32_t group;      // cluster tiles per group (>= 1)
  int32_t max_ctas;   // upper bound on the persistent grid (0: as many as are co-resident)
};

inline std::string& last_error() {
  thread_local std::string message;
  return message;
}

inline int fail(int code, std::string const& message) {
  last_error() = message;
  return code;
}

constexpr int kBlockK = 128;     // K per stage = the scale block along K
constexpr int kScaleBlock = 128;  // rows of B (columns of D) per weight scale
constexpr int kEpilogueCols = 16;  // columns of one TMA store box (32 bytes of bf16: the 32-byte swizzle span)

// Everything the device code needs, passed by value as one __grid_constant__ parameter.
struct KernelArgs {
  CUtensorMap tma_a;    // A [M, K] e4m3, box {128, kBlockM / cluster_n}, 128-byte swizzle
  CUtensorMap tma_b;    // B [N, K] e4m3, box {128, kBlockN / cluster_m}, 128-byte swizzle
  CUtensorMap tma_d;    // D [M, N], box {16, rows per consumer}, 32-byte swizzle
  CUtensorMap tma_sfa;  // MN-major SFA [K/128, sfa_ld] fp32, box {kBlockM, 1} (unused for row-major)
  float const* sfa;     // row-major SFA (read directly by the consumers)
  float const* sfb;
  int m, n, k;
  int k_blocks, n_scale_blocks;
  int sfa_ld;
  int sfa_mn_major;
  int cluster_m, cluster_n, cluster_size;
  int raster, group;
  int cluster_tiles_m, cluster_tiles_n, cluster_tiles;
  int num_m_blocks, num_n_blocks;
};

template <int kBlockM_, int kBlockN_, int kStages_, bool kOverlap_, class OutT_>
struct Traits {
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  // Two partial accumulators: block kb+1's wgmmas run while block kb is promoted.
  static constexpr bool kOverlap = kOverlap_;
  using OutT = OutT_;
  static constexpr int kConsumers = kBlockM == 64 ? 1 : 2;
  static constexpr int kRowsPerConsumer = kBlockM / kConsumers;  // 64 or 128
  static constexpr int kMmasPerConsumer = kRowsPerConsumer / 64;  // m64 wgmma per k step
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kAccum = kBlockN / 2;  // fp32 accumulators per thread per m64 wgmma
  // Scale blocks one tile can touch: with BLOCK_N not dividing 128, a tile may straddle a boundary.
  static constexpr bool kAlignedScales = (kScaleBlock % kBlockN == 0) || (kBlockN % kScaleBlock == 0);
  static constexpr int kScaleSlots = kAlignedScales ? (kBlockN + kScaleBlock - 1) / kScaleBlock
                                                    : (kBlockN + 2 * kScaleBlock - 2) / kScaleBlock;
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = kConsumers == 2 ? 232 : 240;

  static constexpr int kABytes = kBlockM * kBlockK;  // one stage of A (fp8)
  static constexpr int kBBytes = kBlockN * kBlockK;
  static constexpr int kSfaBytes = kBlockM * 4;
  static constexpr int kSfbFloats = 4;  // per stage: the tile's (at most 3) weight scales, padded to 16 bytes
  static constexpr int kDBytes = kBlockM * kBlockN * int(sizeof(OutT));
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

__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" : : "r"(id), "r"(threads) : "memory");
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

// ----------------------------------------------------------------------------------- the kernel

template <class T, class Mma>
__global__ void __launch_bounds__(T::kThreads, 1) fp8_gemm_kernel(__grid_constant__ KernelArgs const args) {
#if defined(__CUDA_ARCH__) && defined(CUTE_ARCH_MMA_SM90A_ENABLED)
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kMmas = T::kMmasPerConsumer;
  constexpr int kAccum = T::kAccum;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) / 1024 * 1024);
  uint8_t* smem_a = smem + T::kOffA;
  uint8_t* smem_b = smem + T::kOffB;
  float* smem_sfa = reinterpret_cast<float*>(smem + T::kOffSfa);
  float* smem_sfb = reinterpret_cast<float*>(smem + T::kOffSfb);
  uint8_t* smem_d = smem + T::kOffD;
  Barrier* full = reinterpret_cast<Barrier*>(smem + T::kOffBarriers);
  Barrier* empty = full + T::kStages;

  int const warp_group = threadIdx.x / 128;
  int const cluster_rank = args.cluster_size > 1 ? int(cute::block_rank_in_cluster()) : 0;
  int const cluster_id = blockIdx.x / args.cluster_size;
  int const num_clusters = gridDim.x / args.cluster_size;

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < T::kStages; ++s) {
      full[s].init(T::kFullArrivals);
      // One arrival per consumer warp of every CTA whose producer writes into this stage.
      empty[s].init(4 * T::kConsumers * args.cluster_size);
    }
    cutlass::arch::fence_barrier_init();
  }
  if (args.cluster_size > 1) {
    cute::cluster_sync();
  } else {
    __syncthreads();
  }

  // The CTA's own tile inside a cluster tile.
  auto tile_of = [&](int t, int& m_block, int& n_block) {
    int ctm, ctn;
    cluster_tile_coords(args, t, ctm, ctn);
    m_block = ctm * args.cluster_m + (args.cluster_m > 1 ? cluster_rank : 0);
    n_block = ctn * args.cluster_n + (args.cluster_n > 1 ? cluster_rank : 0);
  };

  if (warp_group == 0) {
    // ------------------------------------------------------------------ producer
    cutlass::arch::warpgroup_reg_dealloc<T::kProducerRegs>();
    if (threadIdx.x < 32) {
      // Lane 0 issues the TMA loads of the operands (and of MN-major activation scales); every lane
      // copies some of the stage's scales with cp.async, whose completion also lands on the full barrier,
      // so the consumers read every scale from shared memory, never at global-memory latency.
      int const lane = threadIdx.x;
      if (lane == 0) {
        cute::prefetch_tma_descriptor(reinterpret_cast<cute::TmaDescriptor const*>(&args.tma_a));
        cute::prefetch_tma_descriptor(reinterpret_cast<cute::TmaDescriptor const*>(&args.tma_b));
        if (args.sfa_mn_major) cute::prefetch_tma_descriptor(reinterpret_cast<cute::TmaDescriptor const*>(&args.tma_sfa));
      }
      constexpr uint64_t kHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
      uint32_t const stage_tx = T::kABytes + T::kBBytes + (args.sfa_mn_major ? T::kSfaBytes : 0);
      int const a_rows = T::kBlockM / args.cluster_n;  // rows of A this CTA loads
      int const b_rows = T::kBlockN / args.cluster_m;
      int const a_offset = args.cluster_n > 1 ? cluster_rank * a_rows : 0;
      int const b_offset = args.cluster_m > 1 ? cluster_rank * b_rows : 0;
      uint16_t const pair_mask = 0x3;
      int stage = 0;
      uint32_t phase = 0;
      [[maybe_unused]] int issued = 0;
      for (int t = cluster_id; t < args.cluster_tiles; t += num_clusters) {
        int m_block, n_block;
        tile_of(t, m_block, n_block);
        int const m0 = m_block * T::kBlockM;
        int const n0 = n_block * T::kBlockN;
        int const first_scale_block = n0 / kScaleBlock;
        float const* sfb_src = args.sfb + size_t(min(first_scale_block + lane, args.n_scale_blocks - 1)) * args.k_blocks;
        for (int kb = 0; kb < args.k_blocks; ++kb) {
          empty[stage].wait(phase ^ 1);
          uint64_t* bar = reinterpret_cast<uint64_t*>(&full[stage]);
#if GEMM_SM90_ABLATE & 2
          if (++issued > T::kStages) {
            if (lane == 0) full[stage].arrive();
            cutlass::arch::cpasync_barrier_arrive_noinc(bar);
            if (++stage == T::kStages) {
              stage = 0;
              phase ^= 1;
            }
            continue;
          }
#endif
          if (lane == 0) {
            full[stage].arrive_and_expect_tx(stage_tx);
            uint8_t* a_dst = smem_a + stage * T::kABytes + a_offset * kBlockK;
            uint8_t* b_dst = smem_b + stage * T::kBBytes + b_offset * kBlockK;
            if (args.cluster_n > 1) {
              cute::SM90_TMA_LOAD_MULTICAST_2D::copy(&args.tma_a, bar, pair_mask, kHint, a_dst, kb * kBlockK,
                                                     m0 + a_offset);
            } else {
              cute::SM90_TMA_LOAD_2D::copy(&args.tma_a, bar, kHint, a_dst, kb * kBlockK, m0);
            }
            if (args.cluster_m > 1) {
              cute::SM90_TMA_LOAD_MULTICAST_2D::copy(&args.tma_b, bar, pair_mask, kHint, b_dst, kb * kBlockK,
                                                     n0 + b_offset);
            } else {
              cute::SM90_TMA_LOAD_2D::copy(&args.tma_b, bar, kHint, b_dst, kb * kBlockK, n0);
            }
            if (args.sfa_mn_major) {
              cute::SM90_TMA_LOAD_2D::copy(&args.tma_sfa, bar, kHint, smem_sfa + stage * T::kBlockM, m0, kb);
            }
          }
#if !(GEMM_SM90_ABLATE & 4)
          if (lane < T::kScaleSlots) {
            cute::SM80_CP_ASYNC_CACHEALWAYS<float>::copy(sfb_src[kb], smem_sfb[stage * T::kSfbFloats + lane]);
          }
          if (!args.sfa_mn_major) {
#pragma unroll
            for (int r = lane; r < T::kBlockM; r += 32) {
              float const* src = args.sfa + size_t(min(m0 + r, args.m - 1)) * args.sfa_ld + kb;
              cute::SM80_CP_ASYNC_CACHEALWAYS<float>::copy(*src, smem_sfa[stage * T::kBlockM + r]);
            }
          }
#endif
          cutlass::arch::cpasync_barrier_arrive_noinc(bar);
          if (++stage == T::kStages) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
  } else {
    // ------------------------------------------------------------------ consumers
    cutlass::arch::warpgroup_reg_alloc<T::kConsumerRegs>();
    int const consumer = warp_group - 1;
    int const tid = threadIdx.x % 128;
    int const warp = tid / 32;
    int const lane = tid % 32;
    int const row_base = consumer * T::kRowsPerConsumer;  // first tile row of this consumer
    // Rows of this thread inside its 64-row wgmma slab: r and r + 8.
    int const thread_row = warp * 16 + lane / 4;
    int const thread_col = 2 * (lane % 4);
    int const barrier_id = 1 + consumer;

    float total[kMmas][kAccum];
    float partial0[kMmas][kAccum];
    float partial1[T::kOverlap ? kMmas : 1][T::kOverlap ? kAccum : 1];
    // Two cursors into the ring: where the next block is issued from, and where the next one finishes.
    int issue_stage = 0, finish_stage = 0;
    uint32_t issue_phase = 0;

    // Wait for the stage of the next block and issue its wgmmas into `partial` (one commit group).
    auto issue = [&](float (&partial)[kMmas][kAccum]) {
      full[issue_stage].wait(issue_phase);
      uint8_t const* a_tile = smem_a + issue_stage * T::kABytes + row_base * kBlockK;
      uint8_t const* b_tile = smem_b + issue_stage * T::kBBytes;
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(partial[mi]);
      cute::warpgroup_arrive();
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) {
#pragma unroll
        for (int kk = 0; kk < kBlockK / 32; ++kk) {
          uint64_t const desc_a = make_smem_desc(a_tile + mi * 64 * kBlockK + kk * 32);
          uint64_t const desc_b = make_smem_desc(b_tile + kk * 32);
          wgmma<Mma>(desc_a, desc_b, partial[mi], kk > 0);
        }
      }
      cute::warpgroup_commit_batch();
      // No fence on `partial` here: touching accumulators of an in-flight wgmma makes ptxas serialize.
      if (++issue_stage == T::kStages) {
        issue_stage = 0;
        issue_phase ^= 1;
      }
    };

    // The oldest issued block has completed (the caller waited): read its scales, release its stage to
    // the producers of every CTA that wrote into it, and promote it in fp32.
    auto finish = [&](float (&partial)[kMmas][kAccum], int boundary) {
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(partial[mi]);
      float const* stage_sfa = smem_sfa + finish_stage * T::kBlockM + row_base;
      float sa[kMmas][2];
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) {
        sa[mi][0] = stage_sfa[mi * 64 + thread_row];
        sa[mi][1] = stage_sfa[mi * 64 + thread_row + 8];
      }
      float sb[T::kScaleSlots];
#pragma unroll
      for (int s = 0; s < T::kScaleSlots; ++s) sb[s] = smem_sfb[finish_stage * T::kSfbFloats + s];
      __syncwarp();
      if (lane == 0) {
        if (args.cluster_size > 1) {
          for (int c = 0; c < args.cluster_size; ++c) empty[finish_stage].arrive(c, 1u);
        } else {
          empty[finish_stage].arrive();
        }
      }
      if (++finish_stage == T::kStages) finish_stage = 0;
#if GEMM_SM90_ABLATE & 1
      total[0][0] += partial[0][0] * sa[0][0] * sb[0];
      return;
#endif
      // Each 8-column group takes the scale of its own 128-column weight block.
#pragma unroll
      for (int j = 0; j < T::kBlockN / 8; ++j) {
        float s;
        if constexpr (T::kAlignedScales) {
          s = sb[(8 * j) / kScaleBlock];
        } else {
          // Register arrays take compile-time indices only (else they go to local memory).
          s = (8 * j < boundary) ? sb[0] : ((8 * j < boundary + kScaleBlock) ? sb[1] : sb[T::kScaleSlots - 1]);
        }
#pragma unroll
        for (int mi = 0; mi < kMmas; ++mi) {
          float const s0 = sa[mi][0] * s;
          float const s1 = sa[mi][1] * s;
          total[mi][4 * j + 0] = fmaf(partial[mi][4 * j + 0], s0, total[mi][4 * j + 0]);
          total[mi][4 * j + 1] = fmaf(partial[mi][4 * j + 1], s0, total[mi][4 * j + 1]);
          total[mi][4 * j + 2] = fmaf(partial[mi][4 * j + 2], s1, total[mi][4 * j + 2]);
          total[mi][4 * j + 3] = fmaf(partial[mi][4 * j + 3], s1, total[mi][4 * j + 3]);
        }
      }
    };

    for (int t = cluster_id; t < args.cluster_tiles; t += num_clusters) {
      int m_block, n_block;
      tile_of(t, m_block, n_block);
      int const m0 = m_block * T::kBlockM;
      int const n0 = n_block * T::kBlockN;
      int const boundary = kScaleBlock - (n0 % kScaleBlock);  // tile columns before the next scale block
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) {
#pragma unroll
        for (int i = 0; i < kAccum; ++i) total[mi][i] = 0.0f;
      }
      int const blocks = args.k_blocks;
      if constexpr (T::kOverlap) {
        // Software pipeline of depth two: block kb+1's wgmmas are in flight while block kb is promoted.
        // Every exit follows a wait_group 0, and the loop's back edge always has partial0 in flight,
        // so ptxas can prove no accumulator of an in-flight wgmma is touched (else it serializes).
        issue(partial0);
        for (int kb = 0;; kb += 2) {
          if (kb + 1 < blocks) {
            issue(partial1);
            cute::warpgroup_wait<1>();
            finish(partial0, boundary);
          } else {
            cute::warpgroup_wait<0>();
            finish(partial0, boundary);
            break;
          }
          if (kb + 2 < blocks) {
            issue(partial0);
            cute::warpgroup_wait<1>();
            finish(partial1, boundary);
          } else {
            cute::warpgroup_wait<0>();
            finish(partial1, boundary);
            break;
          }
        }
      } else {
        for (int kb = 0; kb < blocks; ++kb) {
          issue(partial0);
          cute::warpgroup_wait<0>();
          finish(partial0, boundary);
        }
      }

      // ---------------------------------------------------------------- epilogue
      // The previous tile's TMA stores must have read shared memory before it is overwritten.
      if (tid == 0) cute::tma_store_wait<0>();
      named_barrier_sync(barrier_id, 128);
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) {
#pragma unroll
        for (int j = 0; j < T::kBlockN / 8; ++j) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            int const row = row_base + mi * 64 + thread_row + 8 * h;  // tile row
            int const chunk = j / 2;                                   // 16-column store box
            int const half = (j % 2) ^ ((row >> 2) & 1);               // 32-byte swizzle: bit 4 ^= bit 7
            uint8_t* dst = smem_d + chunk * (T::kBlockM * 32) + row * 32 + half * 16 + thread_col * 2;
            *reinterpret_cast<uint32_t*>(dst) =
                pack2<typename T::OutT>(total[mi][4 * j + 2 * h], total[mi][4 * j + 2 * h + 1]);
          }
        }
      }
      cutlass::arch::fence_view_async_shared();  // generic-proxy writes -> visible to the TMA engine
      named_barrier_sync(barrier_id, 128);
      if (tid == 0) {
#pragma unroll
        for (int chunk = 0; chunk < T::kBlockN / kEpilogueCols; ++chunk) {
          cute::SM90_TMA_STORE_2D::copy(&args.tma_d, smem_d + chunk * (T::kBlockM * 32) + row_base * 32,
                                        n0 + chunk * kEpilogueCols, m0 + row_base);
        }
        cute::tma_store_arrive();
      }
    }
    if (tid == 0) cute::tma_store_wait<0>();
  }

  // No CTA may leave while a peer can still signal its barriers or write into its shared memory.
  if (args.cluster_size > 1) {
    cute::cluster_arrive_relaxed();
    cute::cluster_wait();
  }
#endif
}

// ----------------------------------------------------------------------------------- host side

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, cuuint64_t const*,
                                   cuuint64_t const*, cuuint32_t const*, cuuint32_t const*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled from the driver, found through the runtime (no -lcuda needed).
inline EncodeTiledFn encode_tiled_fn() {
  static EncodeTiledFn fn = []() -> EncodeTiledFn {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return reinterpret_cast<EncodeTiledFn>(ptr);
  }();
  return fn;
}

// A 2D tensor map: `inner` x `outer` elements, `row_bytes` between rows, box `box_inner` x `box_outer`.
inline int encode_2d(CUtensorMap* map, CUtensorMapDataType type, void const* base, uint64_t inner, uint64_t outer,
                     uint64_t row_bytes, uint32_t box_inner, uint32_t box_outer, CUtensorMapSwizzle swizzle,
                     char const* what) {
  EncodeTiledFn encode = encode_tiled_fn();
  if (encode == nullptr) return fail(kCudaError, "cuTensorMapEncodeTiled is not available from the CUDA driver");
  cuuint64_t dims[2] = {inner, outer};
  cuuint64_t strides[1] = {row_bytes};
  cuuint32_t box[2] = {box_inner, box_outer};
  cuuint32_t element_strides[2] = {1, 1};
  CUresult result = encode(map, type, 2, const_cast<void*>(base), dims, strides, box, element_strides,
                           CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                           CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    return fail(kBadArgument, std::string("cuTensorMapEncodeTiled failed for ") + what + " (CUresult " +
                                  std::to_string(int(result)) + ")");
  }
  return kOk;
}

inline bool aligned16(void const* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

constexpr int kMaxDevices = 64;

// One instantiation: Traits + its wgmma atom, with the C ABI's operations as static members.
template <int kBlockM, int kBlockN, int kStages, bool kOverlap, class OutT, class Mma>
struct Gemm {
  using T = Traits<kBlockM, kBlockN, kStages, kOverlap, OutT>;
  static constexpr CUtensorMapDataType kOutType =
      std::is_same<OutT, __half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;

  struct DeviceInfo {
    bool prepared = false;
    int sms = 0;
    int max_pairs = 0;  // co-resident clusters of two CTAs
  };
  static DeviceInfo& info(int device) {
    static DeviceInfo table[kMaxDevices];
    return table[device];
  }

  static int current_device(int* device) {
    cudaError_t err = cudaGetDevice(device);
    if (err != cudaSuccess || *device < 0 || *device >= kMaxDevices) {
      cudaGetLastError();
      return fail(kCudaError, std::string("cudaGetDevice failed: ") + cudaGetErrorString(err));
    }
    return kOk;
  }

  static int prepare() {
    int device = 0;
    if (int status = current_device(&device)) return status;
    DeviceInfo& d = info(device);
    if (d.prepared) return kOk;
    auto kernel = fp8_gemm_kernel<T, Mma>;
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemLaunchBytes);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess) {
      cudaLaunchConfig_t config = {};
      config.gridDim = dim3(2 * d.sms);
      config.blockDim = dim3(T::kThreads);
      config.dynamicSmemBytes = T::kSmemLaunchBytes;
      cudaLaunchAttribute attribute;
      attribute.id = cudaLaunchAttributeClusterDimension;
      attribute.val.clusterDim.x = 2;
      attribute.val.clusterDim.y = 1;
      attribute.val.clusterDim.z = 1;
      config.attrs = &attribute;
      config.numAttrs = 1;
      err = cudaOccupancyMaxActiveClusters(&d.max_pairs, kernel, &config);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      return fail(kCudaError, std::string("preparing the kernel failed: ") + cudaGetErrorString(err));
    }
    d.prepared = true;
    return kOk;
  }

  static int run(void const* a, void const* b, void* d, float const* sfa, float const* sfb, int m, int n, int k,
                 int64_t lda, int sfa_mn_major, int64_t sfa_ld, RunOptions const* options, cudaStream_t stream) {
    if (options == nullptr) return fail(kBadArgument, "options is null");
    if (m <= 0 || n <= 0 || k <= 0) return fail(kBadArgument, "M, N and K must be positive");
    RunOptions const& o = *options;
    bool const pair_m = o.cluster_m == 2 && o.cluster_n == 1;
    bool const pair_n = o.cluster_m == 1 && o.cluster_n == 2;
    if (!(o.cluster_m == 1 && o.cluster_n == 1) && !pair_m && !pair_n) {
      return fail(kBadArgument, "cluster must be 1x1, 2x1 or 1x2");
    }
    if (o.raster != 0 && o.raster != 1) return fail(kBadArgument, "raster must be 0 (along M) or 1 (along N)");
    if (o.group < 1) return fail(kBadArgument, "group must be >= 1");
    if (k % 16 != 0) return fail(kUnsupported, "K must be a multiple of 16 (TMA needs 16-byte rows)");
    if (lda < k || lda % 16 != 0) return fail(kUnsupported, "A's row stride must be >= K and a multiple of 16");
    if (n % (16 / int(sizeof(OutT))) != 0) return fail(kUnsupported, "N must be a multiple of 8 (16-byte output rows)");
    if (!aligned16(a) || !aligned16(b) || !aligned16(d)) return fail(kUnsupported, "A, B and D must be 16-byte aligned");
    int const k_blocks = (k + kBlockK - 1) / kBlockK;
    if (sfa_mn_major) {
      if (sfa_ld < m || sfa_ld % 4 != 0 || !aligned16(sfa)) {
        return fail(kUnsupported, "MN-major activation scales need a 16-byte aligned base and a leading "
                                  "dimension >= M that is a multiple of 4");
      }
    } else if (sfa_ld < k_blocks) {
      return fail(kBadArgument, "row-major activation scales need a row stride >= ceil(K / 128)");
    }
    int device = 0;
    if (int status = current_device(&device)) return status;
    DeviceInfo const& dev = info(device);
    if (!dev.prepared) return fail(kBadArgument, "prepare() was not called on this device");

    KernelArgs args;
    args.m = m;
    args.n = n;
    args.k = k;
    args.k_blocks = k_blocks;
    args.n_scale_blocks = (n + kScaleBlock - 1) / kScaleBlock;
    args.sfa = sfa;
    args.sfb = sfb;
    args.sfa_ld = int(sfa_ld);
    args.sfa_mn_major = sfa_mn_major ? 1 : 0;
    args.cluster_m = o.cluster_m;
    args.cluster_n = o.cluster_n;
    args.cluster_size = o.cluster_m * o.cluster_n;
    args.raster = o.raster;
    args.group = o.group;
    args.num_m_blocks = (m + kBlockM - 1) / kBlockM;
    args.num_n_blocks = (n + kBlockN - 1) / kBlockN;
    args.cluster_tiles_m = (args.num_m_blocks + o.cluster_m - 1) / o.cluster_m;
    args.cluster_tiles_n = (args.num_n_blocks + o.cluster_n - 1) / o.cluster_n;
    args.cluster_tiles = args.cluster_tiles_m * args.cluster_tiles_n;

    int status = encode_2d(&args.tma_a, CU_TENSOR_MAP_DATA_TYPE_UINT8, a, k, m, lda, kBlockK,
                           kBlockM / o.cluster_n, CU_TENSOR_MAP_SWIZZLE_128B, "A");
    if (status == kOk)
      status = encode_2d(&args.tma_b, CU_TENSOR_MAP_DATA_TYPE_UINT8, b, k, n, k, kBlockK, kBlockN / o.cluster_m,
                         CU_TENSOR_MAP_SWIZZLE_128B, "B");
    if (status == kOk)
      status = encode_2d(&args.tma_d, kOutType, d, n, m, uint64_t(n) * sizeof(OutT), kEpilogueCols,
                         T::kRowsPerConsumer, CU_TENSOR_MAP_SWIZZLE_32B, "D");
    if (status == kOk && sfa_mn_major) {
      status = encode_2d(&args.tma_sfa, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, sfa, uint64_t(sfa_ld), k_blocks,
                         uint64_t(sfa_ld) * 4, kBlockM, 1, CU_TENSOR_MAP_SWIZZLE_NONE, "SFA");
    } else if (status == kOk) {
      args.tma_sfa = args.tma_a;  // unused
    }
    if (status != kOk) return status;

    int const cluster_size = args.cluster_size;
    int resident = cluster_size == 1 ? dev.sms : dev.max_pairs;
    if (resident <= 0) return fail(kUnsupported, "no cluster of this shape fits on the device");
    int clusters = min(resident, args.cluster_tiles);
    if (o.max_ctas > 0) clusters = max(1, min(clusters, o.max_ctas / cluster_size));

    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(clusters * cluster_size);
    config.blockDim = dim3(T::kThreads);
    config.dynamicSmemBytes = T::kSmemLaunchBytes;
    config.stream = stream;
    cudaLaunchAttribute attribute;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = cluster_size;
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = cluster_size > 1 ? 1 : 0;
    cudaError_t err = cudaLaunchKernelEx(&config, fp8_gemm_kernel<T, Mma>, args);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return fail(kCudaError, std::string("kernel launch failed: ") + cudaGetErrorString(err));
    }
    return kOk;
  }
};

}  // namespace gemm_sm90
