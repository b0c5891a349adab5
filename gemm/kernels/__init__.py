"""Kernel backends, looked up by name.

Backends are imported lazily so that, e.g., the CUTLASS backend's needs
(nvcc, headers) never get in the way of the Triton one.
"""

from __future__ import annotations

import importlib

from gemm.kernels.base import Backend

_BACKENDS = {
    "triton": ("gemm.kernels.triton_fp8", "TritonBackend"),
    "cutlass": ("gemm.kernels.cutlass.backend", "CutlassBackend"),
    "cublas": ("gemm.kernels.cublas", "CublasBackend"),
    "sm90": ("gemm.kernels.sm90.backend", "Sm90Backend"),
    # The engines' own Triton kernel, launched as each engine does: tuned with ``gemm tune --engine``.
    "vllm_triton": ("gemm.kernels.engine_triton", "VllmTritonBackend"),
    "sglang_triton": ("gemm.kernels.engine_triton", "SglangTritonBackend"),
}
#: Backends a sweep tries when none are named. The Hopper kernel ("sm90") is tuned on request
#: (``--backends``) until it leads somewhere: measured on an H200 it is 0.6x cuBLAS per-tensor FP8
#: at large M (docs/sm90.md), behind the CUTLASS kernels, so it would only lengthen the default sweep.
_DEFAULT_SWEEP = ("triton", "cutlass", "cublas")
_INSTANCES: dict[str, Backend] = {}


def backend_names() -> list[str]:
    """Names of every known backend, in preference order for ties."""
    return list(_BACKENDS)


def default_backend_names() -> list[str]:
    """The backends a sweep tries when none are named, in preference order for ties."""
    return [name for name in _BACKENDS if name in _DEFAULT_SWEEP]


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (see ``backend_names``); ValueError for an unknown name."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {backend_names()}")
    if name not in _INSTANCES:
        module_name, class_name = _BACKENDS[name]
        module = importlib.import_module(module_name)
        _INSTANCES[name] = getattr(module, class_name)()
    return _INSTANCES[name]
