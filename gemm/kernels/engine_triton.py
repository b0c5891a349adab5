"""The engines' Triton kernel as tuner backends: ``vllm_triton`` and ``sglang_triton``.

Each runs ``gemm.kernels.classic_triton`` exactly as its engine launches it, over the engine's own
key space: the six keys its config files hold, with the values below (``ENGINE_SPACE``). Every
config engines ship for the H100/H200 lies in it (the CPU tests check the shipped files).

At one point several configs run identically: ``GROUP_SIZE_M`` only orders tiles within groups of
tile rows, so every value at least the number of tile rows ``ceil(M / BLOCK_SIZE_M)`` gives the same
launch. ``canonical`` spells such configs with the largest group of the space, and the space
proposes each config in that spelling, so the tuner times one of them. The largest group is the
one to record: the entry also serves somewhat larger batches, whose extra tile rows it keeps in
one group.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import ClassVar, Iterable

import torch
import triton

from gemm import envs
from gemm.arch import ArchSpec
from gemm.kernels.base import Backend, GemmFn, KernelParams, LaunchError, UnsupportedProblem
from gemm.kernels.classic_triton import ENGINE_DEFAULTS, ClassicParams, engine_launch
from gemm.problem import GemmProblem

#: The engines' key space: values per key, in config-file order (BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K,
#: GROUP_SIZE_M, num_warps, num_stages).
ENGINE_SPACE: dict[str, tuple[int, ...]] = {
    "block_m": (16, 32, 64, 128, 256),
    "block_n": (32, 64, 128, 256),
    "block_k": (64, 128),
    "group_m": (1, 8, 16, 32, 64),
    "num_warps": (4, 8),
    "num_stages": (2, 3, 4, 5),
}
_TILES = (16, 32, 64, 128, 256)
_WARPS = (1, 2, 4, 8, 16, 32)


def engine_static_check(problem: GemmProblem, params: KernelParams) -> str | None:
    """Why the engines' kernel cannot run ``params`` on ``problem`` on any GPU (None if it can)."""
    p = params
    if not isinstance(p, ClassicParams):
        return f"expected ClassicParams, got {type(p).__name__}"
    if p.block_m not in _TILES or p.block_n not in _TILES:
        return f"block_m={p.block_m} and block_n={p.block_n} must be powers of two from 16 to 256"
    if p.block_k not in _TILES or p.block_k > problem.block_k or problem.block_k % p.block_k:
        return (f"block_k={p.block_k} must be a power of two that divides the scale block {problem.block_k} "
                f"(the kernel takes one scale per K step)")
    if p.num_warps not in _WARPS:
        return f"num_warps={p.num_warps} must be a power of two up to 32"
    if p.group_m < 1 or p.num_stages < 1:
        return f"group_m={p.group_m} and num_stages={p.num_stages} must be >= 1"
    return None


class EngineTritonBackend(Backend):
    """The engines' kernel launched as engine ``launch`` launches it (see the module docstring)."""

    launch: ClassVar[str]
    params_type = ClassicParams

    def unavailable_reason(self, device=None) -> str | None:
        if envs.triton_interpret():
            return None
        if not torch.cuda.is_available():
            return "no CUDA device (set TRITON_INTERPRET=1 to run on the CPU interpreter)"
        if torch.cuda.get_device_capability(device) < (8, 9):
            return "FP8 tensor cores need compute capability >= 8.9"
        return None

    def canonical(self, problem: GemmProblem, params: KernelParams) -> KernelParams:
        """``params`` with a group of at least the tile rows spelled as the space's largest group."""
        if not isinstance(params, ClassicParams):
            return params
        tile_rows = math.ceil(problem.m / params.block_m)
        largest = max(ENGINE_SPACE["group_m"])
        if params.group_m >= tile_rows and largest >= tile_rows:
            return dataclasses.replace(params, group_m=largest)
        return params

    def param_space(self, problem: GemmProblem, arch: ArchSpec) -> Iterable[ClassicParams]:
        """Every config of ``ENGINE_SPACE``, canonical at ``problem`` (equivalent ones coincide)."""
        for values in itertools.product(*ENGINE_SPACE.values()):
            yield self.canonical(problem, ClassicParams(*values))

    def check(self, problem: GemmProblem, params: KernelParams, arch: ArchSpec) -> str | None:
        reason = engine_static_check(problem, params)
        if reason is not None:
            return reason
        p = params
        smem = p.num_stages * (p.block_m + p.block_n) * p.block_k  # fp8 A and B tiles per pipeline stage
        if smem > arch.smem_per_block_bytes:
            return f"needs {smem} B of shared memory for {p.num_stages} stages, limit {arch.smem_per_block_bytes}"
        return None

    def default_params(self, problem: GemmProblem, arch: ArchSpec) -> ClassicParams:
        """The engine's own untuned config (BLOCK_SIZE_N and BLOCK_SIZE_K the scale block, as engines set them)."""
        default = ENGINE_DEFAULTS[self.launch]
        return dataclasses.replace(default, block_n=problem.block_n, block_k=problem.block_k)

    def build(self, problem: GemmProblem, params: KernelParams) -> GemmFn:
        reason = engine_static_check(problem, params)
        if reason is not None:
            raise UnsupportedProblem(reason)
        out_dtype, launch = problem.torch_out_dtype, self.launch
        block_size = (problem.block_n, problem.block_k)

        def run(a, b, a_scale, b_scale):
            try:
                return engine_launch(a, b, a_scale, b_scale, params, launch, out_dtype, block_size)
            except triton.runtime.errors.OutOfResources as exc:  # too much shared memory for its stages
                raise LaunchError(f"{params.short()}: {exc}") from exc

        return run


class VllmTritonBackend(EngineTritonBackend):
    """vLLM 0.33.0's block-FP8 Triton kernel and launch."""

    name = "vllm_triton"
    launch = "vllm"


class SglangTritonBackend(EngineTritonBackend):
    """SGLang 0.5.23's block-FP8 Triton kernel and launch."""

    name = "sglang_triton"
    launch = "sglang"
