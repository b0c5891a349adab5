// Block-scaled FP8 GEMM on SM90 (Hopper) with CUTLASS 3.x collectives, behind a small C ABI.
//
//   D[M, N] = sum_kb (A[:, kb] @ B[:, kb]^T) * SFA[m, kb] * SFB[n / 128, kb]
//
// A   [M, K]  float_e4m3, row-major with row stride lda (K contiguous)
// B   [N, K]  float_e4m3, row-major (what CUTLASS calls a column-major K x N operand)
// SFA float32, one scale per row per 128 K: K-major = [M, K/128] row-major (the DeepSeek layout),
//     or MN-major = [K/128, M] row-major
// SFB float32 [ceil(N/128), K/128] row-major (K-major), one scale per 128 x 128 block
// D   [M, N]  bf16 or fp16, row-major, D = acc (no source matrix C)
//
// A generated translation unit picks one instantiation of BlockwiseGemm<...> and exports its
// static member functions as extern "C" symbols (see codegen.py); launcher.py calls them.
// Nothing here allocates device memory: the caller passes the workspace. Launches go to the
// caller's stream and never synchronize, so they can be captured in CUDA graphs.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <string>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/blockwise_scale_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/dispatch_policy.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"
#include "cutlass/kernel_hardware_info.hpp"
#include "cutlass/numeric_types.h"
#include "cutlass/util/packed_stride.hpp"

#define GEMM_CUTLASS_EXPORT extern "C" __attribute__((visibility("default")))

