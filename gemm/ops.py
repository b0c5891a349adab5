"""The tuned op: validate -> pick a backend and params -> run.

``w8a8_block_fp8_matmul`` is registered as the torch custom op
``gemm::w8a8_block_fp8_matmul`` so that ``torch.compile(fullgraph=True)``
treats it as one opaque node and CUDA-graph capture replays its kernel.
"""

from __future__ import annotations

import torch

from gemm import dispatch
from gemm.problem import GemmProblem, dtype_name, validate_inputs


@torch.library.custom_op("gemm::w8a8_block_fp8_matmul", mutates_args=())
def _block_fp8_matmul_op(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                         block_n: int, block_k: int, out_dtype: torch.dtype) -> torch.Tensor:
    m, k = a.shape
    problem = GemmProblem(m, b.shape[0], k, block_n, block_k, dtype_name(out_dtype))
    fn = dispatch.kernel_for(problem, a.device.type, a.device.index)
    return fn(a, b, a_scale, b_scale)


@_block_fp8_matmul_op.register_fake
def _block_fp8_matmul_fake(a, b, a_scale, b_scale, block_n, block_k, out_dtype):
    validate_inputs(a, b, a_scale, b_scale, (block_n, block_k), out_dtype)
    return a.new_empty((a.shape[0], b.shape[0]), dtype=out_dtype)


def w8a8_block_fp8_matmul(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                          block_size=(128, 128), out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Block-scaled FP8 GEMM ``C = (A * a_scale) @ (B * b_scale)^T``.

    Args:
        a: [M, K] torch.float8_e4m3fn activations, unit stride along K (M >= 1).
        b: [N, K] torch.float8_e4m3fn weights, contiguous row-major.
        a_scale: [M, ceil(K/128)] float32, one scale per token per 128 channels: row-major
            (contiguous) or MN-major (``per_token_group_quant_fp8(..., scale_layout="mn_major")``).
        b_scale: [ceil(N/128), ceil(K/128)] float32, contiguous: one scale per 128x128 block.
        block_size: (block_n, block_k) of the weight scales; (128, 128) is supported.
        out_dtype: torch.bfloat16 (default), torch.float16 or torch.float32.
    Returns:
        [M, N] tensor of ``out_dtype`` on the inputs' device.
    Raises:
        GemmInputError: an input has the wrong dtype, shape, layout or device; the
            message names it and says what was expected.

    The kernel and its parameters come from the tuned configs of the current
    GPU (nearest tuned M), or from a documented heuristic when none exist.
    All inputs on CUDA, or on the CPU under ``TRITON_INTERPRET=1``.
    """
    if not torch.compiler.is_compiling():
        validate_inputs(a, b, a_scale, b_scale, block_size, out_dtype)
    block_n, block_k = block_size
    return _block_fp8_matmul_op(a, b, a_scale, b_scale, int(block_n), int(block_k), out_dtype)
