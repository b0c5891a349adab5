// Swap-AB of the project's Hopper block-FP8 GEMM (Traits::kSwapAB): for decode (M <= 64 tokens) the MMA
// computes D^T = B A^T, so the weights B [N, K] fill the wgmma's 64-row M side and the few tokens sit on its
// N side (BLOCK_N = 16, 32, ...), instead of a 64-row wgmma computing 1..32 useful rows.
//
// Roles inside the kernel: the "A" operand (tma_a, rows of the MMA) is B, the "B" operand (tma_b, columns
// of the MMA) is A; KernelArgs::m = N and KernelArgs::n = M, so the tile walk, split-K and the bounds of
// the MMA problem need no other change. What differs is here:
// * scales: an MMA row n takes the weight scale sfb[n / 128, kb]. Tiles start at multiples of BLOCK_M
//   (64 or 128), so a tile lies inside one 128-row weight block: ONE scalar per tile and K block. An MMA
//   column (token) m takes sfa[m, kb]: the producer stages BLOCK_N activation scales per stage, and each
//   consumer thread reads the two columns it holds in each 8-column group.
// * the epilogue: the tile is D^T's [BLOCK_M (n), BLOCK_N (m)]; adjacent accumulator columns are tokens,
//   N elements apart in D, so each value is a 2-byte store from registers, bounds-checked on n < N and
//   m < M (no shared memory, no TMA store). Decode tiles are tiny, so the store is a small part of a
//   launch that streams the weights.
// fp8_gemm_kernel.cuh includes this file and calls these helpers under `if constexpr (T::kSwapAB)`.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fp8_gemm_traits.cuh"

namespace gemm_sm90 {

template <class OutT>
__device__ __forceinline__ OutT to_out(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 to_out<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half to_out<__half>(float x) { return __float2half_rn(x); }

// The scales of one completed K block: sa[j] = the activation scales of this thread's columns 8j + c and
// 8j + c + 1 (c = thread_col), sb[0] = the tile's weight scale.
template <class T>
__device__ __forceinline__ void swap_read_scales(float const* stage_sfa, float const* stage_sfb, int thread_col,
                                                 float (&sa)[T::kSaRows][2], float (&sb)[T::kScaleSlots]) {
#pragma unroll
  for (int j = 0; j < T::kSaRows; ++j) {
    // 8-byte aligned: thread_col is even and every stage starts 128-byte aligned.
    float2 const v = *reinterpret_cast<float2 const*>(stage_sfa + 8 * j + thread_col);
    sa[j][0] = v.x;
    sa[j][1] = v.y;
  }
  sb[0] = stage_sfb[0];
}

// total += partial * (sb * sa[column]) over the 8-column groups [j_begin, j_end). In the wgmma accumulator
// layout partial[4j + 0..3] are (row r, col c), (r, c + 1), (r + 8, c), (r + 8, c + 1) of group j.
template <class T, int kMmas, int kAccum>
__device__ __forceinline__ void swap_promote(float (&total)[kMmas][kAccum], float const (&partial)[kMmas][kAccum],
                                             float const (&sa)[T::kSaRows][2], float const (&sb)[T::kScaleSlots],
                                             int j_begin, int j_end) {
  static_assert(kMmas == 1, "swap-AB consumers own one 64-row slab");
#pragma unroll
  for (int j = j_begin; j < j_end; ++j) {
    float const s0 = sb[0] * sa[j][0];
    float const s1 = sb[0] * sa[j][1];
    total[0][4 * j + 0] = fmaf(partial[0][4 * j + 0], s0, total[0][4 * j + 0]);
    total[0][4 * j + 1] = fmaf(partial[0][4 * j + 1], s1, total[0][4 * j + 1]);
    total[0][4 * j + 2] = fmaf(partial[0][4 * j + 2], s0, total[0][4 * j + 2]);
    total[0][4 * j + 3] = fmaf(partial[0][4 * j + 3], s1, total[0][4 * j + 3]);
  }
}

// Store a consumer's fp32 sums to D [M, N] (row-major, row stride N = args.m) from registers. `row0` is the
// first weight row (n) of the consumer's slab, `col0` the tile's first token (m); values beyond N or M are
// dropped (their columns hold zero-filled tokens, whose scales are never meaningful).
template <class T, int kMmas, int kAccum>
__device__ __forceinline__ void swap_store(KernelArgs const& args, float const (&total)[kMmas][kAccum], int row0,
                                           int col0, int thread_row, int thread_col) {
  using OutT = typename T::OutT;
  OutT* d = static_cast<OutT*>(args.d);
  int const rows = args.m;  // N: the row stride of D
  int const cols = args.n;  // M
#pragma unroll
  for (int j = 0; j < T::kBlockN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      int const token = col0 + 8 * j + thread_col + e;
      if (token >= cols) continue;
      OutT* out = d + size_t(token) * rows;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int const n = row0 + thread_row + 8 * h;
        if (n < rows) out[n] = to_out<OutT>(total[0][4 * j + 2 * h + e]);
      }
    }
  }
}

}  // namespace gemm_sm90
