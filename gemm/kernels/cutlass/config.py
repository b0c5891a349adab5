"""Parameters of the CUTLASS SM90 blockwise-scaled FP8 GEMM.

A ``CutlassParams`` holds two kinds of fields:

* **compile-time** fields pick one C++ instantiation (one shared library):
  schedule, tile and cluster shape, pipeline stages, the majorness of the
  activation scales and the tile scheduler. ``CutlassParams.kernel_config``
  returns them (with the output dtype) as a ``KernelConfig``, the key of
  the JIT cache.
* **run-time** fields are arguments of one launch of that library: how the
  work is decomposed (data-parallel, split-K, stream-K), the split count,
  raster order, swizzle and the stream-K reduction mode.

Only the domain of each field is checked here (``ValueError`` naming the
field). Whether a combination can run a given problem is the backend's
``check``.
"""

from __future__ import annotations

import dataclasses

from gemm.kernels.base import KernelParams, require_choice, require_int

SCHEDULES = ("cooperative", "pingpong")
SCHEDULERS = ("persistent", "streamk")
SCALE_MAJORS = ("k", "mn")
DECOMPOSITIONS = ("data_parallel", "splitk", "streamk", "heuristic")
RASTERS = ("heuristic", "along_m", "along_n")
REDUCTIONS = ("deterministic", "nondeterministic")
SWIZZLES = (1, 2, 4, 8)
OUT_DTYPES = ("bfloat16", "float16")

# C ABI encodings of the run-time enums; the order matches CUTLASS's own enums
# (DecompositionMode, RasterOrderOptions, ReductionMode) and blockwise_gemm.h.
DECOMPOSITION_CODES = {"heuristic": 0, "data_parallel": 1, "splitk": 2, "streamk": 3}
RASTER_CODES = {"heuristic": 0, "along_m": 1, "along_n": 2}
REDUCTION_CODES = {"deterministic": 0, "nondeterministic": 1}


def _check_compile_fields(obj) -> None:
    """Domain checks shared by KernelConfig and CutlassParams (names the class and field)."""
    owner = type(obj).__name__
    require_choice(owner, "schedule", obj.schedule, SCHEDULES)
    for name in ("tile_m", "tile_n", "tile_k", "cluster_m", "cluster_n"):
        require_int(owner, name, getattr(obj, name), 1)
    require_int(owner, "stages", obj.stages, 0)
    require_choice(owner, "sfa_major", obj.sfa_major, SCALE_MAJORS)
    require_choice(owner, "scheduler", obj.scheduler, SCHEDULERS)


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Everything one compiled instantiation is specialised for (the JIT cache key).

    ``stages == 0`` lets CUTLASS fit as many pipeline stages as the shared
    memory left after the epilogue allows.
    """

    schedule: str = "cooperative"
    tile_m: int = 128
    tile_n: int = 128
    tile_k: int = 128
    cluster_m: int = 1
    cluster_n: int = 1
    stages: int = 0
    sfa_major: str = "k"
    scheduler: str = "persistent"
    out_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        _check_compile_fields(self)
        require_choice("KernelConfig", "out_dtype", self.out_dtype, OUT_DTYPES)

    @property
    def name(self) -> str:
        """Readable, file-name-safe identifier, e.g. ``coop_128x128x128_c1x1_sauto_sfak_persistent_bf16``."""
        schedule = {"cooperative": "coop", "pingpong": "pingpong"}[self.schedule]
        stages = "auto" if self.stages == 0 else str(self.stages)
        out = {"bfloat16": "bf16", "float16": "fp16"}[self.out_dtype]
        return (f"{schedule}_{self.tile_m}x{self.tile_n}x{self.tile_k}_c{self.cluster_m}x{self.cluster_n}"
                f"_s{stages}_sfa{self.sfa_major}_{self.scheduler}_{out}")


@dataclasses.dataclass(frozen=True)
class CutlassParams(KernelParams):
    """One CUTLASS candidate: compile-time instantiation fields plus run-time launch knobs.

    Compile-time: ``schedule`` ("cooperative": two consumer warp groups share
    one tile; "pingpong": they alternate tiles, 64-row tiles), ``tile_m`` x
    ``tile_n`` x ``tile_k``, ``cluster_m`` x ``cluster_n`` (TMA multicast),
    ``stages`` (0 = as many as fit), ``sfa_major`` ("k": activation scales
    [M, K/128] row-major as produced by the quantizer; "mn": [K/128, M]
    row-major, i.e. M-major; the launcher transposes "k" input for it),
    ``scheduler`` ("persistent" or "streamk").

    Run-time: ``decomposition`` ("data_parallel", "splitk", "streamk",
    "heuristic"; anything but data-parallel needs the stream-K scheduler),
    ``splits`` (split-K factor), ``raster`` ("heuristic", "along_m",
    "along_n"), ``max_swizzle`` (1, 2, 4, 8) and ``reduction``
    ("deterministic" turnstile reduction of partial tiles, bitwise
    reproducible; "nondeterministic" atomic accumulation, faster, only when
    the caller allows it).
    """

    schedule: str = "cooperative"
    tile_m: int = 128
    tile_n: int = 128
    tile_k: int = 128
    cluster_m: int = 1
    cluster_n: int = 1
    stages: int = 0
    sfa_major: str = "k"
    scheduler: str = "persistent"
    decomposition: str = "data_parallel"
    splits: int = 1
    raster: str = "heuristic"
    max_swizzle: int = 1
    reduction: str = "deterministic"

    def __post_init__(self) -> None:
        _check_compile_fields(self)
        owner = "CutlassParams"
        require_choice(owner, "decomposition", self.decomposition, DECOMPOSITIONS)
        require_int(owner, "splits", self.splits, 1)
        require_choice(owner, "raster", self.raster, RASTERS)
        require_choice(owner, "max_swizzle", self.max_swizzle, SWIZZLES)
        require_choice(owner, "reduction", self.reduction, REDUCTIONS)

    def kernel_config(self, out_dtype: str = "bfloat16") -> KernelConfig:
        """The compile-time part: what one shared library is built for."""
        return KernelConfig(self.schedule, self.tile_m, self.tile_n, self.tile_k, self.cluster_m,
                            self.cluster_n, self.stages, self.sfa_major, self.scheduler, out_dtype)

    def short(self) -> str:
        parts = [f"{self.schedule[:4]}{self.tile_m}x{self.tile_n}x{self.tile_k}",
                 f"c{self.cluster_m}x{self.cluster_n}", f"st{self.stages or 'auto'}",
                 f"sfa={self.sfa_major}", self.scheduler, self.decomposition]
        if self.splits > 1:
            parts.append(f"splits={self.splits}")
        parts += [f"raster={self.raster}", f"swz={self.max_swizzle}"]
        if self.reduction != "deterministic":
            parts.append(self.reduction)
        return ",".join(parts)
