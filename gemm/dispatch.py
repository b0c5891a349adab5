"""Choosing the backend and params the op runs for a problem on a device.

Order: the tuned config of the device (when one covers the problem), else the
Triton backend's documented heuristic (``TritonBackend.default_params``).
"""

from __future__ import annotations

import functools

from gemm import envs
from gemm.arch import ArchSpec, detect_arch, interpreter_arch
from gemm.kernels import get_backend
from gemm.kernels.base import Backend, KernelParams
from gemm.problem import GemmInputError, GemmProblem


@functools.lru_cache(maxsize=16)
def arch_for_device(device_type: str, device_index: int | None) -> ArchSpec:
    """The ArchSpec of a CUDA device, or the interpreter stand-in for CPU tensors under TRITON_INTERPRET=1."""
    if device_type == "cuda":
        return detect_arch(device_index)
    if device_type == "cpu" and envs.triton_interpret():
        return interpreter_arch()
    raise GemmInputError(
        f"inputs are on {device_type}; the op runs on CUDA devices, or on the CPU only under TRITON_INTERPRET=1")


def heuristic_choice(problem: GemmProblem, arch: ArchSpec) -> tuple[Backend, KernelParams]:
    backend = get_backend("triton")
    return backend, backend.default_params(problem, arch)


def choose(problem: GemmProblem, device_type: str, device_index: int | None) -> tuple[Backend, KernelParams]:
    """(backend, params) to run ``problem`` on the given device."""
    arch = arch_for_device(device_type, device_index)
    return heuristic_choice(problem, arch)
