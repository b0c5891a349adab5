"""The engines' block-FP8 Triton kernel, launched the way each engine launches it.

What it mirrors, as read in the engines' sources (this is our own code; the behaviour is theirs):

* **vLLM 0.33.0**: the kernel ``_w8a8_triton_block_scaled_mm`` and its launcher
  ``w8a8_triton_block_scaled_mm`` (``vllm/model_executor/layers/quantization/utils/fp8_utils.py``),
  which vLLM runs for block-FP8 linear layers with ``--linear-backend triton``;
* **SGLang 0.5.23**: ``_w8a8_block_fp8_matmul`` and ``w8a8_block_fp8_matmul_triton``
  (``sglang/kernels/ops/gemm/fp8_kernel.py``), run with ``--fp8-gemm-backend triton`` for configs
  without SGLang's Hopper-only ``SWAP_AB``/``SPLIT_K`` keys.

Both engines' kernels, and this one (``launch="vllm"`` or ``"sglang"``):

* one program per output tile on a 1-D grid of ``cdiv(M, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N)``;
* tiles ordered in groups of ``GROUP_SIZE_M`` tile rows; inside a group the tile row is the program id
  itself modulo the group's row count (not the id's offset inside its group: the engines' order,
  which differs from the usual one only in a last, partial group), the tile column the offset
  inside the group divided by that row count;
* rows past M and columns past N wrap around (``% M``, ``% N``), so A and B loads are masked in K only;
  stores are masked to M x N;
* per K step of BLOCK_SIZE_K, ``acc += dot(a, b) * a_s[:, None] * b_s[None, :]`` in fp32 with
  ``a_s`` the rows' activation scales and ``b_s`` the columns' weight scales (column n takes weight
  scale row ``n // group_n``) of scale column ``k // group_k``; BLOCK_SIZE_K therefore divides
  ``group_k``;
* sizes, the scale block (``group_n``, ``group_k``) and every stride are runtime arguments, passed as
  the engines pass them: A ``(stride_am, stride_ak)``, B read as K x N (``stride_bk = b.stride(1)``,
  ``stride_bn = b.stride(0)``), C ``(m, n)``, the activation scales ``(m, k)``, the weight scales as
  K x N (``bs.stride(1)``, ``bs.stride(0)``), so Triton specializes them the same way;
* the output is allocated like A (``new_empty``) in the requested dtype and the accumulator cast to it.

Where SGLang's kernel differs (``launch="sglang"``): K loads are unmasked when ``K % BLOCK_SIZE_K == 0``
(its ``needs_masking`` constexpr), and the scale pointers advance by one scale column every
``group_k // BLOCK_SIZE_K`` steps instead of being indexed at each step.

Engines run ``ENGINE_DEFAULTS`` for a shape without a tuned file. The kernel runs under
``TRITON_INTERPRET=1`` too (CPU tensors), which is how the CPU tests check it.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from gemm.kernels.base import KernelParams

#: How each engine launches the kernel (see the module docstring).
LAUNCHES = ("vllm", "sglang")


@triton.jit
def _engine_block_fp8_kernel(
    A, B, C, As, Bs, M, N, K, group_n, group_k,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    stride_as_m, stride_as_k, stride_bs_k, stride_bs_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    MASK_K: tl.constexpr, STEP_SCALES: tl.constexpr,
):
    pid = tl.program_id(axis=0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_row = (pid // per_group) * GROUP_M
    rows_here = min(tiles_m - first_row, GROUP_M)
    tile_m = first_row + pid % rows_here  # the engines' order: the id itself, not its offset in the group
    tile_n = (pid % per_group) // rows_here

    rows = (tile_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    cols = (tile_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = A + rows[:, None] * stride_am + ks[None, :] * stride_ak
    b_ptrs = B + ks[:, None] * stride_bk + cols[None, :] * stride_bn
    as_ptrs = As + rows * stride_as_m
    bs_ptrs = Bs + (cols // group_n) * stride_bs_n
    steps_per_scale = group_k // BLOCK_K

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        if MASK_K:
            k_left = K - step * BLOCK_K
            a = tl.load(a_ptrs, mask=ks[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=ks[:, None] < k_left, other=0.0)
        else:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        if STEP_SCALES:
            a_s = tl.load(as_ptrs)
            b_s = tl.load(bs_ptrs)
        else:
            scale_col = step * BLOCK_K // group_k
            a_s = tl.load(as_ptrs + scale_col * stride_as_k)
            b_s = tl.load(bs_ptrs + scale_col * stride_bs_k)
        acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
        if STEP_SCALES:
            next_col = tl.where((step + 1) % steps_per_scale == 0, 1, 0)
            as_ptrs += next_col * stride_as_k
            bs_ptrs += next_col * stride_bs_k

    out = acc.to(C.dtype.element_ty)
    out_rows = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    out_cols = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = C + out_rows[:, None] * stride_cm + out_cols[None, :] * stride_cn
    tl.store(c_ptrs, out, mask=(out_rows[:, None] < M) & (out_cols[None, :] < N))


@dataclasses.dataclass(frozen=True)
class ClassicParams(KernelParams):
    """One engine config: ``BLOCK_SIZE_M/N/K``, ``GROUP_SIZE_M``, ``num_warps``, ``num_stages`` under the
    field names of ``TritonParams`` (so the cost model and the tables read both alike). The defaults are
    vLLM's untuned config."""

    block_m: int = 64
    block_n: int = 128
    block_k: int = 128
    group_m: int = 32
    num_warps: int = 4
    num_stages: int = 2


