"""What every C++ backend built for sm_90a asks of the machine and of a problem.

Both nvcc-built backends (``cutlass``, ``sm90``) need a compute capability 9.0 device, the toolchain,
128x128 weight-scale blocks, one of their output dtypes and 16-byte rows of A and B for TMA.
"""

from __future__ import annotations

from typing import Iterable

import torch

from gemm.arch import ArchSpec
from gemm.kernels.base import BackendUnavailable
from gemm.kernels.nvcc import toolchain
from gemm.problem import GemmProblem

SCALE_BLOCK = 128


def unavailable_reason(what: str, device=None) -> str | None:
    """None when ``device`` (default: the current CUDA device) can run sm_90a kernels built here, else why
    not; ``what`` names the kernels in the message."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    capability = torch.cuda.get_device_capability(device)
    if tuple(capability) != (9, 0):
        return (f"{what} are built for sm_90a (compute capability 9.0); "
                f"this device has {capability[0]}.{capability[1]}")
    try:
        toolchain.find_toolchain()
    except BackendUnavailable as exc:
        return str(exc)
    return None


def problem_reason(problem: GemmProblem, arch: ArchSpec | None, what: str, out_dtypes: Iterable[str]) -> str | None:
    """Why ``problem`` cannot run on ``arch`` (None: skip the GPU check) with any such kernel, else None."""
    if arch is not None and not arch.is_hopper:
        return f"{what} need compute capability 9.0; {arch.name} has {arch.compute_capability}"
    if (problem.block_n, problem.block_k) != (SCALE_BLOCK, SCALE_BLOCK):
        return f"only 128x128 weight blocks are supported, got {problem.block_n}x{problem.block_k}"
    out_dtypes = list(out_dtypes)
    if problem.out_dtype not in out_dtypes:
        return f"output dtype {problem.out_dtype} is not supported; expected one of {out_dtypes}"
    if problem.k % 16:
        return f"K={problem.k} must be a multiple of 16 (TMA needs 16-byte rows of A and B)"
    return None
