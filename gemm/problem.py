"""The problem descriptor and the validation of the op's inputs.

A block-scaled FP8 GEMM computes ``out[M, N] = (A * sa) @ (B * sb)^T`` where

* ``A`` [M, K] float8_e4m3fn, row-major (K contiguous), activations;
* ``sa`` [M, ceil(K / block_k)] float32, one scale per token per ``block_k`` channels, row-major
  (the DeepSeek layout) or MN-major and TMA-aligned (see ``activation_scale_layout``);
* ``B`` [N, K] float8_e4m3fn, row-major (K contiguous), weights;
* ``sb`` [ceil(N / block_n), ceil(K / block_k)] float32, one scale per block;
* ``out`` [M, N] in bf16 (default), fp16 or fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FP8_DTYPE = torch.float8_e4m3fn
SUPPORTED_BLOCK_SIZES = ((128, 128),)
OUT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class GemmInputError(ValueError):
    """An input of the GEMM is not what the op accepts; the message names the argument."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def out_dtype_from_name(name: str) -> torch.dtype:
    try:
        return OUT_DTYPES[name]
    except KeyError:
        raise GemmInputError(
            f"out_dtype must be one of {sorted(OUT_DTYPES)}, got {name!r}") from None


@dataclass(frozen=True)
class GemmProblem:
    """Sizes of one block-scaled GEMM; ``block_n``/``block_k`` are the weight-scale block."""

    m: int
    n: int
    k: int
    block_n: int = 128
    block_k: int = 128
    out_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        for name in ("m", "n", "k", "block_n", "block_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GemmInputError(f"GemmProblem.{name} must be a positive int, got {value!r}")
        out_dtype_from_name(self.out_dtype)

    @property
    def k_blocks(self) -> int:
        return math.ceil(self.k / self.block_k)

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n / self.block_n)

    @property
    def torch_out_dtype(self) -> torch.dtype:
        return OUT_DTYPES[self.out_dtype]

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    @property
    def min_bytes(self) -> int:
        """Fewest bytes moved: fp8 A and B once, the output once, the fp32 scales once."""
        out_size = self.torch_out_dtype.itemsize
        scales = 4 * (self.m * self.k_blocks + self.n_blocks * self.k_blocks)
        return self.n * self.k + self.m * self.k + out_size * self.m * self.n + scales

    def with_m(self, m: int) -> "GemmProblem":
        return GemmProblem(m, self.n, self.k, self.block_n, self.block_k, self.out_dtype)

    def transposed(self) -> "GemmProblem":
        """The sizes of D^T = B A^T (M and N exchanged), what a swap-AB kernel's MMA computes."""
        return GemmProblem(self.n, self.m, self.k, self.block_n, self.block_k, self.out_dtype)

    def __str__(self) -> str:
        return f"M={self.m} N={self.n} K={self.k}"


SCALE_LAYOUTS = ("row_major", "mn_major")


