// Device side of the project's Hopper block-FP8 GEMM: the traits of one instantiation, the helpers and
// the persistent warp-specialized kernel. fp8_gemm.cuh (the host side and the C ABI) includes this file;
// it describes the design.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
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

constexpr int kBlockK = 128;     // K per stage = the scale block along K
constexpr int kScaleBlock = 128;  // rows of B (columns of D) per weight scale
constexpr int kTurnBarrier0 = 3;  // named barriers of the consumers' issue turns (1 and 2: the epilogues)
constexpr int kTurnBarrier1 = 4;
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
  // setmaxnreg moves registers between warpgroups inside what the launch allocated (168 per thread for 384
  // threads): a consumer's increase waits forever for registers the producer did not give back.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = kConsumers == 2 ? 232 : 240;
  static constexpr int kLaunchRegs = (65536 / kThreads) / 8 * 8 > 255 ? 248 : (65536 / kThreads) / 8 * 8;

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

// ----------------------------------------------------------------------------------- the kernel

template <class T, class Mma>
__global__ void __launch_bounds__(T::kThreads, 1) fp8_gemm_kernel(__grid_constant__ KernelArgs const args) {
#if defined(__CUDA_ARCH__) && defined(CUTE_ARCH_MMA_SM90A_ENABLED)
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kMmas = T::kMmasPerConsumer;
  constexpr int kAccum = T::kAccum;
  extern __shared__ uint8_t smem_raw[];
  // Aligned by pointer arithmetic on smem_raw (not through an integer), so the compiler keeps knowing these
  // are shared-memory addresses and emits LDS/STS rather than generic loads and stores.
  uint8_t* smem = smem_raw + ((1024u - (cute::cast_smem_ptr_to_uint(smem_raw) & 1023u)) & 1023u);
  uint8_t* smem_a = smem + T::kOffA;
  uint8_t* smem_b = smem + T::kOffB;
  float* smem_sfa = reinterpret_cast<float*>(smem + T::kOffSfa);
  float* smem_sfb = reinterpret_cast<float*>(smem + T::kOffSfb);
  uint8_t* smem_d = smem + T::kOffD;
  Barrier* full = reinterpret_cast<Barrier*>(smem + T::kOffBarriers);
  Barrier* empty = full + T::kStages;

  // Broadcast from lane 0 so the compiler knows the index is warp-uniform: the operand descriptors derived
  // from it then live in uniform registers, and a consumer issues its wgmmas back to back.
  int const warp_group = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
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

    // With two consumers the wgmma groups of a block are issued in strict turns: consumer 0's block i, then
    // consumer 1's block i, then consumer 0's block i+1. The tensor cores run them in issue order, so while
    // one consumer promotes its finished block the other's wgmmas keep the tensor cores busy; left to
    // themselves, both wake on the same full barrier, issue interleaved, finish together and promote
    // together with the tensor cores idle (measured: 6-8% slower at 4096x7168x7168 and 8192x7168x18432).
    bool turn_taken = false;
    auto turn_begin = [&]() {
      if constexpr (T::kConsumers == 2) {
        if (consumer == 1) {
          named_barrier_sync(kTurnBarrier0, 256);
        } else if (turn_taken) {
          named_barrier_sync(kTurnBarrier1, 256);
        }
        turn_taken = true;
      }
    };
    auto turn_end = [&]() {
      if constexpr (T::kConsumers == 2) named_barrier_arrive(consumer == 0 ? kTurnBarrier0 : kTurnBarrier1, 256);
    };

    // Wait for the stage of the next block and issue its wgmmas into `partial` (one commit group).
    auto issue = [&](float (&partial)[kMmas][kAccum]) {
      turn_begin();
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
      turn_end();
      // No fence on `partial` here: touching accumulators of an in-flight wgmma makes ptxas serialize.
      if (++issue_stage == T::kStages) {
        issue_stage = 0;
        issue_phase ^= 1;
      }
    };

    // The oldest issued block has completed (the caller waited): read its scales and release its stage to
    // the producers of every CTA that wrote into it.
    auto read_scales = [&](float (&sa)[kMmas][2], float (&sb)[T::kScaleSlots]) {
      float const* stage_sfa = smem_sfa + finish_stage * T::kBlockM + row_base;
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) {
        sa[mi][0] = stage_sfa[mi * 64 + thread_row];
        sa[mi][1] = stage_sfa[mi * 64 + thread_row + 8];
      }
#pragma unroll
      for (int s = 0; s < T::kScaleSlots; ++s) sb[s] = smem_sfb[finish_stage * T::kSfbFloats + s];
    };
    auto release_stage = [&]() {
      __syncwarp();
      if (lane == 0) {
        if (args.cluster_size > 1) {
          for (int c = 0; c < args.cluster_size; ++c) empty[finish_stage].arrive(c, 1u);
        } else {
          empty[finish_stage].arrive();
        }
      }
      if (++finish_stage == T::kStages) finish_stage = 0;
    };
    auto take_scales = [&](float (&sa)[kMmas][2], float (&sb)[T::kScaleSlots]) {
      read_scales(sa, sb);
      release_stage();
    };

    // Promote 8-column groups [j_begin, j_end) of a completed block in fp32; each group takes the scale of
    // its own 128-column weight block.
    auto promote = [&](float (&partial)[kMmas][kAccum], float const (&sa)[kMmas][2],
                       float const (&sb)[T::kScaleSlots], int boundary, int j_begin, int j_end) {
#if GEMM_SM90_ABLATE & 1
      if (j_begin == 0) total[0][0] += partial[0][0] * sa[0][0] * sb[0];
      return;
#endif
#pragma unroll
      for (int j = j_begin; j < j_end; ++j) {
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

    auto finish = [&](float (&partial)[kMmas][kAccum], int boundary) {
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(partial[mi]);
      float sa[kMmas][2];
      float sb[T::kScaleSlots];
      take_scales(sa, sb);
      promote(partial, sa, sb, boundary, 0, T::kBlockN / 8);
    };

    // With two partial accumulators: take the completed block's scales, then issue the next block's
    // wgmmas into `next` one k-step at a time, promoting a quarter of `done` after each, so the
    // promotion's FFMAs are interleaved with the tensor cores' work instead of following it.
    auto finish_while_issuing = [&](float (&done)[kMmas][kAccum], float (&next)[kMmas][kAccum], int boundary) {
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(done[mi]);
      float sa[kMmas][2];
      float sb[T::kScaleSlots];
      take_scales(sa, sb);
      turn_begin();
      full[issue_stage].wait(issue_phase);
      uint8_t const* a_tile = smem_a + issue_stage * T::kABytes + row_base * kBlockK;
      uint8_t const* b_tile = smem_b + issue_stage * T::kBBytes;
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(next[mi]);
      cute::warpgroup_arrive();
      constexpr int kGroups = T::kBlockN / 8;
#pragma unroll
      for (int kk = 0; kk < kBlockK / 32; ++kk) {
#pragma unroll
        for (int mi = 0; mi < kMmas; ++mi) {
          uint64_t const desc_a = make_smem_desc(a_tile + mi * 64 * kBlockK + kk * 32);
          uint64_t const desc_b = make_smem_desc(b_tile + kk * 32);
          wgmma<Mma>(desc_a, desc_b, next[mi], kk > 0);
        }
        promote(done, sa, sb, boundary, kk * kGroups / 4, (kk + 1) * kGroups / 4);
#pragma unroll
        for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(total[mi]);  // keeps this quarter here
      }
      cute::warpgroup_commit_batch();
      turn_end();
      if (++issue_stage == T::kStages) {
        issue_stage = 0;
        issue_phase ^= 1;
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
        // Block kb's promotion is interleaved with the issue of block kb+1 (finish_while_issuing); every
        // exit and back edge follows a wait_group 0, so ptxas sees no in-flight accumulator touched.
        issue(partial0);
        cute::warpgroup_wait<0>();
        for (int kb = 0;; kb += 2) {
          if (kb + 1 < blocks) {
            finish_while_issuing(partial0, partial1, boundary);
            cute::warpgroup_wait<0>();
          } else {
            finish(partial0, boundary);
            break;
          }
          if (kb + 2 < blocks) {
            finish_while_issuing(partial1, partial0, boundary);
            cute::warpgroup_wait<0>();
          } else {
            finish(partial1, boundary);
            break;
          }
        }
      } else {
        for (int kb = 0; kb < blocks; ++kb) {
          issue(partial0);
          // The block's scales are in shared memory already: their loads overlap its wgmmas.
          float sa[kMmas][2];
          float sb[T::kScaleSlots];
          read_scales(sa, sb);
          cute::warpgroup_wait<0>();
#pragma unroll
          for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(partial0[mi]);
          release_stage();
          promote(partial0, sa, sb, boundary, 0, T::kBlockN / 8);
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
    // Consumer 1's last turn signal is still pending: take it so no named barrier is left mid-phase.
    if (T::kConsumers == 2 && consumer == 0 && turn_taken) named_barrier_sync(kTurnBarrier1, 256);
    if (tid == 0) cute::tma_store_wait<0>();
  }

  // No CTA may leave while a peer can still signal its barriers or write into its shared memory.
  if (args.cluster_size > 1) {
    cute::cluster_arrive_relaxed();
    cute::cluster_wait();
  }
#endif
}


}  // namespace gemm_sm90