namespace gemm_cutlass {

// Return codes of the C ABI; launcher.py mirrors them.
enum StatusCode : int {
  kOk = 0,
  kUnsupported = 1,   // the instantiation cannot run this problem (can_implement said no)
  kBadArgument = 2,   // a pointer, stride or the workspace is not what the kernel needs
  kCudaError = 3,     // a CUDA call or the launch failed
  kInternal = 4,      // an unexpected C++ exception
};

// Run-time knobs of one launch; launcher.py mirrors the layout with ctypes.
// Values follow CUTLASS's enums: DecompositionMode, RasterOrderOptions, ReductionMode.
struct RuntimeOptions {
  int32_t decomposition;  // 0 heuristic, 1 data-parallel, 2 split-K, 3 stream-K
  int32_t splits;         // split-K factor (1 unless decomposition is split-K or heuristic)
  int32_t raster;         // 0 heuristic, 1 along M, 2 along N
  int32_t max_swizzle;    // 1, 2, 4 or 8
  int32_t reduction;      // 0 deterministic (turnstile), 1 nondeterministic (atomic)
};

enum class Schedule { Cooperative, Pingpong };
enum class Scheduler { Persistent, StreamK };

// The last error of the calling thread, read through the exported last_error().
inline std::string& last_error() {
  thread_local std::string message;
  return message;
}

inline int fail(int code, std::string const& message) {
  last_error() = message;
  return code;
}

inline bool aligned16(void const* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// Pipeline stages: kStages == 0 fits as many as the shared memory left beside the epilogue allows.
// CUTLASS 4.2's blockwise builder accepts only a carveout (StageCount<N> does not compile), so a
// fixed count is the carveout that leaves room for exactly kStages stages of kStageBytes each;
// BlockwiseGemm static_asserts that the builder arrived at kStages.
template <int kStages, int kEpilogueBytes, int kStageBytes>
struct StagePolicy {
  static constexpr int kCapacity = cutlass::gemm::collective::detail::sm90_smem_capacity_bytes / 128 * 128;
  static constexpr int kCarveout = (kCapacity - kStages * kStageBytes) / 128 * 128;
  static_assert(kStages >= 2, "at least two pipeline stages are needed");
  static_assert(kCarveout >= kEpilogueBytes, "too many stages: the epilogue's shared memory no longer fits");
  using type = cutlass::gemm::collective::StageCountAutoCarveout<kCarveout>;
};
template <int kEpilogueBytes, int kStageBytes>
struct StagePolicy<0, kEpilogueBytes, kStageBytes> {
  using type = cutlass::gemm::collective::StageCountAutoCarveout<kEpilogueBytes>;
};

template <Schedule kSchedule, int kTileM, int kTileN, int kTileK, int kClusterM, int kClusterN,
          int kStages, bool kScalesAMnMajor, Scheduler kScheduler, class ElementD>
struct BlockwiseGemm {
  using ElementA = cutlass::float_e4m3_t;
  using ElementB = cutlass::float_e4m3_t;
  using ElementAccumulator = float;
  using ElementCompute = float;
  using LayoutA = cutlass::layout::RowMajor;     // [M, K], K contiguous
  using LayoutB = cutlass::layout::ColumnMajor;  // K x N column-major == [N, K] row-major
  using LayoutD = cutlass::layout::RowMajor;     // [M, N]
  static constexpr int kAlignmentAB = 16;        // elements of 1 byte: TMA's 16-byte granule
  static constexpr int kAlignmentD = 16 / int(sizeof(ElementD));

  using TileShape = cute::Shape<cute::Int<kTileM>, cute::Int<kTileN>, cute::Int<kTileK>>;
  using ClusterShape = cute::Shape<cute::Int<kClusterM>, cute::Int<kClusterN>, cute::_1>;

  // 1 x 128 activation groups and 128 x 128 weight blocks, in the layouts DeepSeek's quantizer
  // writes (K-major); MN-major activation scales are loaded with TMA instead of cp.async.
  using ScaleConfig = cutlass::detail::Sm90BlockwiseScaleConfig<
      1, 128, 128, kScalesAMnMajor ? cute::GMMA::Major::MN : cute::GMMA::Major::K, cute::GMMA::Major::K>;
  using LayoutSFA = decltype(ScaleConfig::deduce_layoutSFA());
  using LayoutSFB = decltype(ScaleConfig::deduce_layoutSFB());

  using MainloopSchedule = cute::conditional_t<kSchedule == Schedule::Cooperative,
      cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8Blockwise,
      cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8Blockwise>;
  using EpilogueSchedule = cute::conditional_t<kSchedule == Schedule::Cooperative,
      cutlass::epilogue::TmaWarpSpecializedCooperative, cutlass::epilogue::TmaWarpSpecialized>;
  using TileSchedulerTag = cute::conditional_t<kScheduler == Scheduler::StreamK,
      cutlass::gemm::StreamKScheduler, cutlass::gemm::PersistentScheduler>;

  // D = 1 * acc: no source matrix (ElementC = void), so the epilogue reads nothing.
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, ElementCompute,
      void, LayoutD, kAlignmentD, ElementD, LayoutD, kAlignmentD, EpilogueSchedule,
      cutlass::epilogue::fusion::ScaledAcc<ElementD, ElementCompute, ElementCompute>>::CollectiveOp;

  // Shared memory of one mainloop stage as CUTLASS's blockwise builder counts it: fp8 A and B
  // tiles, one fp32 scale per tile row of A and per 128 columns of B, 128-byte aligned, plus the
  // stage's pipeline barrier.
  static constexpr int kStageBytes =
      cutlass::round_up(kTileM * kTileK + kTileN * kTileK + 4 * kTileM + 4 * (kTileN / 128), 128) +
      static_cast<int>(sizeof(typename cutlass::PipelineTmaAsync<1>::SharedStorage));
  using Stages = typename StagePolicy<kStages,
      static_cast<int>(sizeof(typename CollectiveEpilogue::SharedStorage)), kStageBytes>::type;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      ElementA, cute::tuple<LayoutA, LayoutSFA>, kAlignmentAB,
      ElementB, cute::tuple<LayoutB, LayoutSFB>, kAlignmentAB,
      ElementAccumulator, TileShape, ClusterShape, Stages, MainloopSchedule>::CollectiveOp;

  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<
      cute::Shape<int, int, int, int>, CollectiveMainloop, CollectiveEpilogue, TileSchedulerTag>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
  static_assert(kStages == 0 || CollectiveMainloop::DispatchPolicy::Stages == kStages,
                "the builder did not arrive at the requested stage count");
  using Arguments = typename Gemm::Arguments;
  using StrideA = typename GemmKernel::StrideA;
  using StrideB = typename GemmKernel::StrideB;
  using StrideD = typename GemmKernel::StrideD;

  static constexpr int kMaxDevices = 64;

  // SM count per device, read once (the persistent schedulers size their grids with it).
  static int sm_count(int device) {
    static int counts[kMaxDevices] = {};
    if (device < 0 || device >= kMaxDevices) return 0;
    if (counts[device] == 0) {
      int value = 0;
      if (cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        cudaGetLastError();
        return 0;
      }
      counts[device] = value;
    }
    return counts[device];
  }

  static int current_device(int* device) {
    cudaError_t err = cudaGetDevice(device);
    if (err != cudaSuccess || *device < 0 || *device >= kMaxDevices) {
      cudaGetLastError();
      return fail(kCudaError, std::string("cudaGetDevice failed: ") + cudaGetErrorString(err));
    }
    return kOk;
  }

  static int make_arguments(void const* a, void const* b, void* d, float const* sfa, float const* sfb,
                            int m, int n, int k, int64_t lda, int device, RuntimeOptions const& options,
                            Arguments* out) {
    if (m < 1 || n < 1 || k < 1) {
      return fail(kBadArgument, "M, N and K must be positive, got M=" + std::to_string(m) + " N=" +
                                    std::to_string(n) + " K=" + std::to_string(k));
    }
    if (lda < k) {
      return fail(kBadArgument, "lda must be >= K, got lda=" + std::to_string(lda) + " K=" + std::to_string(k));
    }
    StrideA stride_a = cutlass::make_cute_packed_stride(StrideA{}, cute::make_shape(m, k, 1));
    cute::get<0>(stride_a) = lda;
    cute::get<2>(stride_a) = lda * m;
    StrideB stride_b = cutlass::make_cute_packed_stride(StrideB{}, cute::make_shape(n, k, 1));
    StrideD stride_d = cutlass::make_cute_packed_stride(StrideD{}, cute::make_shape(m, n, 1));
    LayoutSFA layout_sfa = ScaleConfig::tile_atom_to_shape_SFA(cute::make_shape(m, n, k, 1));
    LayoutSFB layout_sfb = ScaleConfig::tile_atom_to_shape_SFB(cute::make_shape(m, n, k, 1));

    cutlass::KernelHardwareInfo hw_info;
    hw_info.device_id = device;
    hw_info.sm_count = sm_count(device);
    if (hw_info.sm_count == 0) return fail(kCudaError, "could not read the device's SM count");

    typename GemmKernel::TileSchedulerArguments scheduler;
    using RasterOrderOptions = cutlass::gemm::kernel::detail::RasterOrderOptions;
    switch (options.raster) {
      case 0: scheduler.raster_order = RasterOrderOptions::Heuristic; break;
      case 1: scheduler.raster_order = RasterOrderOptions::AlongM; break;
      case 2: scheduler.raster_order = RasterOrderOptions::AlongN; break;
      default: return fail(kBadArgument, "raster must be 0, 1 or 2, got " + std::to_string(options.raster));
    }
    if (options.max_swizzle != 1 && options.max_swizzle != 2 && options.max_swizzle != 4 &&
        options.max_swizzle != 8) {
      return fail(kBadArgument, "max_swizzle must be 1, 2, 4 or 8, got " + std::to_string(options.max_swizzle));
    }
    scheduler.max_swizzle_size = options.max_swizzle;
    if constexpr (kScheduler == Scheduler::StreamK) {
      using Decomposition = cutlass::gemm::kernel::detail::DecompositionMode;
      using Reduction = cutlass::gemm::kernel::detail::ReductionMode;
      switch (options.decomposition) {
        case 0: scheduler.decomposition_mode = Decomposition::Heuristic; break;
        case 1: scheduler.decomposition_mode = Decomposition::DataParallel; break;
        case 2: scheduler.decomposition_mode = Decomposition::SplitK; break;
        case 3: scheduler.decomposition_mode = Decomposition::StreamK; break;
        default:
          return fail(kBadArgument, "decomposition must be 0..3, got " + std::to_string(options.decomposition));
      }
      if (options.reduction != 0 && options.reduction != 1) {
        return fail(kBadArgument, "reduction must be 0 or 1, got " + std::to_string(options.reduction));
      }
      scheduler.reduction_mode = options.reduction == 0 ? Reduction::Deterministic : Reduction::Nondeterministic;
      if (options.splits < 1) {
        return fail(kBadArgument, "splits must be >= 1, got " + std::to_string(options.splits));
      }
      scheduler.splits = options.splits;
    } else {
      // The persistent scheduler only decomposes data-parallel; refuse knobs it would ignore.
      if (options.decomposition != 1 || options.splits != 1) {
        return fail(kUnsupported,
                    "the persistent tile scheduler runs data-parallel only (decomposition=1, splits=1); "
                    "split-K, stream-K and heuristic need the stream-K scheduler");
      }
    }

    *out = Arguments{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {m, n, k, 1},
        {static_cast<ElementA const*>(a), stride_a, static_cast<ElementB const*>(b), stride_b,
         sfa, layout_sfa, sfb, layout_sfb},
        {{}, nullptr, stride_d, static_cast<ElementD*>(d), stride_d},
        hw_info,
        scheduler};
    return kOk;
  }

  static int check_arguments(Arguments const& args) {
    if (Gemm::can_implement(args) != cutlass::Status::kSuccess) {
      return fail(kUnsupported,
                  "CUTLASS can_implement refused the problem (TMA needs K % 16 == 0, lda % 16 == 0 and "
                  "N % " + std::to_string(kAlignmentD) + " == 0" +
                  (kScalesAMnMajor ? "; MN-major activation scales need M % 4 == 0" : "") +
                  "; splits > 1 only with split-K or heuristic decomposition)");
    }
    return kOk;
  }

  // Opt the kernel into its dynamic shared memory on this device. Not a stream operation, but
  // done once per device (at load time, through prepare()) rather than inside a graph capture.
  static int ensure_kernel_attributes(int device) {
    static std::mutex mutex;
    static bool done[kMaxDevices] = {};
    std::lock_guard<std::mutex> lock(mutex);
    if (done[device]) return kOk;
    constexpr int smem_bytes = GemmKernel::SharedStorageSize;
    if (smem_bytes >= (48 << 10)) {
      cudaError_t err = cudaFuncSetAttribute(cutlass::device_kernel<GemmKernel>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
      if (err != cudaSuccess) {
        cudaGetLastError();
        return fail(kCudaError, std::string("cudaFuncSetAttribute(max dynamic smem = ") +
                                    std::to_string(smem_bytes) + ") failed: " + cudaGetErrorString(err));
      }
    }
    done[device] = true;
    return kOk;
  }

  // ------------------------------------------------------------------ the exported operations

  static int prepare() {
    int device = 0;
    if (int rc = current_device(&device)) return rc;
    if (sm_count(device) == 0) return fail(kCudaError, "could not read the device's SM count");
    return ensure_kernel_attributes(device);
  }

  static int workspace_size(int m, int n, int k, int64_t lda, RuntimeOptions const* options, size_t* bytes) {
    try {
      if (options == nullptr || bytes == nullptr) return fail(kBadArgument, "options and bytes must not be null");
      int device = 0;
      if (int rc = current_device(&device)) return rc;
      Arguments args;
      if (int rc = make_arguments(nullptr, nullptr, nullptr, nullptr, nullptr, m, n, k, lda, device, *options,
                                  &args)) {
        return rc;
      }
      *bytes = Gemm::get_workspace_size(args);
      return kOk;
    } catch (std::exception const& e) {
      return fail(kInternal, std::string("workspace_size: ") + e.what());
    }
  }

  static int can_implement(int m, int n, int k, int64_t lda, RuntimeOptions const* options) {
    try {
      if (options == nullptr) return fail(kBadArgument, "options must not be null");
      int device = 0;
      if (int rc = current_device(&device)) return rc;
      Arguments args;
      if (int rc = make_arguments(nullptr, nullptr, nullptr, nullptr, nullptr, m, n, k, lda, device, *options,
                                  &args)) {
        return rc;
      }
      return check_arguments(args);
    } catch (std::exception const& e) {
      return fail(kInternal, std::string("can_implement: ") + e.what());
    }
  }

  static int run(void const* a, void const* b, void* d, float const* sfa, float const* sfb, int m, int n,
                 int k, int64_t lda, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 RuntimeOptions const* options) {
    try {
      if (options == nullptr) return fail(kBadArgument, "options must not be null");
      if (a == nullptr || b == nullptr || d == nullptr || sfa == nullptr || sfb == nullptr) {
        return fail(kBadArgument, "A, B, D, SFA and SFB must not be null");
      }
      // TMA descriptors need 16-byte aligned bases; a misaligned one would fault, not fail.
      if (!aligned16(a) || !aligned16(b) || !aligned16(d)) {
        return fail(kBadArgument, "A, B and D must be 16-byte aligned");
      }
      if (kScalesAMnMajor && !aligned16(sfa)) {
        return fail(kBadArgument, "MN-major SFA is loaded with TMA and must be 16-byte aligned");
      }
      int device = 0;
      if (int rc = current_device(&device)) return rc;
      Arguments args;
      if (int rc = make_arguments(a, b, d, sfa, sfb, m, n, k, lda, device, *options, &args)) return rc;
      if (int rc = check_arguments(args)) return rc;
      size_t needed = Gemm::get_workspace_size(args);
      if (needed > workspace_bytes || (needed > 0 && workspace == nullptr)) {
        return fail(kBadArgument, "workspace of " + std::to_string(workspace_bytes) + " bytes is too small; " +
                                      std::to_string(needed) + " bytes needed");
      }
      if (int rc = ensure_kernel_attributes(device)) return rc;
      cutlass::Status status = GemmKernel::initialize_workspace(args, workspace, stream);
      if (status != cutlass::Status::kSuccess) {
        return fail(kCudaError, std::string("initializing the workspace failed: ") +
                                    cutlassGetStatusString(status));
      }
      typename GemmKernel::Params params = GemmKernel::to_underlying_arguments(args, workspace);
      status = Gemm::run(params, stream);
      if (status != cutlass::Status::kSuccess) {
        cudaError_t err = cudaGetLastError();
        return fail(kCudaError, std::string("kernel launch failed: ") + cutlassGetStatusString(status) +
                                    " (" + cudaGetErrorString(err) + ")");
      }
      return kOk;
    } catch (std::exception const& e) {
      return fail(kInternal, std::string("run: ") + e.what());
    }
  }

  static int shared_memory_bytes() { return GemmKernel::SharedStorageSize; }
  static int stage_count() { return CollectiveMainloop::DispatchPolicy::Stages; }
};

}  // namespace gemm_cutlass
