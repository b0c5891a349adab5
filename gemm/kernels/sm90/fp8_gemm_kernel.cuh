// Device side of the project's Hopper block-FP8 GEMM: the persistent warp-specialized kernel, built from
// the traits and helpers of fp8_gemm_traits.cuh, the split-K pieces of fp8_gemm_splitk.cuh and the
// stream-K pieces of fp8_gemm_streamk.cuh.
// fp8_gemm.cuh (the host side and the C ABI) includes this file; it describes the design.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "cute/arch/cluster_sm90.hpp"
#include "cute/arch/copy_sm80.hpp"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cute/arch/mma_sm90_gmma.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"
#include "fp8_gemm_splitk.cuh"
#include "fp8_gemm_streamk.cuh"
#include "fp8_gemm_swapab.cuh"
#include "fp8_gemm_traits.cuh"

#define GEMM_SM90_EXPORT extern "C" __attribute__((visibility("default")))

// Measurement aid (0 in every real build): 1 leaves the promotion out, 2 the operand and scale loads after
// the first ring of stages, 4 the scale copies only; the result is wrong, only the time means something.
#ifndef GEMM_SM90_ABLATE
#define GEMM_SM90_ABLATE 0
#endif

namespace gemm_sm90 {

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
    m_block = ctm * args.cluster_m + (args.cluster_m > 1 ? rank_in_cluster() : 0);
    n_block = ctn * args.cluster_n + (args.cluster_n > 1 ? rank_in_cluster() : 0);
  };
  // Work unit u of this cluster (u = cluster_index(...), += cluster_count(...); work_unit in
  // fp8_gemm_splitk.cuh, streamk_unit in fp8_gemm_streamk.cuh).
  auto unit_of = [&](int u, WorkUnit& w) {
    int const clusters = cluster_count(args.cluster_size);
    if (args.stream.enabled) return streamk_unit(args.stream, args.k_blocks, clusters, u, w);
    return work_unit(args.split, args.cluster_tiles, args.k_blocks, clusters, u, w);
  };

  // Programmatic dependent launch: the stream's next kernel may be scheduled now (it waits for this grid
  // itself before reading what this one writes). Only in dependent launches, like the wait below.
  if (args.dependent_launch && threadIdx.x == 0) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");

  if (warp_group == 0) {
    // ------------------------------------------------------------------ producer
    cutlass::arch::warpgroup_reg_dealloc<T::kProducerRegs>();
    if (threadIdx.x < 32) {
      // Every global read of the CTA (operands, scales, the split-K and stream-K workspace, which the
      // consumers touch only after stages this warp filled) follows this wait for the previous kernel of a
      // dependent launch, and so does every global write.
      if (args.dependent_launch) asm volatile("griddepcontrol.wait;" ::: "memory");
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
      int const a_rows = T::kBlockM / args.cluster_n;  // rows of A this CTA loads
      int const b_rows = T::kBlockN / args.cluster_m;
      int const a_offset = args.cluster_n > 1 ? rank_in_cluster() * a_rows : 0;
      int const b_offset = args.cluster_m > 1 ? rank_in_cluster() * b_rows : 0;
      uint16_t const pair_mask = 0x3;
      int stage = 0;
      uint32_t phase = 0;
      [[maybe_unused]] int issued = 0;
      // The walk is instantiated once per schedule (below): one loop that chose its schedule per unit made
      // ptxas spill the loop counter in this 40-register warp. The scale layout and whether the CTA is in
      // a pair are compile-time in each instance too: this one warp issues every stage, its instruction
      // stream is what a stage waits for at large M (ncu, 4096x7168x7168: about 145 instructions per
      // stage, awake three quarters of the time, while the consumers wait on full stages), and the tests
      // of run-time fields cost it a dozen instructions and a divergent branch per stage.
      auto produce = [&](auto const& next_unit, auto mn_major, auto paired) {
        constexpr bool kMnMajor = decltype(mn_major)::value;
        constexpr bool kPaired = decltype(paired)::value;
        // The scales' TMA box is kSfaFloats wide: its bytes, not the stage's 128-byte padded slot (kSfaBytes).
        constexpr uint32_t kStageTx = T::kABytes + T::kBBytes + (kMnMajor ? T::kSfaFloats * 4 : 0);
        for (int u = cluster_index(args.cluster_size); u < args.work_units; u += cluster_count(args.cluster_size)) {
          WorkUnit w;
          if (!next_unit(u, w)) continue;
          int m_block, n_block;
          tile_of(w.tile, m_block, n_block);
          int const m0 = m_block * T::kBlockM;
          int const n0 = n_block * T::kBlockN;
          // The tile's first weight-scale block: along the MMA's N (columns), with swap-AB along its M (rows).
          int const first_scale_block = (T::kSwapAB ? m0 : n0) / kScaleBlock;
          // Activation scales follow the tokens: the MMA's rows, with swap-AB its columns.
          int const sfa0 = T::kSwapAB ? n0 : m0;
          float const* sfb_src =
              args.sfb + size_t(min(first_scale_block + lane, args.n_scale_blocks - 1)) * args.k_blocks;
          for (int kb = w.kb_begin; kb < w.kb_end; ++kb) {
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
              full[stage].arrive_and_expect_tx(kStageTx);
              uint8_t* a_dst = smem_a + stage * T::kABytes + (kPaired ? a_offset * kBlockK : 0);
              uint8_t* b_dst = smem_b + stage * T::kBBytes + (kPaired ? b_offset * kBlockK : 0);
              if (kPaired && args.cluster_n > 1) {
                cute::SM90_TMA_LOAD_MULTICAST_2D::copy(&args.tma_a, bar, pair_mask, kHint, a_dst, kb * kBlockK,
                                                       m0 + a_offset);
              } else {
                cute::SM90_TMA_LOAD_2D::copy(&args.tma_a, bar, kHint, a_dst, kb * kBlockK, m0);
              }
              if (kPaired && args.cluster_m > 1) {
                cute::SM90_TMA_LOAD_MULTICAST_2D::copy(&args.tma_b, bar, pair_mask, kHint, b_dst, kb * kBlockK,
                                                       n0 + b_offset);
              } else {
                cute::SM90_TMA_LOAD_2D::copy(&args.tma_b, bar, kHint, b_dst, kb * kBlockK, n0);
              }
              if constexpr (kMnMajor) {
                cute::SM90_TMA_LOAD_2D::copy(&args.tma_sfa, bar, kHint, smem_sfa + stage * T::kSfaStride, sfa0, kb);
              }
            }
#if !(GEMM_SM90_ABLATE & 4)
            if (lane < T::kScaleSlots) {
              cute::SM80_CP_ASYNC_CACHEALWAYS<float>::copy(sfb_src[kb], smem_sfb[stage * T::kSfbFloats + lane]);
            }
            if constexpr (!kMnMajor) {
              // A fixed trip count (rows lane, lane + 32, ..), so the loop unrolls with no loop counter.
#pragma unroll
              for (int i = 0; i < (T::kSfaFloats + 31) / 32; ++i) {
                int const r = lane + 32 * i;
                if (T::kSfaFloats % 32 != 0 && r >= T::kSfaFloats) break;
                // Tokens beyond M read the last token's scale: finite, and their zero-filled operand rows and
                // the clipped stores make it harmless.
                // (The last token is read here, not kept from before the loop: the producer has 40 registers.)
                int const token = min(sfa0 + r, (T::kSwapAB ? args.n : args.m) - 1);
                float const* src = args.sfa + size_t(token) * args.sfa_ld + kb;
                cute::SM80_CP_ASYNC_CACHEALWAYS<float>::copy(*src, smem_sfa[stage * T::kSfaStride + r]);
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
      };
      auto with_layout = [&](auto const& next_unit, auto paired) {
        if (args.sfa_mn_major) {
          produce(next_unit, cute::true_type{}, paired);
        } else {
          produce(next_unit, cute::false_type{}, paired);
        }
      };
      auto with_cluster = [&](auto const& next_unit) {
        if (args.cluster_size > 1) {
          with_layout(next_unit, cute::true_type{});
        } else {
          with_layout(next_unit, cute::false_type{});
        }
      };
      if (args.stream.enabled) {  // stream-K runs 1x1 clusters only
        with_layout([&](int u, WorkUnit& w) {
          return streamk_unit(args.stream, args.k_blocks, cluster_count(args.cluster_size), u, w);
        }, cute::false_type{});
      } else {
        with_cluster([&](int u, WorkUnit& w) {
          return work_unit(args.split, args.cluster_tiles, args.k_blocks, cluster_count(args.cluster_size), u, w);
        });
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
    auto read_scales = [&](float (&sa)[T::kSaRows][2], float (&sb)[T::kScaleSlots]) {
      if constexpr (T::kSwapAB) {
        swap_read_scales<T>(smem_sfa + finish_stage * T::kSfaStride, smem_sfb + finish_stage * T::kSfbFloats,
                            thread_col, sa, sb);
      } else {
        float const* stage_sfa = smem_sfa + finish_stage * T::kSfaStride + row_base;
#pragma unroll
        for (int mi = 0; mi < kMmas; ++mi) {
          sa[mi][0] = stage_sfa[mi * 64 + thread_row];
          sa[mi][1] = stage_sfa[mi * 64 + thread_row + 8];
        }
#pragma unroll
        for (int s = 0; s < T::kScaleSlots; ++s) sb[s] = smem_sfb[finish_stage * T::kSfbFloats + s];
      }
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
    auto take_scales = [&](float (&sa)[T::kSaRows][2], float (&sb)[T::kScaleSlots]) {
      read_scales(sa, sb);
      release_stage();
    };

    // Promote 8-column groups [j_begin, j_end) of a completed block in fp32; each group takes the scale of
    // its own 128-column weight block.
    auto promote = [&](float (&partial)[kMmas][kAccum], float const (&sa)[T::kSaRows][2],
                       float const (&sb)[T::kScaleSlots], int boundary, int j_begin, int j_end) {
#if GEMM_SM90_ABLATE & 1
      if (j_begin == 0) total[0][0] += partial[0][0] * sa[0][0] * sb[0];
      return;
#endif
      if constexpr (T::kSwapAB) {
        swap_promote<T>(total, partial, sa, sb, j_begin, j_end);
      } else {
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
      }
    };

    auto finish = [&](float (&partial)[kMmas][kAccum], int boundary) {
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(partial[mi]);
      float sa[T::kSaRows][2];
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
      float sa[T::kSaRows][2];
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

    for (int u = cluster_index(args.cluster_size); u < args.work_units; u += cluster_count(args.cluster_size)) {
      WorkUnit w;
      if (!unit_of(u, w)) continue;
      int m_block, n_block;
      tile_of(w.tile, m_block, n_block);
      int const m0 = m_block * T::kBlockM;
      int const n0 = n_block * T::kBlockN;
      int const boundary = kScaleBlock - (n0 % kScaleBlock);  // tile columns before the next scale block
#pragma unroll
      for (int mi = 0; mi < kMmas; ++mi) {
#pragma unroll
        for (int i = 0; i < kAccum; ++i) total[mi][i] = 0.0f;
      }
      int const blocks = w.kb_end - w.kb_begin;  // >= 1: no split is empty
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
          float sa[T::kSaRows][2];
          float sb[T::kScaleSlots];
          read_scales(sa, sb);
          cute::warpgroup_wait<0>();
#pragma unroll
          for (int mi = 0; mi < kMmas; ++mi) fence_accumulators(partial0[mi]);
          release_stage();
          promote(partial0, sa, sb, boundary, 0, T::kBlockN / 8);
        }
      }

      // ---------------------------------------------------------------- split-K, stream-K
      // Split-K: splits 1..S-1 publish their sums and skip the epilogue; split 0 adds them to its own in K
      // order (fp8_gemm_splitk.cuh). Stream-K: a piece that ends before its tile's last K block publishes into
      // its cluster's slot; the tile's owner adds the lower contributors' slots in cluster order
      // (fp8_gemm_streamk.cuh). One branch per unit, outside the K loop; the data-parallel kernel never takes it.
      if (args.split.splits > 1 || args.stream.enabled) {
        int const ws_tile = w.tile * args.cluster_size + (args.cluster_size > 1 ? rank_in_cluster() : 0);
        FixUp const f =
            args.stream.enabled
                ? streamk_fixup<T::kBlockM, T::kBlockN, T::kConsumers>(args.stream, w, args.k_blocks, consumer,
                                                                       row_base)
                : splitk_fixup<T::kBlockM, T::kBlockN, T::kConsumers>(args.split, w, ws_tile, consumer, row_base);
        auto sync = [&]() { named_barrier_sync(barrier_id, 128); };
        if (f.role != kWholeTile &&
            !fixup_combine<T::kBlockM, T::kBlockN>(f, tid, args.m - m0 - row_base, args.n - n0, thread_row, sync, total,
                                                   partial0)) {
          continue;  // published; the unit that fixes the tile up stores it
        }
      }

      // ---------------------------------------------------------------- epilogue
      if constexpr (T::kSwapAB) {
        // D^T's tile straight from registers (fp8_gemm_swapab.cuh): no shared memory, no TMA store.
        swap_store<T>(args, total, m0 + row_base, n0, thread_row, thread_col);
      } else {
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
    }
    // Consumer 1's last turn signal is still pending: take it so no named barrier is left mid-phase.
    if (T::kConsumers == 2 && consumer == 0 && turn_taken) named_barrier_sync(kTurnBarrier1, 256);
    if (!T::kSwapAB && tid == 0) cute::tma_store_wait<0>();
  }

  // No CTA may leave while a peer can still signal its barriers or write into its shared memory.
  if (args.cluster_size > 1) {
    cute::cluster_arrive_relaxed();
    cute::cluster_wait();
  }
#endif
}


}  // namespace gemm_sm90