#: What each engine runs for a shape it has no tuned file for (scale block 128 x 128).
ENGINE_DEFAULTS = {"vllm": ClassicParams(), "sglang": ClassicParams(num_stages=3)}
#: vLLM's untuned config, the ``classic_default`` peer of ``gemm bench``.
CLASSIC_DEFAULT = ENGINE_DEFAULTS["vllm"]


def engine_launch(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                  params: ClassicParams, launch: str = "vllm", out_dtype: torch.dtype = torch.bfloat16,
                  block_size: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """Run the kernel as engine ``launch`` ("vllm" or "sglang") runs it.

    a [M, K] e4m3 (contiguous, as both engines require), b [N, K] e4m3, a_scale [M, ceil(K/bk)] fp32
    in any strides, b_scale [ceil(N/bn), ceil(K/bk)] fp32, ``block_size`` = (bn, bk) the weight-scale
    block -> [M, N] ``out_dtype``. Inputs are not validated (the engines assert them; see
    ``gemm.problem.validate_inputs``).
    """
    if launch not in LAUNCHES:
        raise ValueError(f"launch must be one of {list(LAUNCHES)}, got {launch!r}")
    m = a.numel() // a.shape[-1]
    n, k = b.shape
    p = params
    c = a.new_empty((m, n), dtype=out_dtype)
    grid = (triton.cdiv(m, p.block_m) * triton.cdiv(n, p.block_n),)
    _engine_block_fp8_kernel[grid](
        a, b, c, a_scale, b_scale, m, n, k, block_size[0], block_size[1],
        a.stride(-2), a.stride(-1), b.stride(1), b.stride(0), c.stride(-2), c.stride(-1),
        a_scale.stride(-2), a_scale.stride(-1), b_scale.stride(1), b_scale.stride(0),
        BLOCK_M=p.block_m, BLOCK_N=p.block_n, BLOCK_K=p.block_k, GROUP_M=p.group_m,
        MASK_K=launch == "vllm" or k % p.block_k != 0, STEP_SCALES=launch == "sglang",
        num_warps=p.num_warps, num_stages=p.num_stages,
    )
    return c


def classic_block_fp8_matmul(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                             config: ClassicParams = CLASSIC_DEFAULT, out_dtype: torch.dtype = torch.bfloat16,
                             block_size: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """vLLM's launch of the kernel: a [M, K] e4m3, b [N, K] e4m3, a_scale [M, K/128] fp32,
    b_scale [N/128, K/128] fp32 -> [M, N] ``out_dtype``."""
    return engine_launch(a, b, a_scale, b_scale, config, "vllm", out_dtype, block_size)
