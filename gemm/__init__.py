"""gemm: block-scaled FP8 GEMM kernels, a verifying tuner and tuned configs.

Public API:

* ``w8a8_block_fp8_matmul(a, b, a_scale, b_scale, block_size=(128, 128), out_dtype=torch.bfloat16)``
* ``per_token_group_quant_fp8``, ``per_block_quant_fp8`` (re-exported from ``gemm.quant``)
* ``GemmInputError``, ``GemmProblem``
"""

from gemm.ops import w8a8_block_fp8_matmul
from gemm.problem import GemmInputError, GemmProblem
from gemm.quant import per_block_quant_fp8, per_token_group_quant_fp8

__all__ = [
    "GemmInputError",
    "GemmProblem",
    "per_block_quant_fp8",
    "per_token_group_quant_fp8",
    "w8a8_block_fp8_matmul",
]
__version__ = "0.1.0"
