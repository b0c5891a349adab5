"""CUTLASS 3.x blockwise-scaled FP8 GEMM for Hopper (SM90), JIT-built with nvcc (``gemm.kernels.nvcc``).

* ``config``: ``CutlassParams`` (compile-time + run-time fields) and ``KernelConfig`` (one build).
* ``codegen``: the C++ source of one instantiation of ``blockwise_gemm.h``, with its C ABI.
* ``support``: which tiles each CUTLASS release builds (and builds without spilling).
* ``jit``: builds of its instantiations through the shared nvcc JIT cache (``gemm.kernels.nvcc``).
* ``launcher``: ctypes loading and launches from torch (graph-capturable).
* ``backend``: ``CutlassBackend`` for the tuner and the op.
* ``aot``: ahead-of-time builds of the kernels tuned configs refer to (``gemm build``).

Importing this package needs neither a GPU nor nvcc.
"""
