"""The project's Hopper FP8 GEMM (``fp8_gemm.cuh``) as a tuner/op backend ("sm90").

The tile shape is the main knob: BLOCK_N is any multiple of 16, so the
number of output tiles can be fitted to the 132 SMs (N = 7168 at M = 1024:
448 tiles of 128x128 are 3.4 waves, 128x112 tiles 512 = 3.9 waves), where the
CUTLASS and cuBLAS kernels offer powers of two. The rest (cluster pairs with
multicast, the order tiles are walked in, split-K) are run-time options of one build.

Split-K (``splits`` > 1) is for launches of few tiles: at M <= 128 on N = 2112,
K = 7168 there are 17 tiles of 128 columns for 132 SMs. The space adds split
counts to the 1x1-cluster candidates of tile shapes that fill less than half
the machine (``SPLIT_TILES_BELOW``), and the default takes the split count of
least ``splitk_cost``, a documented heuristic.

Stream-K (``stream_k``) cuts the tiles beyond whole waves, with their K blocks, into one span per SM
(``gemm.kernels.sm90.streamk``). The space offers one stream-K candidate for each tile shape that gets
split counts (the few-tile shapes); ``default_params`` never picks it (measured on the H200 it wins some
of those points and split-K the others, and no rule for which is fitted yet).

Swap-AB (``swap_ab``, for decode) computes D^T = B A^T: the weights fill the wgmma's 64-row side and the
tokens its 16..64 columns. The space offers it at M <= ``SWAP_MAX_M`` (``swap_ab_space``); measured on the
H200 it beats every other candidate of this backend at M <= 32 on most DeepSeek shapes, but not the wide
(36864, 7168) nor most M = 64 points, and no rule for that is fitted yet, so ``default_params`` never picks
it. The tuner ranks candidates with
``gemm.tuner.model.roofline.sm90_us``, whose coefficients are priors set from a
few timings, not yet fitted: sweep this backend with ``--prune none`` first.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from gemm.arch import ArchSpec
from gemm.kernels.base import Backend, BackendUnavailable, GemmFn, KernelParams, UnsupportedProblem
from gemm.kernels.nvcc import hopper, jit
from gemm.kernels.sm90 import codegen, launcher, splitk, streamk
from gemm.kernels.sm90.params import (CLUSTERS, MAX_ACCUMULATORS_PER_THREAD, OUT_DTYPES, SM90_SMEM_BYTES,
                                      SWAP_BLOCK_MS, Sm90Params, accumulators_per_thread, shared_memory_bytes,
                                      stages_that_fit)
from gemm.problem import GemmProblem

#: BLOCK_N values the tuner tries (every multiple of 16 builds; these cover the useful wave counts).
SEARCH_BLOCK_NS = (32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208)
#: Tiles a CTA walks per group in the default order (groups of 8 tiles along M share B tiles in L2).
DEFAULT_GROUP = 8
#: Split counts the tuner tries, and the share of the SMs below which a tile shape is offered them.
SEARCH_SPLITS = (2, 3, 4, 6, 8)
SPLIT_TILES_BELOW = 0.5
#: ``splitk_cost``'s price of adding one fp32 partial tile (read from L2 by one SM), in K blocks of the
#: tile, and of the counter hand-off (store, release, acquire) per launch; guesses, not measurements.
SPLIT_SLOT_BLOCKS = 1.0
SPLIT_FIXED_BLOCKS = 2.0
#: Largest M the space offers swap-AB at, and the token tiles (BLOCK_N) it tries there.
SWAP_MAX_M = 64
SWAP_BLOCK_NS = (16, 32, 48, 64)


def mma_problem(problem: GemmProblem, swap_ab: bool) -> GemmProblem:
    """The problem the MMA computes: ``problem``, or with swap-AB D^T's (M' = N weight rows, N' = M tokens)."""
    return problem.transposed() if swap_ab else problem


def tiles(problem: GemmProblem, block_m: int, block_n: int) -> int:
    return math.ceil(problem.m / block_m) * math.ceil(problem.n / block_n)


def wave_efficiency(problem: GemmProblem, block_m: int, block_n: int, num_sms: int) -> float:
    """Fraction of the SM-slots of the waves that hold useful tiles (1.0: the last wave is full)."""
    count = tiles(problem, block_m, block_n)
    return count / (math.ceil(count / num_sms) * num_sms)


def tile_block_work(problem: GemmProblem, block_m: int, block_n: int) -> float:
    """Relative time of one K block of one tile, where narrow tiles pay for re-reading operands from shared
    memory and rows beyond M cost nothing (a documented heuristic, not a fitted model)."""
    rows = min(block_m, max(problem.m, 16))  # rows that do useful work at small M
    return rows * block_n * (1.0 + 48.0 / block_n + 24.0 / block_m)


