"""Loading a built CUTLASS library with ctypes and calling it from torch.

The library's C ABI is described in ``codegen``. A launch takes the stream
of ``torch.cuda.current_stream()``, allocates its output and workspace from
torch's caching allocator and never synchronizes, so calls can be captured
in CUDA graphs. Failures reported by the library become ``UnsupportedProblem``
(the instantiation cannot run this problem) or ``LaunchError``.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from gemm.kernels.base import GemmFn, UnsupportedProblem
from gemm.kernels.cutlass import codegen
from gemm.kernels.cutlass.config import DECOMPOSITION_CODES, RASTER_CODES, REDUCTION_CODES, CutlassParams
from gemm.kernels.nvcc.library import (BAD_ARGUMENT, CUDA_ERROR, INTERNAL, OK, UNSUPPORTED,  # noqa: F401
                                       NativeLibrary, check_call, tma_ready)
from gemm.kernels.nvcc.library import device_index as device_index_of
from gemm.problem import GemmProblem

#: Largest workspace a launch may ask for (split-K with many splits can want hundreds of MB).
MAX_WORKSPACE_BYTES = 256 * 2**20


class RuntimeOptions(ctypes.Structure):
    """Mirror of ``gemm_cutlass::RuntimeOptions``."""

    _fields_ = [
        ("decomposition", ctypes.c_int32),
        ("splits", ctypes.c_int32),
        ("raster", ctypes.c_int32),
        ("max_swizzle", ctypes.c_int32),
        ("reduction", ctypes.c_int32),
    ]


def runtime_options(params: CutlassParams) -> RuntimeOptions:
    """The C struct of ``params``' run-time fields."""
    return RuntimeOptions(DECOMPOSITION_CODES[params.decomposition], params.splits, RASTER_CODES[params.raster],
                          params.max_swizzle, REDUCTION_CODES[params.reduction])


class KernelLibrary(NativeLibrary):
    """One loaded CUTLASS instantiation; thin typed wrappers over its exported functions."""

    symbol_prefix = codegen.SYMBOL_PREFIX
    abi_version = codegen.ABI_VERSION
    title = "CUTLASS kernel library"

    def bind(self) -> None:
        options = ctypes.POINTER(RuntimeOptions)
        self._workspace_size = self.function(
            "workspace_size", ctypes.c_int,
            [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, options, ctypes.POINTER(ctypes.c_size_t)])
        self._can_implement = self.function(
            "can_implement", ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, options])
        self._run = self.function(
            "run", ctypes.c_int,
            [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
             ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, options])

    def workspace_size(self, m: int, n: int, k: int, lda: int, options: RuntimeOptions) -> int:
        size = ctypes.c_size_t(0)
        status = self._workspace_size(m, n, k, lda, ctypes.byref(options), ctypes.byref(size))
        if status != OK:
            self.raise_for(status, "workspace_size")
        return size.value

    def can_implement(self, m: int, n: int, k: int, lda: int, options: RuntimeOptions) -> None:
        """Raises UnsupportedProblem (with CUTLASS's reason) when the problem cannot run."""
        status = self._can_implement(m, n, k, lda, ctypes.byref(options))
        if status != OK:
            self.raise_for(status, "can_implement")

    def run(self, a: int, b: int, d: int, sfa: int, sfb: int, m: int, n: int, k: int, lda: int,
            workspace: int, workspace_bytes: int, stream: int, options: RuntimeOptions) -> None:
        status = self._run(a, b, d, sfa, sfb, m, n, k, lda, workspace, workspace_bytes, stream,
                           ctypes.byref(options))
        if status != OK:
            self.raise_for(status, "run")


@functools.lru_cache(maxsize=None)
def load_library(path: Path) -> KernelLibrary:
    """The library at ``path``, loaded once per process."""
    return KernelLibrary(Path(path))


def _activation_scales(a_scale: torch.Tensor, mn_major: bool) -> torch.Tensor:
    """``a_scale`` [M, kb] as the kernel reads it: row-major [M, kb] (K-major) or row-major [kb, M] (MN-major).

    Accepts either layout of the [M, kb] tensor and copies only when needed.
    """
    if not mn_major:
        return a_scale if a_scale.is_contiguous() else a_scale.contiguous()
    transposed = a_scale.t()
    return transposed if transposed.is_contiguous() else transposed.contiguous()


def make_gemm_fn(library: KernelLibrary, problem: GemmProblem, params: CutlassParams,
                 device: torch.device | int | None = None,
                 max_workspace_bytes: int = MAX_WORKSPACE_BYTES) -> GemmFn:
    """A callable ``fn(a, b, a_scale, b_scale) -> out`` running ``library`` for ``problem``.

    Inputs (on one CUDA device): a [M, K] e4m3 with unit stride along K; b [N, K]
    e4m3 contiguous; a_scale [M, ceil(K/128)] fp32, row-major (or M-major: the
    ``.t()`` of a contiguous [ceil(K/128), M] tensor); b_scale
    [ceil(N/128), ceil(K/128)] fp32 contiguous. Output [M, N] of the problem's
    dtype. A's row pitch and base must be 16-byte aligned, else it is copied.

    Checks the problem with the library now (UnsupportedProblem if CUTLASS
    refuses it or its workspace exceeds ``max_workspace_bytes``), and prepares
    the kernel on ``device`` (default: the current CUDA device).
    """
    m, n, k = problem.m, problem.n, problem.k
    options = runtime_options(params)
    device_index = device_index_of(device, "CUTLASS kernels")
    with torch.cuda.device(device_index):
        library.can_implement(m, n, k, k, options)
        workspace_bytes = library.workspace_size(m, n, k, k, options)
    if workspace_bytes > max_workspace_bytes:
        raise UnsupportedProblem(f"{params.short()} needs {workspace_bytes / 2**20:.0f} MiB of workspace for "
                                 f"{problem}, more than the {max_workspace_bytes / 2**20:.0f} MiB allowed")
    library.prepare(device_index)
    out_dtype = problem.torch_out_dtype
    mn_major = params.sfa_major == "mn"

    def run(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor) -> torch.Tensor:
        check_call(problem, a, b, a_scale, b_scale)
        a = tma_ready(a)
        b = tma_ready(b)
        sa = _activation_scales(a_scale, mn_major)
        out = torch.empty((m, n), dtype=out_dtype, device=a.device)
        workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=a.device) if workspace_bytes else None
        stream = torch.cuda.current_stream(a.device).cuda_stream
        args = (a.data_ptr(), b.data_ptr(), out.data_ptr(), sa.data_ptr(), b_scale.data_ptr(), m, n, k,
                a.stride(0), workspace.data_ptr() if workspace is not None else None, workspace_bytes, stream,
                options)
        if a.device.index != torch.cuda.current_device():
            with torch.cuda.device(a.device):
                library.run(*args)
        else:
            library.run(*args)
        return out

    return run
