"""The C++ toolchain shared by the backends compiled with nvcc (``cutlass``, ``sm90``).

* ``toolchain``: nvcc and the CuTe/CUTLASS headers (``nvidia-cutlass`` wheel or ``GEMM_CUTLASS_DIR``).
* ``jit``: content-hashed on-disk cache of built libraries, parallel and lock-protected builds.
* ``library``: ctypes loading of a built library (ABI check, errors, per-device preparation) and
  the tensor checks every launch from torch needs.

Importing this package needs neither a GPU nor nvcc.
"""
