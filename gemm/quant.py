"""FP8 (e4m3) quantization in the DeepSeek-V3 recipe, in plain torch.

* Activations: one fp32 scale per token per ``group_size`` channels.
* Weights: one fp32 scale per ``block_n x block_k`` block.

Both handle ragged sizes (K or N not a multiple of the group/block): the last
group/block is simply narrower. Scales are ``amax / 448`` (448 is e4m3's
largest finite value), floored at ``eps`` so all-zero groups stay finite.
"""

from __future__ import annotations

import math

import torch

from gemm.problem import FP8_DTYPE, SCALE_LAYOUTS, GemmInputError

FP8_MAX = float(torch.finfo(FP8_DTYPE).max)


def _pad_to(x: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    size = x.shape[dim]
    padded = math.ceil(size / multiple) * multiple
    if padded == size:
        return x
    pad = [0, 0] * x.dim()
    pad[2 * (x.dim() - 1 - dim) + 1] = padded - size
    return torch.nn.functional.pad(x, pad)


def _check_float_2d(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise GemmInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise GemmInputError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point or x.dtype.itemsize < 2:
        raise GemmInputError(f"{name} must be a float16/bfloat16/float32 tensor, got {x.dtype}")


def per_token_group_quant_fp8(x: torch.Tensor, group_size: int = 128, eps: float = 1e-10,
                              scale_layout: str = "row_major") -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize activations per token and per ``group_size`` channels.

    Args:
        x: [M, K] float tensor (fp16, bf16 or fp32), any device.
        scale_layout: ``"row_major"`` (default, the DeepSeek layout: scales contiguous
            [M, G]) or ``"mn_major"``: the [M, G] scales are a view with strides
            (1, roundup(M, 4)) of a [G, roundup(M, 4)] buffer, so each group's scales
            are contiguous along M and 16-byte aligned, the layout TMA loads directly
            (the Hopper kernel reads it without a transpose).
    Returns:
        ``(x_fp8, scales)``: x_fp8 [M, K] float8_e4m3fn contiguous, scales
        [M, G = ceil(K / group_size)] float32 in ``scale_layout``, with
        ``x ~= x_fp8 * scales`` broadcast over each group.
    """
    _check_float_2d("x", x)
    if not isinstance(group_size, int) or group_size < 1:
        raise GemmInputError(f"group_size must be a positive int, got {group_size!r}")
    if scale_layout not in SCALE_LAYOUTS:
        raise GemmInputError(f"scale_layout must be one of {list(SCALE_LAYOUTS)}, got {scale_layout!r}")
    m, k = x.shape
    groups = math.ceil(k / group_size)
    xf = _pad_to(x.float(), 1, group_size).view(m, groups, group_size)
    q_fp8 = torch.empty((m, groups * group_size), dtype=FP8_DTYPE, device=x.device)
    if scale_layout == "mn_major":
        pad = (m + 3) // 4 * 4
        buffer = torch.empty((groups, pad), dtype=torch.float32, device=x.device)
        buffer[:, m:] = 1.0  # padding columns: finite, never read as a row's scale
        scales = buffer[:, :m].t()
    else:
        scales = torch.empty((m, groups), dtype=torch.float32, device=x.device)
    # The group reduction writes the chosen layout, so MN-major scales need no transposed copy afterwards.
    torch.amax(xf.abs(), dim=2, out=scales)
    scales.div_(FP8_MAX).clamp_min_(eps)
    q_fp8.view(m, groups, group_size).copy_((xf / scales[:, :, None]).clamp(-FP8_MAX, FP8_MAX))
    return q_fp8[:, :k].contiguous() if k % group_size else q_fp8, scales


def mn_major_scales(a_scale: torch.Tensor) -> torch.Tensor:
    """Activation scales [M, G] fp32 (any layout) as the MN-major, TMA-aligned view that
    ``per_token_group_quant_fp8(..., scale_layout="mn_major")`` returns: strides (1, roundup(M, 4)),
    same values, one copy."""
    if not isinstance(a_scale, torch.Tensor) or a_scale.dim() != 2:
        raise GemmInputError(f"a_scale must be a 2-D tensor [M, K/128], got {getattr(a_scale, 'shape', a_scale)!r}")
    m, groups = a_scale.shape
    buffer = torch.empty((groups, (m + 3) // 4 * 4), dtype=torch.float32, device=a_scale.device)
    buffer[:, m:] = 1.0  # padding columns: finite, never read as a row's scale
    buffer[:, :m] = a_scale.t()
    return buffer[:, :m].t()


def per_block_quant_fp8(w: torch.Tensor, block_size: tuple[int, int] = (128, 128),
                        eps: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize weights per ``block_n x block_k`` block.

    Args:
        w: [N, K] float tensor (fp16, bf16 or fp32), any device.
        block_size: (block_n, block_k).
    Returns:
        ``(w_fp8, scales)``: w_fp8 [N, K] float8_e4m3fn contiguous, scales
        [ceil(N / block_n), ceil(K / block_k)] float32 contiguous.
    """
    _check_float_2d("w", w)
    try:
        block_n, block_k = (int(v) for v in block_size)
    except (TypeError, ValueError):
        raise GemmInputError(f"block_size must be a pair (block_n, block_k), got {block_size!r}") from None
    if block_n < 1 or block_k < 1:
        raise GemmInputError(f"block_size entries must be positive, got {block_size!r}")
    n, k = w.shape
    nb, kb = math.ceil(n / block_n), math.ceil(k / block_k)
    wf = _pad_to(_pad_to(w.float(), 0, block_n), 1, block_k)
    blocks = wf.view(nb, block_n, kb, block_k)
    scales = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp_min(eps)
    q = (blocks / scales[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q.view(nb * block_n, kb * block_k)[:n, :k].contiguous(), scales.contiguous()


def random_problem_inputs(m: int, n: int, k: int, block_size: tuple[int, int] = (128, 128),
                          device="cpu", seed: int | None = None):
    """Fresh random quantized inputs ``(a, b, a_scale, b_scale)`` for an [M, N, K] problem.

    Values are normal with a per-row and per-block magnitude spread, so scales
    differ across groups (a wrong scale index changes the result).
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed if seed is not None else torch.seed() % (2**63))
    a = torch.randn(m, k, generator=gen) * torch.rand(m, 1, generator=gen).add_(0.25)
    b = torch.randn(n, k, generator=gen) * torch.rand(1, k, generator=gen).add_(0.25) * 0.05
    a_fp8, a_scale = per_token_group_quant_fp8(a.to(device), block_size[1])
    b_fp8, b_scale = per_block_quant_fp8(b.to(device), block_size)
    return a_fp8, b_fp8, a_scale, b_scale
