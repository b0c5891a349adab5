"""The classic block-FP8 Triton kernel, as inference engines ship it: a benchmark peer.

One program per output tile, a K loop that multiplies each partial product by
its activation and weight scales; no split-K, TMA or persistence. Engines run
it at ``CLASSIC_DEFAULT`` when they have no tuned file for a shape. Kept
deliberately plain so benchmarks compare against what users get today.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@triton.jit
def _classic_block_fp8_kernel(
    A, B, C, As, Bs, M, N, K,
    stride_am, stride_bn, stride_cm, stride_as, stride_bs,
    SCALE_N: tl.constexpr, SCALE_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = A + offs_m[:, None] * stride_am + offs_k[None, :]
    b_ptrs = B + offs_n[None, :] * stride_bn + offs_k[:, None]
    as_ptrs = As + offs_m * stride_as
    bs_ptrs = Bs + (offs_n // SCALE_N) * stride_bs

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - kk * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        k_scale = kk * BLOCK_K // SCALE_K
        a_s = tl.load(as_ptrs + k_scale)
        b_s = tl.load(bs_ptrs + k_scale)
        acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = C + rows[:, None] * stride_cm + cols[None, :]
    tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=(rows[:, None] < M) & (cols[None, :] < N))


@dataclass(frozen=True)
class ClassicConfig:
    block_m: int = 64
    block_n: int = 128
    block_k: int = 128
    group_m: int = 32
    num_warps: int = 4
    num_stages: int = 2


#: What engines fall back to without a tuned config file.
CLASSIC_DEFAULT = ClassicConfig()


def classic_block_fp8_matmul(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                             config: ClassicConfig = CLASSIC_DEFAULT, out_dtype: torch.dtype = torch.bfloat16,
                             block_size: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """a [M, K] e4m3, b [N, K] e4m3, a_scale [M, K/128] fp32, b_scale [N/128, K/128] fp32 -> [M, N]."""
    m, k = a.shape
    n = b.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=a.device)
    grid = (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n),)
    _classic_block_fp8_kernel[grid](
        a, b, out, a_scale, b_scale, m, n, k,
        a.stride(0), b.stride(0), out.stride(0), a_scale.stride(0), b_scale.stride(0),
        SCALE_N=block_size[0], SCALE_K=block_size[1],
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out
