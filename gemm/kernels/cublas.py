"""cuBLAS blockwise FP8 through ``torch._scaled_mm``, as a parameterless backend.

cuBLASLt wants the scales in its own layouts: activation scales [M, K/128]
M-major (stride (1, M)), weight scales as the transpose of a row-major
[N/128, roundup(K/128, 4)] buffer. Observed with torch 2.11 + CUDA 13: the
result is wrong when K/128 is not a multiple of 4, and M must be a multiple
of 4 (we pad A's rows). ``check`` rejects the first case; verification in the
tuner catches anything else.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import torch

from gemm.arch import ArchSpec
from gemm.kernels.base import Backend, GemmFn, KernelParams, LaunchError, UnsupportedProblem
from gemm.problem import GemmProblem


@dataclasses.dataclass(frozen=True)
class CublasParams(KernelParams):
    """cuBLAS picks its own algorithm; nothing to tune."""


def cublas_scale_layouts(a_scale: torch.Tensor, b_scale: torch.Tensor, m_padded: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-layout scales -> the layouts ``torch._scaled_mm`` accepts for 1x128 / 128x128 blocks.

    a_scale [M, kb] row-major -> [M_padded, kb] with stride (1, M_padded);
    b_scale [nb, kb] row-major -> [kb, nb] view of a [nb, roundup(kb, 4)] buffer.
    Padding rows repeat the last row's scales (their outputs are discarded).
    """
    m, kb = a_scale.shape
    nb = b_scale.shape[0]
    sa = torch.empty((kb, m_padded), dtype=torch.float32, device=a_scale.device)
    sa[:, :m] = a_scale.t()
    if m_padded > m:
        sa[:, m:] = a_scale[-1:].t()
    kb_padded = (kb + 3) // 4 * 4
    sb = torch.zeros((nb, kb_padded), dtype=torch.float32, device=b_scale.device)
    sb[:, :kb] = b_scale
    return sa.t(), sb[:, :kb].t()


def cublas_blockwise(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                     out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """C [M, N] = block-scaled A [M, K] @ B [N, K]^T through cuBLASLt (inputs in DeepSeek layouts)."""
    m = a.shape[0]
    m_padded = (m + 3) // 4 * 4
    if m_padded != m:
        a = torch.cat([a, a[-1:].expand(m_padded - m, -1)], dim=0)
    sa, sb = cublas_scale_layouts(a_scale, b_scale, m_padded)
    out = torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=out_dtype)
    return out[:m] if m_padded != m else out


class CublasBackend(Backend):
    name = "cublas"
    params_type = CublasParams

    def unavailable_reason(self, device=None) -> str | None:
        if not torch.cuda.is_available():
            return "no CUDA device"
        if torch.cuda.get_device_capability(device)[0] < 9:
            return "cuBLAS blockwise FP8 needs compute capability 9.0 or newer"
        return None

    def param_space(self, problem: GemmProblem, arch: ArchSpec) -> Iterable[CublasParams]:
        yield CublasParams()

    def check(self, problem: GemmProblem, params: KernelParams, arch: ArchSpec) -> str | None:
        if (problem.block_n, problem.block_k) != (128, 128):
            return "cuBLAS supports only 128x128 weight blocks with 1x128 activation groups"
        if problem.k_blocks % 4:
            return (f"K/128 = {problem.k_blocks} is not a multiple of 4: cuBLAS blockwise returns wrong "
                    "results there (torch 2.11 + CUDA 13)")
        if problem.k % 16 or problem.n % 16:
            return "cuBLASLt FP8 needs N and K to be multiples of 16"
        return None

    def default_params(self, problem: GemmProblem, arch: ArchSpec) -> CublasParams:
        return CublasParams()

    def build(self, problem: GemmProblem, params: KernelParams) -> GemmFn:
        reason = self.check(problem, params, None)
        if reason:
            raise UnsupportedProblem(reason)
        out_dtype = problem.torch_out_dtype

        def run(a, b, a_scale, b_scale):
            try:
                return cublas_blockwise(a, b, a_scale, b_scale, out_dtype)
            except RuntimeError as exc:
                raise LaunchError(f"torch._scaled_mm: {exc}") from exc

        return run
