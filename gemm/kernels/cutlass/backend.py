"""The CUTLASS SM90 blockwise FP8 GEMM as a tuner/op backend.

Measured on an H100 80GB HBM3 with CUTLASS 4.2 headers (nvcc 13.0), CUDA-graph
replays over cold-L2 input copies; these facts shape the space and the default:

* 128x128x128 cooperative and 64x128x128 ping-pong tiles use 168 registers
  and do not spill; 256x128 spills (1.2 KB) with 4.2 and ran 3.5x slower, so
  it is offered only from CUTLASS 4.3 on, which rewrote that path (no spills
  with 4.5.0), and only at M >= 512. The same rewrite keeps 64-row tiles
  from compiling (see ``support``): with those releases ping-pong 64x128 is
  refused and small M runs the cooperative 128x128 tile. On an H200 with 4.5 headers the 256x128
  tile won 57 of 75 points at M >= 512 and the tuned backend ran 3.4% faster at M >= 1024 than
  with 4.2, and 12-15% slower at M <= 128 (docs/bench/h200-cutlass-headers).
* Ping-pong 64x128 was the best kernel at every M <= 128 point of the
  DeepSeek-V3 grid (54 points) and is 25% worse at M >= 512; CUTLASS has no
  stream-K scheduler for ping-pong.
* Stream-K won where the 128x128 tiles leave the last wave mostly empty
  (1.3x at M = 1024, N = 2112) and lost up to 1.4x elsewhere; at M <= 128 it
  lost to ping-pong even at N = 576. Split-K rarely helps and wants a large
  workspace (capped). The stream-K scheduler in data-parallel mode is a few
  percent slower than the persistent scheduler and CUTLASS's heuristic
  decomposition loses at small M (both stay valid, not enumerated).
* CUTLASS's raster heuristic was up to 1.8x slower than raster along M; the
  space enumerates both orders explicitly. MN-major activation scales gain
  1-2% at M >= 512 (they need M % 4 == 0 and a transpose of the quantizer's
  [M, K/128] scales, done by the launcher).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from gemm.arch import ArchSpec
from gemm.kernels.base import Backend, BackendUnavailable, GemmFn, KernelParams, UnsupportedProblem
from gemm.kernels.cutlass import jit, launcher, support
from gemm.kernels.nvcc import hopper, toolchain
from gemm.kernels.cutlass.config import OUT_DTYPES, CutlassParams
from gemm.problem import GemmProblem

#: Tile shapes CUTLASS's blockwise SM90 mainloop supports here: (schedule, tile_m, tile_n, tile_k).
#: Scales come per 128 columns of N and K, so tile_n and tile_k are 128; the cooperative schedule
#: splits tile_m over two warp groups (>= 128), ping-pong gives each warp group a 64-row tile.
SUPPORTED_TILES = (("cooperative", 128, 128, 128), ("pingpong", 64, 128, 128), ("cooperative", 256, 128, 128))
SUPPORTED_CLUSTERS = ((1, 1), (2, 1), (1, 2))
#: CUTLASS release whose 256x128 blockwise path stops spilling (re-exported from ``support``).
WIDE_TILE_MIN_CUTLASS = support.WIDE_TILE_MIN_CUTLASS
#: Smallest M at which the 256x128 tile is offered: below it most of each tile would be padding.
WIDE_TILE_MIN_M = 512
SCALE_BLOCK = 128
#: Opt-in shared memory per block on SM90 (what CUTLASS's builders plan with).
SM90_SMEM_BYTES = 232448
#: Shared memory the epilogue takes beside the mainloop stages (upper bound; measured 17056 B for
#: the cooperative 128x128 tile, 8576 B for ping-pong 64x128). With it, explicit ``stages`` stop at
#: 6 (128x128) and 8 (64x128), the counts ``stages=0`` picks.
EPILOGUE_SMEM_BYTES = 17 * 1024


def stage_bytes(params: CutlassParams) -> int:
    """Shared memory of one mainloop stage as CUTLASS counts it: fp8 A and B tiles and their fp32
    scales (128-byte aligned) plus a 16-byte pipeline barrier (``kStageBytes`` in blockwise_gemm.h)."""
    raw = (params.tile_m + params.tile_n) * params.tile_k + 4 * (params.tile_m + params.tile_n // SCALE_BLOCK)
    return (raw + 127) // 128 * 128 + 16


def split_k_workspace_bytes(problem: GemmProblem, params: CutlassParams) -> int:
    """Upper estimate of the split-K partial-tile workspace (fp32 per split per output tile)."""
    tiles = math.ceil(problem.m / params.tile_m) * math.ceil(problem.n / params.tile_n)
    return tiles * params.splits * params.tile_m * params.tile_n * 4


class CutlassBackend(Backend):
    """CUTLASS 3.x blockwise-scaled FP8 GEMM for Hopper, JIT-built with nvcc.

    ``allow_nondeterministic`` adds stream-K/split-K candidates whose partial
    tiles are reduced atomically (faster, not bitwise reproducible); by
    default only deterministic (turnstile) reduction is enumerated.
    """

    name = "cutlass"
    params_type = CutlassParams

    def __init__(self, allow_nondeterministic: bool = False):
        self.allow_nondeterministic = allow_nondeterministic

    # ------------------------------------------------------------------ availability

    def unavailable_reason(self, device=None) -> str | None:
        return hopper.unavailable_reason("the CUTLASS blockwise kernels", device)

    # ------------------------------------------------------------------ constraints

    def check(self, problem: GemmProblem, params: KernelParams, arch: ArchSpec | None) -> str | None:
        """Why ``params`` cannot run ``problem`` (None if it can). ``arch`` None skips the GPU checks."""
        p = params
        if not isinstance(p, CutlassParams):
            return f"expected CutlassParams, got {type(p).__name__}"
        reason = hopper.problem_reason(problem, arch, "CUTLASS SM90 kernels", OUT_DTYPES)
        if reason:
            return reason
        out_alignment = 16 // torch.empty((), dtype=problem.torch_out_dtype).element_size()
        if problem.n % out_alignment:
            return f"N={problem.n} must be a multiple of {out_alignment} (16-byte rows of the output)"
        if (p.schedule, p.tile_m, p.tile_n, p.tile_k) not in SUPPORTED_TILES:
            return (f"{p.schedule} {p.tile_m}x{p.tile_n}x{p.tile_k} is not a supported tile; expected one of "
                    f"{[f'{s} {m}x{n}x{k}' for s, m, n, k in SUPPORTED_TILES]}")
        unbuildable = support.unbuildable_reason(p.tile_m, toolchain.cutlass_version_or_none())
        if unbuildable:
            return unbuildable
        if (p.cluster_m, p.cluster_n) not in SUPPORTED_CLUSTERS:
            return f"cluster {p.cluster_m}x{p.cluster_n} is not one of {SUPPORTED_CLUSTERS}"
        if p.stages == 1:
            return "stages must be 0 (as many as fit) or >= 2"
        if p.stages:
            limit = arch.smem_per_block_bytes if arch is not None else SM90_SMEM_BYTES
            smem = p.stages * stage_bytes(p) + EPILOGUE_SMEM_BYTES
            if smem > limit:
                return f"{p.stages} stages need about {smem} B of shared memory, limit {limit}"
        if p.sfa_major == "mn" and problem.m % 4:
            return f"MN-major activation scales are loaded with TMA and need M % 4 == 0, got M={problem.m}"
        if p.scheduler == "persistent" and (p.decomposition != "data_parallel" or p.splits != 1):
            return "the persistent scheduler runs data-parallel only; split-K/stream-K/heuristic need scheduler=streamk"
        if p.scheduler == "streamk" and p.schedule == "pingpong":
            return "CUTLASS's ping-pong kernel has no stream-K scheduler"
        if p.decomposition == "splitk" and p.splits < 2:
            return "split-K decomposition needs splits >= 2"
        if p.splits > 1 and p.decomposition not in ("splitk", "heuristic"):
            return f"splits={p.splits} needs decomposition splitk or heuristic, got {p.decomposition}"
        k_tiles = math.ceil(problem.k / p.tile_k)
        if p.splits > k_tiles:
            return f"splits={p.splits} exceeds the {k_tiles} K tiles"
        if p.decomposition == "splitk":
            workspace = split_k_workspace_bytes(problem, p)
            if workspace > launcher.MAX_WORKSPACE_BYTES:
                return (f"split-K workspace of about {workspace / 2**20:.0f} MiB exceeds the "
                        f"{launcher.MAX_WORKSPACE_BYTES / 2**20:.0f} MiB cap")
        return None

    # ------------------------------------------------------------------ candidates

    def tile_choices(self, problem: GemmProblem) -> list[tuple[str, int]]:
        """(schedule, tile_m) pairs worth trying at ``problem.m`` with the installed CUTLASS.

        Ping-pong 64x128 at M <= 256 where the headers can build it; cooperative
        256x128 at M >= ``WIDE_TILE_MIN_M`` from ``WIDE_TILE_MIN_CUTLASS`` on.
        """
        version = toolchain.cutlass_version_or_none()
        choices = [("cooperative", 128)]
        if problem.m <= 256 and support.narrow_tiles_build(version):
            choices.append(("pingpong", 64))
        if problem.m >= WIDE_TILE_MIN_M and support.wide_tile_offered(version):
            choices.append(("cooperative", 256))
        return choices

    def param_space(self, problem: GemmProblem, arch: ArchSpec) -> Iterable[CutlassParams]:
        """Persistent data-parallel kernels over tiles x clusters x scale layout x raster x swizzle, plus
        stream-K and (at M <= 256) split-K kernels of the cooperative schedule. See the module docstring."""
        sfa_majors = ("k", "mn") if problem.m >= 512 and problem.m % 4 == 0 else ("k",)
        rasters = ("along_m", "along_n")
        tiles_m = math.ceil(problem.m / 128)
        swizzles = (1, 4) if tiles_m >= 4 else (1,)
        reductions = ("deterministic", "nondeterministic") if self.allow_nondeterministic else ("deterministic",)
        k_tiles = math.ceil(problem.k / 128)
        split_counts = [s for s in (2, 4) if problem.m <= 256 and s <= k_tiles // 2]
        for schedule, tile_m in self.tile_choices(problem):
            for cluster_m, cluster_n in SUPPORTED_CLUSTERS:
                for sfa_major in sfa_majors:
                    base = dict(schedule=schedule, tile_m=tile_m, tile_n=128, tile_k=128, cluster_m=cluster_m,
                                cluster_n=cluster_n, stages=0, sfa_major=sfa_major)
                    for raster in rasters:
                        for swizzle in swizzles:
                            yield CutlassParams(**base, scheduler="persistent", raster=raster, max_swizzle=swizzle)
                    if schedule == "pingpong":
                        continue
                    for raster in rasters:
                        for reduction in reductions:
                            yield CutlassParams(**base, scheduler="streamk", decomposition="streamk",
                                                raster=raster, reduction=reduction)
                            for splits in split_counts:
                                yield CutlassParams(**base, scheduler="streamk", decomposition="splitk",
                                                    splits=splits, raster=raster, reduction=reduction)

    def default_params(self, problem: GemmProblem, arch: ArchSpec) -> CutlassParams:
        """Untuned choice, from a sweep of this space on an H100 (DeepSeek-V3 shapes x M grid).

        M <= 128: ping-pong 64x128 (the best kernel at all 54 such points,
        also ahead of stream-K and split-K at N = 576), or where the installed
        CUTLASS cannot build 64-row tiles, the rule for larger M (not measured
        yet). Larger M: cooperative
        128x128, raster along M (CUTLASS's raster heuristic was up to 1.8x
        slower at M = 512, N = 36864), swizzle 4 once M >= 2048 and N >= 4096;
        persistent data-parallel, except stream-K where the 128x128 tiles fill
        the last of several waves less than 75% and K >= 4096 (1.1-1.3x at
        the three such points; 2 of the 27 points lost 1%).
        """
        if problem.m <= 128 and support.narrow_tiles_build(toolchain.cutlass_version_or_none()):
            return CutlassParams(schedule="pingpong", tile_m=64)
        num_sms = arch.num_sms if arch is not None else 132
        tiles = math.ceil(problem.m / 128) * math.ceil(problem.n / 128)
        wave_efficiency = tiles / (math.ceil(tiles / num_sms) * num_sms)
        if tiles > num_sms and wave_efficiency < 0.75 and problem.k >= 4096:
            return CutlassParams(scheduler="streamk", decomposition="streamk", raster="along_m")
        swizzle = 4 if problem.m >= 2048 and problem.n >= 4096 else 1
        return CutlassParams(raster="along_m", max_swizzle=swizzle)

    # ------------------------------------------------------------------ build

    def build(self, problem: GemmProblem, params: KernelParams) -> GemmFn:
        """Compile (or fetch from the cache) and load the instantiation, check the problem against it.

        Raises UnsupportedProblem (``check`` or CUTLASS's ``can_implement``
        refused, or too much workspace), CompileError (nvcc failed, with its
        log), LaunchError (the library does not load), BackendUnavailable
        (no nvcc or CUTLASS headers).
        """
        reason = self.check(problem, params, None)
        if reason:
            raise UnsupportedProblem(f"{params.short()}: {reason}")
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device: CUTLASS kernels run only on SM90 GPUs")
        built = jit.build(params.kernel_config(problem.out_dtype))
        library = launcher.load_library(built.path)
        return launcher.make_gemm_fn(library, problem, params)
