"""The fp32 dequantize-then-matmul reference and the error metric every kernel is judged by."""

from __future__ import annotations

import math

import torch

#: Relative Frobenius error a bf16-output kernel must stay under.
BF16_TOLERANCE = 1e-2


def dequantize_activation(a: torch.Tensor, a_scale: torch.Tensor, group_size: int = 128) -> torch.Tensor:
    """[M, K] e4m3 with [M, ceil(K/g)] scales -> [M, K] float32."""
    k = a.shape[1]
    expanded = a_scale.float().repeat_interleave(group_size, dim=1)[:, :k]
    return a.float() * expanded


def dequantize_weight(b: torch.Tensor, b_scale: torch.Tensor, block_size=(128, 128)) -> torch.Tensor:
    """[N, K] e4m3 with [ceil(N/bn), ceil(K/bk)] scales -> [N, K] float32."""
    block_n, block_k = block_size
    n, k = b.shape
    expanded = (b_scale.float().repeat_interleave(block_n, dim=0)[:n]
                .repeat_interleave(block_k, dim=1)[:, :k])
    return b.float() * expanded


def reference_matmul(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                     block_size=(128, 128)) -> torch.Tensor:
    """Exact-as-fp32 result [M, N] float32 of the block-scaled GEMM ``A @ B^T``.

    Computed on the inputs' device with TF32 disabled, so it is a true fp32 product.
    """
    a32 = dequantize_activation(a, a_scale, block_size[1])
    b32 = dequantize_weight(b, b_scale, block_size)
    if a32.is_cuda:
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            return a32 @ b32.t()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    return a32 @ b32.t()


#: Elements per fp64 chunk when comparing outputs: 2**24 (128 MiB), so checking a large output
#: (8192 x 36864) costs a few hundred MiB, not three fp64 copies of the whole matrix.
CHUNK_ELEMENTS = 2**24


def fp64_row_chunks(out: torch.Tensor, ref: torch.Tensor, chunk_elements: int | None = None):
    """Yield ``(out_rows, ref_rows)`` as fp64 blocks of whole rows of two [M, N] tensors, on ``out``'s device.

    Each block holds about ``chunk_elements`` (default ``CHUNK_ELEMENTS``) elements, at least one row.
    """
    if out.dim() < 2:
        yield out.double(), ref.to(device=out.device, dtype=torch.float64)
        return
    chunk_elements = CHUNK_ELEMENTS if chunk_elements is None else chunk_elements
    rows = out.shape[0]
    step = max(1, chunk_elements // max(1, out.numel() // max(1, rows)))
    for start in range(0, rows, step):
        yield (out[start:start + step].double(),
               ref[start:start + step].to(device=out.device, dtype=torch.float64))


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref||_F / ||ref||_F`` in fp64; ``inf`` if ``out`` holds NaN or Inf.

    Shapes must match exactly. Computed over blocks of rows (``fp64_row_chunks``) to bound memory.
    """
    if tuple(out.shape) != tuple(ref.shape):
        raise ValueError(f"output shape {tuple(out.shape)} differs from reference shape {tuple(ref.shape)}")
    num_sq = den_sq = 0.0
    for o, r in fp64_row_chunks(out, ref):
        if not bool(torch.isfinite(o).all()):
            return math.inf
        num_sq += float(torch.sum(torch.square(o - r)))
        den_sq += float(torch.sum(torch.square(r)))
    num, denom = math.sqrt(num_sq), math.sqrt(den_sq)
    if denom == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / denom


def tolerance_for(out_dtype: torch.dtype) -> float:
    """Error bound for an output dtype: 1e-2 for bf16; tighter for fp16 and fp32 outputs."""
    return {torch.bfloat16: BF16_TOLERANCE, torch.float16: 5e-3, torch.float32: 1e-3}[out_dtype]
