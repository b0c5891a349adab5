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
//   Promoting every 128-deep block in fp32 is what keeps FP8 accuracy at large K. Two consumer
//   warp groups issue their blocks in strict turns (named barriers), so one's promotion overlaps
//   the other's tensor-core work.
// * BLOCK_N is any multiple of 16 up to 256: a tile that straddles two or three 128-column weight
//   scale blocks picks each 8-column group's own scale.
// * Epilogue: bf16/fp16 into 32-byte swizzled shared memory (conflict-free for the wgmma
//   accumulator layout), then TMA stores of 16-column boxes; out-of-bounds rows and columns of ragged
//   tiles are clipped by TMA, and loads beyond M, N or K are zero-filled by TMA.
// * Tiles are walked in grouped order (groups of `group` cluster tiles along M or along N) so the
//   tiles in flight share operands in L2.
// * Split-K (run-time `splits` > 1, for few output tiles): each tile's K blocks are cut into `splits`
//   ranges, one work unit each; the unit of the first range adds the others' fp32 sums from a workspace
//   the caller owns, in K order (deterministic), and stores the tile (fp8_gemm_splitk.cuh).
// * Stream-K (run-time `stream_k`, 1x1 clusters, exclusive with split-K): the tiles beyond whole waves are
//   cut, with their K blocks, into one contiguous span of iterations per cluster; the cluster holding a
//   tile's last K range adds the lower clusters' fp32 partials in cluster order (fp8_gemm_streamk.cuh).
//
// * Swap-AB (compile-time, for decode): the MMA computes D^T = B A^T, the weights on the wgmma's M side
//   and the tokens on its N side, stored from registers (fp8_gemm_swapab.cuh); 1x1 clusters only.
//
// M, N and K are run-time arguments: one build serves every shape. Compile-time: the tile shape,
// the stage count, swap-AB and the output type. Cluster shape, tile order, split count and the
// activation-scale layout are run-time options. Nothing here allocates memory (split-K's workspace comes
// from the caller); launches go to the caller's stream and never synchronize, so they can be captured in
// CUDA graphs.
#pragma once

#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "fp8_gemm_kernel.cuh"
#include "fp8_gemm_splitk.cuh"
#include "fp8_gemm_streamk.cuh"

#define GEMM_SM90_EXPORT extern "C" __attribute__((visibility("default")))


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
  int32_t max_ctas;   // upper bound on the persistent grid (0: as many as are co-resident); a split-K grid
                      // is a multiple of `splits` CTAs (clusters), so it exceeds a bound below `splits`
  int32_t splits;     // K ranges per output tile, 1 <= splits <= ceil(K / 128) (1: data-parallel)
  int64_t counter_slots;    // int32 counters at `counters` (split-K / stream-K need workspace_sizes' count)
  int32_t* counters;        // arrival counters: zero when allocated, left at zero by every launch
  void* workspace;          // fp32 partial tiles, 16-byte aligned (contents never need clearing)
  int64_t workspace_bytes;  // bytes at `workspace`
  int32_t stream_k;         // 1: the stream-K schedule (fp8_gemm_streamk.cuh; splits == 1, 1x1 clusters only)
  int32_t dependent_launch;  // 1: programmatic dependent launch (the kernel waits for the previous one itself)
};
static_assert(sizeof(RunOptions) == 64 && offsetof(RunOptions, counter_slots) == 24 &&
                  offsetof(RunOptions, counters) == 32 && offsetof(RunOptions, workspace) == 40 &&
                  offsetof(RunOptions, workspace_bytes) == 48 && offsetof(RunOptions, stream_k) == 56 &&
                  offsetof(RunOptions, dependent_launch) == 60,
              "launcher.py's ctypes mirror of RunOptions assumes this layout");

inline std::string& last_error() {
  thread_local std::string message;
  return message;
}

