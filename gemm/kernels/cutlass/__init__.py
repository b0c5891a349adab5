"""CUTLASS 3.x blockwise-scaled FP8 GEMM for Hopper (SM90), JIT-built with nvcc.

* ``config``: ``CutlassParams`` (compile-time + run-time fields) and ``KernelConfig`` (one build).
* ``codegen``: the C++ source of one instantiation of ``blockwise_gemm.h``, with its C ABI.
* ``toolchain``: nvcc and the CUTLASS headers (``nvidia-cutlass`` wheel or ``GEMM_CUTLASS_DIR``).
* ``support``: which tiles each CUTLASS release builds (and builds without spilling).
* ``jit``: content-hashed on-disk cache of built libraries, parallel and lock-protected builds.
* ``launcher``: ctypes loading and launches from torch (graph-capturable).
* ``backend``: ``CutlassBackend`` for the tuner and the op.
* ``aot``: ahead-of-time builds of the kernels tuned configs refer to (``gemm build``).

Importing this package needs neither a GPU nor nvcc.
"""