def estimated_cost(problem: GemmProblem, block_m: int, block_n: int, num_sms: int) -> float:
    """Relative run time of a tile shape without split-K: waves x per-tile work (``tile_block_work``; K is
    the same for every tile shape, so it is left out)."""
    waves = math.ceil(tiles(problem, block_m, block_n) / num_sms)
    return waves * tile_block_work(problem, block_m, block_n)


def splitk_cost(problem: GemmProblem, block_m: int, block_n: int, splits: int, num_sms: int) -> float:
    """Relative run time of a tile shape split ``splits`` ways, in ``tile_block_work`` units: rounds of the
    split-K order x the longer of the last split's K blocks (the most) and split 0's K blocks plus its
    fix-up (splits - 1 partial tiles read back, the counter hand-off). With splits = 1 it is
    ``estimated_cost`` x K blocks. A heuristic for ``default_params``; it has not been compared with
    timings yet."""
    k_blocks = splitk.k_blocks(problem.k)
    per_block = tile_block_work(problem, block_m, block_n)
    count = tiles(problem, block_m, block_n)
    if splits == 1:
        return math.ceil(count / num_sms) * k_blocks * per_block
    rounds = math.ceil(count / splitk.round_tiles(num_sms, splits, count))
    fixing, longest = splitk.split_range(k_blocks, splits, 0), splitk.split_range(k_blocks, splits, splits - 1)
    blocks = max(longest[1] - longest[0],
                 fixing[1] - fixing[0] + SPLIT_SLOT_BLOCKS * (splits - 1) + SPLIT_FIXED_BLOCKS)
    return rounds * blocks * per_block


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
        if p.swap_ab:
            if p.block_m not in SWAP_BLOCK_MS:
                return (f"swap-AB needs block_m in {list(SWAP_BLOCK_MS)} (its 64-row weight slabs must lie inside one "
                        f"128-row weight-scale block), got {p.block_m}")
            if (p.cluster_m, p.cluster_n) != (1, 1):
                return (f"swap-AB runs 1x1 clusters only (multicast of the swapped operands is not built), got "
                        f"{p.cluster_m}x{p.cluster_n}")
        limit = arch.smem_per_block_bytes if arch is not None else SM90_SMEM_BYTES
        stages = p.stages or stages_that_fit(p.block_m, p.block_n, problem.out_dtype, limit, p.swap_ab)
        if stages < 2:
            return f"not even two pipeline stages of a {p.block_m}x{p.block_n} tile fit in {limit} B of shared memory"
        smem = shared_memory_bytes(p.block_m, p.block_n, stages, problem.out_dtype, p.swap_ab)
        if smem > limit:
            return f"{stages} stages of a {p.block_m}x{p.block_n} tile need {smem} B of shared memory, limit {limit}"
        m_tiles, n_tiles = math.ceil(problem.m / p.block_m), math.ceil(problem.n / p.block_n)
        if p.cluster_m == 2 and m_tiles < 2:
            return f"a 2x1 cluster shares B between two M tiles; M={problem.m} has {m_tiles} tile(s) of {p.block_m}"
        if p.cluster_n == 2 and n_tiles < 2:
            return f"a 1x2 cluster shares A between two N tiles; N={problem.n} has {n_tiles} tile(s) of {p.block_n}"
        if p.stream_k:
            if p.splits > 1:
                return (f"stream_k and splits={p.splits} are exclusive: stream-K already shares the K blocks of "
                        f"few tiles between SMs")
            if (p.cluster_m, p.cluster_n) != (1, 1):
                return (f"stream-K runs 1x1 clusters only (the pieces of a span are not shared by a cluster pair), "
                        f"got {p.cluster_m}x{p.cluster_n}")
            mma = mma_problem(problem, p.swap_ab)  # tiles of the MMA's problem
            iterations = streamk.mma_tiles(mma.m, mma.n, p.block_m, p.block_n) * splitk.k_blocks(problem.k)
            if iterations > 2**31 - 1:
                return f"stream-K counts tiles x K blocks in 32 bits; {iterations} are too many"
        if p.splits > 1:
            k_blocks = splitk.k_blocks(problem.k)
            if p.splits > k_blocks:
                return (f"splits={p.splits} exceeds the {k_blocks} K blocks of 128 of K={problem.k}: "
                        f"a split would be empty")
            mma = mma_problem(problem, p.swap_ab)  # tiles of the MMA's problem
            workspace = splitk.partial_bytes(mma.m, mma.n, p.block_m, p.block_n, p.splits, p.cluster_m,
                                             p.cluster_n)
            if workspace > splitk.MAX_WORKSPACE_BYTES:
                return (f"splits={p.splits} needs {workspace / 2**20:.0f} MiB of fp32 partial tiles, more than the "
                        f"{splitk.MAX_WORKSPACE_BYTES // 2**20} MiB split-K workspace limit")
        return None

    # ------------------------------------------------------------------ candidates

    def block_ms(self, problem: GemmProblem) -> tuple[int, ...]:
        """64-row tiles where M is small, 128 from M > 32, 256 (narrow N only) from M >= 1024."""
        if problem.m <= 32:
            return (64,)
        if problem.m < 1024:
            return (64, 128)
        return (64, 128, 256)

    def split_counts(self, problem: GemmProblem, block_m: int, block_n: int, num_sms: int) -> tuple[int, ...]:
        """Split counts (> 1) worth trying for a tile shape: those of ``SEARCH_SPLITS`` that leave every split
        two K blocks or more, where the tiles fill less than ``SPLIT_TILES_BELOW`` of the SMs."""
        if tiles(problem, block_m, block_n) >= SPLIT_TILES_BELOW * num_sms:
            return ()
        k_blocks = splitk.k_blocks(problem.k)
        return tuple(s for s in SEARCH_SPLITS if 2 * s <= k_blocks)

    def param_space(self, problem: GemmProblem, arch: ArchSpec) -> Iterable[Sm90Params]:
        """Tiles (BLOCK_N from ``SEARCH_BLOCK_NS``) x clusters x tile order, plus split-K (1x1 clusters, M
        fastest) for tile shapes of few tiles, and for each of those one stream-K candidate; see the module
        docstring."""
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
                counts = self.split_counts(problem, block_m, block_n, arch.num_sms)
                for splits in counts:
                    yield Sm90Params.for_tile(block_m, block_n, group=DEFAULT_GROUP, splits=splits)
                if counts:
                    yield Sm90Params.for_tile(block_m, block_n, group=DEFAULT_GROUP, stream_k=True)
        yield from self.swap_ab_space(problem, arch)

    def swap_ab_space(self, problem: GemmProblem, arch: ArchSpec) -> Iterable[Sm90Params]:
        """Swap-AB candidates at M <= ``SWAP_MAX_M`` (none above): ``SWAP_BLOCK_MS`` weight rows x token tiles
        of ``SWAP_BLOCK_NS`` up to M rounded up to 16 (the smallest that covers M, and narrower ones that split
        it), 1x1 clusters, with split-K where the tiles fill few SMs; ``param_space`` ends with them."""
        if problem.m > SWAP_MAX_M:
            return
        mma = mma_problem(problem, True)
        covering = -(-problem.m // 16) * 16
        for block_m in SWAP_BLOCK_MS:
            for block_n in (bn for bn in SWAP_BLOCK_NS if bn <= covering):
                yield Sm90Params.for_tile(block_m, block_n, group=DEFAULT_GROUP, swap_ab=True)
                counts = self.split_counts(mma, block_m, block_n, arch.num_sms)
                for splits in counts:
                    yield Sm90Params.for_tile(block_m, block_n, group=DEFAULT_GROUP, splits=splits, swap_ab=True)
                if counts:
                    yield Sm90Params.for_tile(block_m, block_n, group=DEFAULT_GROUP, swap_ab=True, stream_k=True)

    def default_params(self, problem: GemmProblem, arch: ArchSpec | None) -> Sm90Params:
        """Untuned choice: the tile shape and split count of least ``splitk_cost`` (rounds x the K blocks
        of a unit; split counts only where ``split_counts`` offers them, i.e. tiles < half the SMs) among the
        search tiles that fit, with a 1x1 cluster: measured on the H200, 2x1 clusters are 8-15% slower than
        1x1 at 4096x7168x7168 and 8192x7168x18432 (docs/sm90.md), so the default takes none until they pay."""
        num_sms = arch.num_sms if arch is not None else 132
        best = None
        for block_m in self.block_ms(problem):
            for block_n in SEARCH_BLOCK_NS:
                for splits in (1,) + self.split_counts(problem, block_m, block_n, num_sms):
                    candidate = Sm90Params.for_tile(block_m, block_n, splits=splits)
                    if self.check(problem, candidate, arch) is not None:
                        continue
                    cost = splitk_cost(problem, block_m, block_n, splits, num_sms)
                    if best is None or cost < best[0]:
                        best = (cost, candidate)
        if best is None:
            return Sm90Params(block_m=64 if problem.m <= 64 else 128, block_n=128)
        return best[1]

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

