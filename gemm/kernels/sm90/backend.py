"""The project's Hopper FP8 GEMM (``fp8_gemm.cuh``) as a tuner/op backend ("sm90").

The tile shape is the main knob: BLOCK_N is any multiple of 16, so the
number of output tiles can be fitted to the 132 SMs (N = 7168 at M = 1024:
448 tiles of 128x128 are 3.4 waves, 128x112 tiles 512 = 3.9 waves), where the
CUTLASS and cuBLAS kernels offer powers of two. The rest (cluster pairs with
multicast, the order tiles are walked in) are run-time options of one build.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from gemm.arch import ArchSpec
from gemm.kernels.base import Backend, BackendUnavailable, GemmFn, KernelParams, UnsupportedProblem
from gemm.kernels.nvcc import hopper, jit
from gemm.kernels.sm90 import codegen, launcher
from gemm.kernels.sm90.params import (CLUSTERS, MAX_ACCUMULATORS_PER_THREAD, OUT_DTYPES, SM90_SMEM_BYTES, Sm90Params,
                                      accumulators_per_thread, shared_memory_bytes, stages_that_fit)
from gemm.problem import GemmProblem

#: BLOCK_N values the tuner tries (every multiple of 16 builds; these cover the useful wave counts).
SEARCH_BLOCK_NS = (32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208)
#: Tiles a CTA walks per group in the default order (groups of 8 tiles along M share B tiles in L2).
DEFAULT_GROUP = 8


def tiles(problem: GemmProblem, block_m: int, block_n: int) -> int:
    return math.ceil(problem.m / block_m) * math.ceil(problem.n / block_n)


def wave_efficiency(problem: GemmProblem, block_m: int, block_n: int, num_sms: int) -> float:
    """Fraction of the SM-slots of the waves that hold useful tiles (1.0: the last wave is full)."""
    count = tiles(problem, block_m, block_n)
    return count / (math.ceil(count / num_sms) * num_sms)


def estimated_cost(problem: GemmProblem, block_m: int, block_n: int, num_sms: int) -> float:
    """Relative run time of a tile shape: waves x per-tile work, where narrow tiles pay for re-reading
    operands from shared memory (a documented heuristic for ``default_params``, not a fitted model)."""
    count = tiles(problem, block_m, block_n)
    waves = math.ceil(count / num_sms)
    rows = min(block_m, max(problem.m, 16))  # rows that do useful work at small M
    per_tile = rows * block_n * (1.0 + 48.0 / block_n + 24.0 / block_m)
    return waves * per_tile


class Sm90Backend(Backend):
    """Persistent, warp-specialized TMA + FP8 wgmma GEMM with fp32 promotion per 128-deep K block."""

    name = "sm90"
    params_type = Sm90Params

    # ------------------------------------------------------------------ availability

    def unavailable_reason(self, device=None) -> str | None:
        return hopper.unavailable_reason("the Hopper kernels", device)

    # ------------------------------------------------------------------ constraints

    def check(self, problem: GemmProblem, params: KernelParams, arch: ArchSpec | None) -> str | None:
        """Why ``params`` cannot run ``problem`` (None if it can). ``arch`` None skips the GPU checks."""
        p = params
        if not isinstance(p, Sm90Params):
            return f"expected Sm90Params, got {type(p).__name__}"
        reason = hopper.problem_reason(problem, arch, "the Hopper kernels", OUT_DTYPES)
        if reason:
            return reason
        if problem.n % 8:
            return f"N={problem.n} must be a multiple of 8 (TMA stores 16-byte rows of the output)"
        accumulators = accumulators_per_thread(p.block_m, p.block_n, p.overlap)
        if accumulators > MAX_ACCUMULATORS_PER_THREAD:
            return (f"a {p.block_m}x{p.block_n} tile{' with overlap' if p.overlap else ''} needs {accumulators} "
                    f"fp32 accumulators per consumer thread; more than {MAX_ACCUMULATORS_PER_THREAD} spill to local "
                    f"memory{' (overlap=false needs fewer)' if p.overlap else ''}")
        limit = arch.smem_per_block_bytes if arch is not None else SM90_SMEM_BYTES
        stages = p.stages or stages_that_fit(p.block_m, p.block_n, problem.out_dtype, limit)
        if stages < 2:
            return f"not even two pipeline stages of a {p.block_m}x{p.block_n} tile fit in {limit} B of shared memory"
        smem = shared_memory_bytes(p.block_m, p.block_n, stages, problem.out_dtype)
        if smem > limit:
            return f"{stages} stages of a {p.block_m}x{p.block_n} tile need {smem} B of shared memory, limit {limit}"
        m_tiles, n_tiles = math.ceil(problem.m / p.block_m), math.ceil(problem.n / p.block_n)
        if p.cluster_m == 2 and m_tiles < 2:
            return f"a 2x1 cluster shares B between two M tiles; M={problem.m} has {m_tiles} tile(s) of {p.block_m}"
        if p.cluster_n == 2 and n_tiles < 2:
            return f"a 1x2 cluster shares A between two N tiles; N={problem.n} has {n_tiles} tile(s) of {p.block_n}"
        return None

    # ------------------------------------------------------------------ candidates

    def block_ms(self, problem: GemmProblem) -> tuple[int, ...]:
        """64-row tiles where M is small, 128 from M > 32, 256 (narrow N only) from M >= 1024."""
        if problem.m <= 32:
            return (64,)
        if problem.m < 1024:
            return (64, 128)
        return (64, 128, 256)

    def param_space(self, problem: GemmProblem, arch: ArchSpec) -> Iterable[Sm90Params]:
        """Tiles (BLOCK_N from ``SEARCH_BLOCK_NS``) x clusters x tile order; see the module docstring."""
        m_tiles_128 = math.ceil(problem.m / 128)
        for block_m in self.block_ms(problem):
            for block_n in SEARCH_BLOCK_NS:
                if accumulators_per_thread(block_m, block_n) > MAX_ACCUMULATORS_PER_THREAD:
                    continue
                for cluster_m, cluster_n in CLUSTERS:
                    rasters = ("along_m", "along_n") if m_tiles_128 >= 4 else ("along_m",)
                    for raster in rasters:
                        yield Sm90Params.for_tile(block_m, block_n, cluster_m=cluster_m, cluster_n=cluster_n,
                                                  raster=raster, group=DEFAULT_GROUP)

    def default_params(self, problem: GemmProblem, arch: ArchSpec | None) -> Sm90Params:
        """Untuned choice: the tile shape of least ``estimated_cost`` (waves x per-tile work) among the
        search tiles that fit, with a 2x1 cluster (B multicast) where there are several M tiles."""
        num_sms = arch.num_sms if arch is not None else 132
        best = None
        for block_m in self.block_ms(problem):
            for block_n in SEARCH_BLOCK_NS:
                candidate = Sm90Params.for_tile(block_m, block_n)
                if self.check(problem, candidate, arch) is not None:
                    continue
                cost = estimated_cost(problem, block_m, block_n, num_sms)
                if best is None or cost < best[0]:
                    best = (cost, candidate)
        if best is None:
            return Sm90Params(block_m=64 if problem.m <= 64 else 128, block_n=128)
        chosen = best[1]
        if math.ceil(problem.m / chosen.block_m) >= 2:
            chosen = Sm90Params(block_m=chosen.block_m, block_n=chosen.block_n, overlap=chosen.overlap, cluster_m=2)
        return chosen

    # ------------------------------------------------------------------ build

    def build(self, problem: GemmProblem, params: KernelParams) -> GemmFn:
        """Compile (or fetch from the cache) and load the instantiation for ``problem``.

        Raises UnsupportedProblem (``check`` refused), CompileError (nvcc failed, with its
        log), LaunchError (the library does not load), BackendUnavailable (no GPU, nvcc or headers).
        """
        reason = self.check(problem, params, None)
        if reason:
            raise UnsupportedProblem(f"{params.short()}: {reason}")
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device: the Hopper kernel runs only on SM90 GPUs")
        built = jit.build(codegen.build_spec(params.kernel_config(problem.out_dtype)))
        library = launcher.load_library(built.path)
        return launcher.make_gemm_fn(library, problem, params)

