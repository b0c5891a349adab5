"""Loading a built Hopper-kernel library and calling it from torch.

A launch takes the stream of ``torch.cuda.current_stream()``, allocates its
output from torch's caching allocator and never synchronizes, so calls can be
captured in CUDA graphs. The activation scales may come in either layout
(``gemm.problem.activation_scale_layout``); nothing is copied for either.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from gemm.kernels.base import GemmFn
from gemm.kernels.nvcc.library import OK, NativeLibrary, check_call, device_index, tma_ready
from gemm.kernels.sm90 import codegen
from gemm.kernels.sm90.params import RASTER_CODES, Sm90Params
from gemm.problem import GemmProblem, activation_scale_layout


class RunOptions(ctypes.Structure):
    """Mirror of ``gemm_sm90::RunOptions``."""

    _fields_ = [
        ("cluster_m", ctypes.c_int32),
        ("cluster_n", ctypes.c_int32),
        ("raster", ctypes.c_int32),
        ("group", ctypes.c_int32),
        ("max_ctas", ctypes.c_int32),
    ]


def run_options(params: Sm90Params, max_ctas: int = 0) -> RunOptions:
    """The C struct of ``params``' run-time fields."""
    return RunOptions(params.cluster_m, params.cluster_n, RASTER_CODES[params.raster], params.group, max_ctas)


class Sm90Library(NativeLibrary):
    """One loaded instantiation of ``fp8_gemm.cuh``."""

    symbol_prefix = codegen.SYMBOL_PREFIX
    abi_version = codegen.ABI_VERSION
    title = "Hopper kernel library"

    def bind(self) -> None:
        self._run = self.function(
            "run", ctypes.c_int,
            [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
             ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.POINTER(RunOptions),
             ctypes.c_void_p])

    def run(self, a: int, b: int, d: int, sfa: int, sfb: int, m: int, n: int, k: int, lda: int,
            sfa_mn_major: bool, sfa_ld: int, options: RunOptions, stream: int) -> None:
        status = self._run(a, b, d, sfa, sfb, m, n, k, lda, int(sfa_mn_major), sfa_ld, ctypes.byref(options),
                           stream)
        if status != OK:
            self.raise_for(status, "run")


@functools.lru_cache(maxsize=None)
def load_library(path: Path) -> Sm90Library:
    """The library at ``path``, loaded once per process."""
    return Sm90Library(Path(path))


def make_gemm_fn(library: Sm90Library, problem: GemmProblem, params: Sm90Params,
                 device: torch.device | int | None = None) -> GemmFn:
    """A callable ``fn(a, b, a_scale, b_scale) -> out`` running ``library`` for ``problem``.

    Inputs (on one CUDA device): a [M, K] e4m3 with unit stride along K and a row
    pitch that is a multiple of 16 bytes (else it is copied); b [N, K] e4m3
    contiguous; a_scale [M, ceil(K/128)] fp32 row-major or MN-major (see
    ``gemm.problem.activation_scale_layout``); b_scale [ceil(N/128), ceil(K/128)] fp32 contiguous. Output
    [M, N] of the problem's dtype, contiguous. Prepares the kernel on ``device``
    (default: the current CUDA device).
    """
    m, n, k = problem.m, problem.n, problem.k
    options = run_options(params)
    library.prepare(device_index(device, "Hopper kernels"))
    out_dtype = problem.torch_out_dtype

    def run(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor) -> torch.Tensor:
        check_call(problem, a, b, a_scale, b_scale)
        layout, sfa_ld = activation_scale_layout(a_scale)
        mn_major = layout == "mn_major"
        a = tma_ready(a)
        b = tma_ready(b)
        out = torch.empty((m, n), dtype=out_dtype, device=a.device)
        stream = torch.cuda.current_stream(a.device).cuda_stream
        args = (a.data_ptr(), b.data_ptr(), out.data_ptr(), a_scale.data_ptr(), b_scale.data_ptr(), m, n, k,
                a.stride(0), mn_major, sfa_ld, options, stream)
        if a.device.index != torch.cuda.current_device():
            with torch.cuda.device(a.device):
                library.run(*args)
        else:
            library.run(*args)
        return out

    return run
