"""The project's own Hopper block-FP8 GEMM (backend "sm90"), CUDA C++ on CuTe's SM90 primitives.

* ``fp8_gemm.cuh``: the kernel (persistent, warp-specialized: a TMA producer warp and one or two
  wgmma consumer warp groups with fp32 promotion per 128-deep K block) and its C ABI.
  ``fp8_gemm_splitk.cuh``: split-K (work-unit order, partial tiles, the fix-up); ``fp8_gemm_streamk.cuh``:
  stream-K; ``fp8_gemm_swapab.cuh``: swap-AB's scales, promotion and store.
* ``params``: ``Sm90Params`` (tile, stages, overlap, cluster, tile order, split count) and ``KernelConfig``
  (one build), with the shared-memory and register arithmetic of the kernel.
* ``splitk``: the split-K arithmetic mirrored from the C++ (K ranges, unit order, workspace sizes).
* ``streamk``: the same for stream-K (``fp8_gemm_streamk.cuh``: schedule, pieces, owners).
* ``codegen``: the translation unit of one instantiation, built by the shared nvcc JIT
  (``gemm.kernels.nvcc``).
* ``launcher``: ctypes loading and launches from torch (graph-capturable; row-major or MN-major
  activation scales).
* ``backend``: ``Sm90Backend`` for the tuner and the op.

Importing this package needs neither a GPU nor nvcc.
"""