def activation_scale_layout(a_scale: torch.Tensor) -> tuple[str, int]:
    """``(layout, leading dimension)`` of activation scales ``a_scale`` [M, kb].

    * ``"row_major"``: unit stride along kb, rows ``stride(0) >= kb`` apart (the quantizer's default);
    * ``"mn_major"``: unit stride along M, element (m, kb) at ``kb * ld + m`` with ``ld = stride(1)``
      a multiple of 4 and >= M, base 16-byte aligned: what ``per_token_group_quant_fp8(...,
      scale_layout="mn_major")`` writes and TMA can load.

    GemmInputError naming ``a_scale`` and both accepted layouts for anything else.
    """
    m, kb = a_scale.shape
    if a_scale.stride(1) == 1 and (a_scale.stride(0) >= kb or m == 1):
        return "row_major", max(a_scale.stride(0), kb)
    if (a_scale.stride(0) == 1 and a_scale.stride(1) >= m and a_scale.stride(1) % 4 == 0
            and a_scale.data_ptr() % 16 == 0):
        return "mn_major", a_scale.stride(1)
    raise GemmInputError(
        f"a_scale must be row-major [M, K/128] (strides (K/128, 1)) or MN-major with a leading dimension that "
        f"is a multiple of 4 and >= M (strides (1, roundup(M, 4)), 16-byte aligned, as "
        f"per_token_group_quant_fp8(..., scale_layout='mn_major') writes); got strides {a_scale.stride()}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise GemmInputError(message)


def _check_block_size(block_size) -> tuple[int, int]:
    try:
        block = tuple(int(v) for v in block_size)
    except (TypeError, ValueError):
        raise GemmInputError(
            f"block_size must be a pair (block_n, block_k), got {block_size!r}") from None
    _require(len(block) == 2, f"block_size must be a pair (block_n, block_k), got {block_size!r}")
    _require(block in SUPPORTED_BLOCK_SIZES,
             f"block_size {list(block)} is not supported; supported: "
             f"{[list(b) for b in SUPPORTED_BLOCK_SIZES]}")
    return block


def validate_inputs(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor,
                    b_scale: torch.Tensor, block_size=(128, 128),
                    out_dtype: torch.dtype = torch.bfloat16) -> GemmProblem:
    """Check every input of ``w8a8_block_fp8_matmul`` and return its problem.

    Raises GemmInputError naming the argument and what was expected.
    Layout requirements: ``a`` has a unit stride along K (its row stride may be
    larger than K, e.g. a slice of a wider buffer); ``b`` and ``b_scale`` are
    contiguous row-major; ``a_scale`` is row-major or MN-major
    (``activation_scale_layout``).
    """
    tensors = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale}
    for name, t in tensors.items():
        _require(isinstance(t, torch.Tensor), f"{name} must be a torch.Tensor, got {type(t).__name__}")
    block_n, block_k = _check_block_size(block_size)
    _require(out_dtype in OUT_DTYPES.values(),
             f"out_dtype must be one of torch.bfloat16, torch.float16, torch.float32, got {out_dtype}")
    for name in ("a", "b"):
        t = tensors[name]
        _require(t.dtype == FP8_DTYPE, f"{name} must have dtype torch.float8_e4m3fn, got {t.dtype}")
        _require(t.dim() == 2, f"{name} must be 2-D, got {t.dim()}-D with shape {tuple(t.shape)}")
    m, k = a.shape
    n, kb = b.shape
    _require(kb == k, f"b must have shape [N, K] with K = a.shape[1] = {k}, got {tuple(b.shape)}")
    _require(m >= 1 and n >= 1 and k >= 1, f"a and b must be non-empty, got a {tuple(a.shape)}, b {tuple(b.shape)}")
    problem = GemmProblem(m, n, k, block_n, block_k, dtype_name(out_dtype))
    for name, shape in (("a_scale", (m, problem.k_blocks)), ("b_scale", (problem.n_blocks, problem.k_blocks))):
        t = tensors[name]
        _require(t.dtype == torch.float32, f"{name} must have dtype torch.float32, got {t.dtype}")
        _require(tuple(t.shape) == shape,
                 f"{name} must have shape {list(shape)} for a {tuple(a.shape)}, b {tuple(b.shape)} "
                 f"and block_size {[block_n, block_k]}, got {list(t.shape)}")
        if name == "b_scale":
            _require(t.is_contiguous(), f"{name} must be contiguous (row-major), got strides {t.stride()}")
        else:
            activation_scale_layout(t)
    _require(a.stride(1) == 1 and a.stride(0) >= k,
             f"a must be row-major with unit stride along K, got strides {a.stride()}")
    _require(b.is_contiguous(), f"b must be contiguous (row-major [N, K]), got strides {b.stride()}")
    device = a.device
    for name, t in tensors.items():
        _require(t.device == device, f"{name} is on {t.device} but a is on {device}; all inputs must share a device")
    return problem
