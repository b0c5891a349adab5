"""CPU tests run Triton kernels through its interpreter: switch it on before triton is imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