inline int fail(int code, std::string const& message) {
  last_error() = message;
  return code;
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
template <int kBlockM, int kBlockN, int kStages, bool kOverlap, class OutT, class Mma, bool kSwapAB = false>
struct Gemm {
  using T = Traits<kBlockM, kBlockN, kStages, kOverlap, OutT, kSwapAB>;
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

  static bool valid_cluster(RunOptions const& o) {
    return (o.cluster_m == 1 && o.cluster_n == 1) || (o.cluster_m == 2 && o.cluster_n == 1) ||
           (o.cluster_m == 1 && o.cluster_n == 2);
  }

  // The stream-K plan of (m, n, k) on `resident_clusters` co-resident clusters (capped by max_ctas), and
  // its workspace: one counter per stream-K tile and consumer, one fp32 slot per cluster. No GPU needed
  // (the exported streamk_plan; streamk.py mirrors it). Options are checked as workspace_sizes does.
  static int streamk_plan_of(int m, int n, int k, int resident_clusters, RunOptions const& o, StreamKPlan& plan,
                             int64_t& counter_slots, int64_t& partial_bytes) {
    if (o.splits != 1) {
      return fail(kBadArgument, "stream_k and splits=" + std::to_string(o.splits) +
                                    " are exclusive: stream-K already shares the K blocks of few tiles");
    }
    if (o.cluster_m != 1 || o.cluster_n != 1) return fail(kBadArgument, "stream-K runs 1x1 clusters only");
    if (resident_clusters < 1) return fail(kBadArgument, "resident_clusters must be >= 1");
    int const k_blocks = (k + kBlockK - 1) / kBlockK;
    // Tiles of the MMA's problem: with swap-AB, N rows (weights) by M columns (tokens).
    int64_t const rows = kSwapAB ? n : m, cols = kSwapAB ? m : n;
    int64_t const tiles = (rows + kBlockM - 1) / kBlockM * ((cols + kBlockN - 1) / kBlockN);
    if (tiles * k_blocks > int64_t(INT32_MAX)) {
      return fail(kUnsupported, "stream-K counts tiles x K blocks in 32 bits: " + std::to_string(tiles * k_blocks) +
                                    " iterations are too many");
    }
    int resident = resident_clusters;
    if (o.max_ctas > 0 && o.max_ctas < resident) resident = o.max_ctas;
    plan = streamk_plan(resident, int(tiles), k_blocks);
    counter_slots = int64_t(plan.sk_tiles) * T::kConsumers;
    partial_bytes = int64_t(plan.clusters) * kBlockM * kBlockN * int64_t(sizeof(float));
    return kOk;
  }

  // What a launch of (m, n, k, options) needs from the caller's workspace: int32 counters and bytes of fp32
  // partial tiles (0 and 0 for data-parallel launches). launcher.py allocates them; splitk.py and
  // streamk.py mirror the sizes. Stream-K's depend on the grid: prepare() must have run on the device.
  static int workspace_sizes(int m, int n, int k, RunOptions const* options, int64_t* counter_slots,
                             int64_t* partial_bytes) {
    if (options == nullptr || counter_slots == nullptr || partial_bytes == nullptr) {
      return fail(kBadArgument, "options, counter_slots and partial_bytes must not be null");
    }
    if (m <= 0 || n <= 0 || k <= 0) return fail(kBadArgument, "M, N and K must be positive");
    RunOptions const& o = *options;
    if (!valid_cluster(o)) return fail(kBadArgument, "cluster must be 1x1, 2x1 or 1x2");
    if (kSwapAB && (o.cluster_m != 1 || o.cluster_n != 1)) {
      return fail(kBadArgument, "swap-AB runs 1x1 clusters only");
    }
    int const k_blocks = (k + kBlockK - 1) / kBlockK;
    if (o.splits < 1 || o.splits > k_blocks) {
      return fail(kBadArgument, "splits=" + std::to_string(o.splits) + " must be in [1, ceil(K / 128) = " +
                                    std::to_string(k_blocks) + "]: a split may not be empty");
    }
    *counter_slots = 0;
    *partial_bytes = 0;
    if (o.stream_k != 0 && o.stream_k != 1) {
      return fail(kBadArgument, "stream_k must be 0 or 1, got " + std::to_string(o.stream_k));
    }
    if (o.stream_k) {
      int device = -1;
      if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices || !info(device).prepared) {
        cudaGetLastError();
        return fail(kBadArgument, "stream-K's workspace depends on the grid, i.e. the device's SM count: call "
                                  "prepare() on the device first");
      }
      StreamKPlan plan;
      return streamk_plan_of(m, n, k, info(device).sms, o, plan, *counter_slots, *partial_bytes);
    }
    if (o.splits > 1) {
      // Tiles of the MMA's problem: with swap-AB, N rows (weights) by M columns (tokens).
      int64_t const tiles = kSwapAB ? splitk_workspace_tiles(n, m, kBlockM, kBlockN, o.cluster_m, o.cluster_n)
                                    : splitk_workspace_tiles(m, n, kBlockM, kBlockN, o.cluster_m, o.cluster_n);
      *counter_slots = tiles * T::kConsumers;
      *partial_bytes = tiles * (o.splits - 1) * int64_t(kBlockM) * kBlockN * int64_t(sizeof(float));
    }
    return kOk;
  }

  static int run(void const* a, void const* b, void* d, float const* sfa, float const* sfb, int m, int n, int k,
                 int64_t lda, int sfa_mn_major, int64_t sfa_ld, RunOptions const* options, cudaStream_t stream) {
    if (options == nullptr) return fail(kBadArgument, "options is null");
    if (m <= 0 || n <= 0 || k <= 0) return fail(kBadArgument, "M, N and K must be positive");
    RunOptions const& o = *options;
    if (!valid_cluster(o)) return fail(kBadArgument, "cluster must be 1x1, 2x1 or 1x2");
    if (o.raster != 0 && o.raster != 1) return fail(kBadArgument, "raster must be 0 (along M) or 1 (along N)");
    if (o.group < 1) return fail(kBadArgument, "group must be >= 1");
    // The workspace before anything else touches the device (split-K's checks run without a GPU too).
    int64_t counter_slots = 0, partial_bytes = 0;
    if (int status = workspace_sizes(m, n, k, options, &counter_slots, &partial_bytes)) return status;
    if (o.splits > 1 || o.stream_k) {
      std::string const what = o.stream_k ? "stream-K" : "split-K";
      if (o.counters == nullptr || o.counter_slots < counter_slots) {
        return fail(kBadArgument, what + " counters: " + std::to_string(o.counter_slots) + " slots at " +
                                      (o.counters == nullptr ? "null" : "the given pointer") + ", need " +
                                      std::to_string(counter_slots));
      }
      if (o.workspace == nullptr || o.workspace_bytes < partial_bytes) {
        return fail(kBadArgument, what + " workspace: " + std::to_string(o.workspace_bytes) + " bytes at " +
                                      (o.workspace == nullptr ? "null" : "the given pointer") + ", need " +
                                      std::to_string(partial_bytes));
      }
      if (!aligned16(o.workspace) || (reinterpret_cast<uintptr_t>(o.counters) & 3u) != 0) {
        return fail(kBadArgument, what + " workspace must be 16-byte aligned and counters 4-byte aligned");
      }
    }
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

    // The MMA's problem (mm rows x nn columns): with swap-AB, D^T = B A^T over N weight rows and M tokens.
    int const mm = kSwapAB ? n : m;
    int const nn = kSwapAB ? m : n;
    KernelArgs args;
    args.m = mm;
    args.n = nn;
    args.k = k;
    args.k_blocks = k_blocks;
    args.n_scale_blocks = (n + kScaleBlock - 1) / kScaleBlock;  // rows of SFB: the weights' 128-row blocks
    args.d = d;
    args.sfa = sfa;
    args.sfb = sfb;
    args.sfa_ld = int(sfa_ld);
    args.sfa_mn_major = sfa_mn_major ? 1 : 0;
    args.cluster_m = o.cluster_m;
    args.cluster_n = o.cluster_n;
    args.cluster_size = o.cluster_m * o.cluster_n;
    args.dependent_launch = o.dependent_launch ? 1 : 0;
    args.raster = o.raster;
    args.group = o.group;
    args.num_m_blocks = (mm + kBlockM - 1) / kBlockM;
    args.num_n_blocks = (nn + kBlockN - 1) / kBlockN;
    args.cluster_tiles_m = (args.num_m_blocks + o.cluster_m - 1) / o.cluster_m;
    args.cluster_tiles_n = (args.num_n_blocks + o.cluster_n - 1) / o.cluster_n;
    args.cluster_tiles = args.cluster_tiles_m * args.cluster_tiles_n;
    args.work_units = args.cluster_tiles;
    args.split = SplitKArgs{1, 0, nullptr, nullptr};
    args.stream = StreamKArgs{0, 0, 0, 0, 0, 0, FastDiv{1, 0u, 0u}, FastDiv{1, 0u, 0u}, nullptr, nullptr};

    // The MMA's A side (tma_a, BLOCK_M rows per tile) and B side (tma_b, BLOCK_N rows): A and B, or with
    // swap-AB the weights B and the activations A.
    int status = kSwapAB ? encode_2d(&args.tma_a, CU_TENSOR_MAP_DATA_TYPE_UINT8, b, k, n, k, kBlockK, kBlockM,
                                     CU_TENSOR_MAP_SWIZZLE_128B, "B (swap-AB: the MMA's A side)")
                         : encode_2d(&args.tma_a, CU_TENSOR_MAP_DATA_TYPE_UINT8, a, k, m, lda, kBlockK,
                                     kBlockM / o.cluster_n, CU_TENSOR_MAP_SWIZZLE_128B, "A");
    if (status == kOk) {
      status = kSwapAB ? encode_2d(&args.tma_b, CU_TENSOR_MAP_DATA_TYPE_UINT8, a, k, m, lda, kBlockK, kBlockN,
                                   CU_TENSOR_MAP_SWIZZLE_128B, "A (swap-AB: the MMA's B side)")
                       : encode_2d(&args.tma_b, CU_TENSOR_MAP_DATA_TYPE_UINT8, b, k, n, k, kBlockK,
                                   kBlockN / o.cluster_m, CU_TENSOR_MAP_SWIZZLE_128B, "B");
    }
    if (status == kOk && !kSwapAB) {
      status = encode_2d(&args.tma_d, kOutType, d, n, m, uint64_t(n) * sizeof(OutT), kEpilogueCols,
                         T::kRowsPerConsumer, CU_TENSOR_MAP_SWIZZLE_32B, "D");
    } else if (status == kOk) {
      args.tma_d = args.tma_a;  // unused: swap-AB stores from registers
    }
    if (status == kOk && sfa_mn_major) {
      // Box of one stage's activation scales: the tile's rows, with swap-AB its columns (tokens).
      status = encode_2d(&args.tma_sfa, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, sfa, uint64_t(sfa_ld), k_blocks,
                         uint64_t(sfa_ld) * 4, T::kSfaFloats, 1, CU_TENSOR_MAP_SWIZZLE_NONE, "SFA");
    } else if (status == kOk) {
      args.tma_sfa = args.tma_a;  // unused
    }
    if (status != kOk) return status;

    int const cluster_size = args.cluster_size;
    int resident = cluster_size == 1 ? dev.sms : dev.max_pairs;
    if (resident <= 0) return fail(kUnsupported, "no cluster of this shape fits on the device");
    int clusters = min(resident, args.cluster_tiles);
    if (o.max_ctas > 0) clusters = max(1, min(clusters, o.max_ctas / cluster_size));
    if (o.splits > 1) {
      // Rounds of R tiles x splits units, one per cluster (the order fp8_gemm_splitk.cuh argues deadlock-free).
      if (o.max_ctas > 0) resident = max(1, min(resident, o.max_ctas / cluster_size));
      int const round_tiles = splitk_round_tiles(resident, o.splits, args.cluster_tiles);
      clusters = round_tiles * o.splits;
      int const rounds = (args.cluster_tiles + round_tiles - 1) / round_tiles;
      args.work_units = rounds * clusters;
      args.split = SplitKArgs{o.splits, round_tiles, o.counters, static_cast<float*>(o.workspace)};
    } else if (o.stream_k) {
      // G clusters, each walking its data-parallel tiles and then the pieces of its span
      // (fp8_gemm_streamk.cuh); the plan is the one workspace_sizes sized the workspace by.
      StreamKPlan plan;
      if (int status = streamk_plan_of(m, n, k, resident, o, plan, counter_slots, partial_bytes)) return status;
      clusters = plan.clusters;
      args.work_units = plan.clusters * plan.units_per_cluster;
      args.stream = plan.args;
      args.stream.counters = o.counters;
      args.stream.partials = static_cast<float*>(o.workspace);
    }

    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(clusters * cluster_size);
    config.blockDim = dim3(T::kThreads);
    config.dynamicSmemBytes = T::kSmemLaunchBytes;
    config.stream = stream;
    cudaLaunchAttribute attributes[2];
    int count = 0;
    if (cluster_size > 1) {
      attributes[count].id = cudaLaunchAttributeClusterDimension;
      attributes[count].val.clusterDim.x = cluster_size;
      attributes[count].val.clusterDim.y = 1;
      attributes[count].val.clusterDim.z = 1;
      ++count;
    }
    if (o.dependent_launch) {
      // The launch may begin while the stream's previous kernel drains; the kernel's griddepcontrol.wait
      // (before its first global read) keeps the order of memory effects.
      attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attributes[count].val.programmaticStreamSerializationAllowed = 1;
      ++count;
    }
    config.attrs = attributes;
    config.numAttrs = count;
    cudaError_t err = cudaLaunchKernelEx(&config, fp8_gemm_kernel<T, Mma>, args);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return fail(kCudaError, std::string("kernel launch failed: ") + cudaGetErrorString(err));
    }
    return kOk;
  }
};

}  // namespace gemm_sm90
