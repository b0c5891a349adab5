"""Measuring for the benchmark: cold-L2 CUDA-graph timing, input sets, the device's ceilings and floors.

Timing follows PERFORMANCE.md: each call is captured in a CUDA graph (engines
replay graphs, so host launch overhead is not the kernel's cost), and the graph
cycles over enough distinct input copies that together they exceed twice the
L2, so weights are read cold from HBM as in a real forward pass.
"""

from __future__ import annotations

import math
import shlex
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import triton

import gemm
from gemm.kernels.base import BackendUnavailable
from gemm.kernels.nvcc.toolchain import find_toolchain
from gemm.quant import random_problem_inputs
from gemm.tuner.timing import copies_for, replay_samples_us


@dataclass(frozen=True)
class Timing:
    us: float          # median microseconds per call
    spread: float      # (p80 - p20) / median over the repetitions


def cold_l2_copies(bytes_per_set: int, l2_bytes: int, cap: int = 96) -> int:
    """How many distinct input sets make the rotation exceed twice the L2."""
    return min(cap, copies_for(bytes_per_set, l2_bytes))


def graph_time_us(fn: Callable, arg_sets: Sequence[tuple], reps: int = 15) -> Timing:
    """Median time per call of ``fn(*args)`` replayed in a CUDA graph that cycles ``arg_sets``.

    Few arg sets (large problems) are repeated so that one replay holds at least 12 calls.
    """
    sets = list(arg_sets) * max(1, -(-12 // len(arg_sets)))
    samples, _ = replay_samples_us(fn, sets, reps)
    samples.sort()
    median = statistics.median(samples)
    lo, hi = samples[int(0.2 * (len(samples) - 1))], samples[int(0.8 * (len(samples) - 1))]
    return Timing(median, (hi - lo) / median)


def make_input_sets(m: int, n: int, k: int, copies: int, device="cuda", seed: int = 0):
    """``copies`` independent (a, b, a_scale, b_scale) sets: one fresh quantized set, cloned."""
    base = random_problem_inputs(m, n, k, device=device, seed=seed)
    return [base] + [tuple(t.clone() for t in base) for _ in range(copies - 1)]


# ----------------------------------------------------------------------------- ceilings

@dataclass(frozen=True)
class Ceilings:
    fp8_tflops: float     # cuBLAS per-tensor FP8 at size^3
    bf16_tflops: float    # torch.matmul bf16 at size^3
    copy_tbps: float      # elementwise copy kernel, bytes read + written
    size: int = 8192      # M = N = K of the two GEMMs


def measure_ceilings(size: int = 8192) -> Ceilings:
    a = torch.randn(size, size, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(size, size, device="cuda").to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda")
    fp8 = graph_time_us(lambda x, y: torch._scaled_mm(x, y.t(), scale_a=one, scale_b=one,
                                                      out_dtype=torch.bfloat16), [(a, b)], reps=10)
    ab, bb = torch.randn(size, size, device="cuda", dtype=torch.bfloat16), torch.randn(
        size, size, device="cuda", dtype=torch.bfloat16)
    bf16 = graph_time_us(torch.matmul, [(ab, bb)], reps=10)
    src = torch.randn(2**28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    # A kernel copy (mul by 1): a graph-captured copy_ becomes a slower memcpy node.
    copy = graph_time_us(lambda s, d: torch.mul(s, 1.0, out=d), [(src, dst)], reps=10)
    flops = 2 * size**3
    return Ceilings(flops / fp8.us / 1e6, flops / bf16.us / 1e6, 2 * src.numel() * 4 / copy.us / 1e6, size)


def run_info(device_name: str, ceilings: Ceilings, command: list[str]) -> dict:
    """What ``ceilings.json`` records of a run: device, software versions, measured ceilings, command line.

    ``command`` is the argv of the run; CUTLASS and nvcc versions are included where a toolchain is found.
    """
    info = dict(device=device_name, fp8_tflops=ceilings.fp8_tflops, bf16_tflops=ceilings.bf16_tflops,
                copy_tbps=ceilings.copy_tbps, ceiling_size=ceilings.size,
                torch=torch.__version__, cuda=torch.version.cuda,
                triton=triton.__version__, gemm=gemm.__version__)
    try:
        toolchain = find_toolchain()
        info.update(cutlass=toolchain.cutlass.version_string, nvcc=toolchain.nvcc_version)
    except BackendUnavailable:
        pass  # no CUTLASS toolchain: the run had no CUTLASS kernels to build
    info["command"] = shlex.join(command)
    return info


def floor_us(m: int, n: int, k: int, ceilings: Ceilings) -> float:
    """max(compute time at the FP8 ceiling, minimum bytes at the copy bandwidth)."""
    flops = 2 * m * n * k
    kb, nb = math.ceil(k / 128), math.ceil(n / 128)
    min_bytes = n * k + m * k + 2 * m * n + 4 * (m * kb + nb * kb)
    return max(flops / (ceilings.fp8_tflops * 1e6), min_bytes / (ceilings.copy_tbps * 1e6))
