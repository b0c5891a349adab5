"""The tuned op: validate -> pick a backend and params -> run.

``w8a8_block_fp8_matmul`` is registered as the torch custom op
``gemm::w8a8_block_fp8_matmul`` so that ``torch.compile(fullgraph=True)``
treats it as one opaque node and CUDA-graph capture replays its kernel.

Scales are multiplied in as they are: a NaN or inf scale gives NaN or inf
outputs (in every column, or row, the scale block covers) without an error,
as in engines' kernels. ``check_scales=True`` (or ``GEMM_CHECK_SCALES=1``)
raises ``GemmInputError`` naming the scale tensor instead; it costs one
``isfinite`` reduction per scale tensor and a device-to-host sync per call, and
is skipped while ``torch.compile`` traces or a CUDA graph is being captured
(no host sync is allowed there; check before capturing).
"""

from __future__ import annotations

import torch

from gemm import dispatch, envs
from gemm.problem import GemmInputError, GemmProblem, dtype_name, validate_inputs


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


def _capturing() -> bool:
    """True while the current CUDA stream captures a graph (where no host sync is allowed)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def check_finite_scales(a_scale: torch.Tensor, b_scale: torch.Tensor) -> None:
    """GemmInputError naming the scale tensor that holds a NaN or inf value (one reduction each, and a sync)."""
    for name, scales in (("a_scale", a_scale), ("b_scale", b_scale)):
        if not bool(torch.isfinite(scales).all()):
            bad = int((~torch.isfinite(scales)).sum())
            raise GemmInputError(f"{name} holds {bad} NaN or inf value(s) of {scales.numel()}; every scale must be "
                                 f"finite (the output would be NaN/inf where they apply)")


def w8a8_block_fp8_matmul(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                          block_size=(128, 128), out_dtype: torch.dtype = torch.bfloat16,
                          check_scales: bool | None = None) -> torch.Tensor:
    """Block-scaled FP8 GEMM ``C = (A * a_scale) @ (B * b_scale)^T``.

    Args:
        a: [M, K] torch.float8_e4m3fn activations, unit stride along K (M >= 1).
        b: [N, K] torch.float8_e4m3fn weights, contiguous row-major.
        a_scale: [M, ceil(K/128)] float32, one scale per token per 128 channels: row-major
            (contiguous) or MN-major (``per_token_group_quant_fp8(..., scale_layout="mn_major")``).
        b_scale: [ceil(N/128), ceil(K/128)] float32, contiguous: one scale per 128x128 block.
        block_size: (block_n, block_k) of the weight scales; (128, 128) is supported.
        out_dtype: torch.bfloat16 (default), torch.float16 or torch.float32.
        check_scales: raise GemmInputError when a scale is NaN or inf (None: ``GEMM_CHECK_SCALES``, off
            by default). Costs a reduction and a host sync per call; skipped under torch.compile and
            while a CUDA graph is captured. Unchecked, NaN/inf scales give NaN/inf outputs silently.
    Returns:
        [M, N] tensor of ``out_dtype`` on the inputs' device.
    Raises:
        GemmInputError: an input has the wrong dtype, shape, layout or device (or, when
            checked, a scale is not finite); the message names it and says what was expected.

    The kernel and its parameters come from the tuned configs of the current
    GPU (nearest tuned M), or from a documented heuristic when none exist.
    All inputs on CUDA, or on the CPU under ``TRITON_INTERPRET=1``.
    """
    if not torch.compiler.is_compiling():
        validate_inputs(a, b, a_scale, b_scale, block_size, out_dtype)
        if (envs.check_scales() if check_scales is None else check_scales) and not _capturing():
            check_finite_scales(a_scale, b_scale)
    block_n, block_k = block_size
    return _block_fp8_matmul_op(a, b, a_scale, b_scale, int(block_n), int(block_k), out_dtype)
