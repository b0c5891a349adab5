"""Parameters of the project's Hopper FP8 GEMM (``fp8_gemm.cuh``).

``Sm90Params`` holds two kinds of fields:

* **compile-time**: ``block_m``, ``block_n``, ``stages``, ``overlap`` and ``swap_ab`` pick
  one C++ instantiation (one shared library, with the output dtype): ``kernel_config``.
  ``swap_ab`` (decode) computes D^T = B A^T: the weights fill the wgmma's 64-row M side
  (``block_m`` rows of N, 64 or 128) and the tokens its N side (``block_n`` columns of M).
  ``stages = 0`` means as many as fit (``stages_that_fit``); ``overlap`` keeps two
  partial accumulators so that block kb+1's wgmmas run while block kb is promoted
  (1.5x the accumulator registers, so only narrower tiles fit).
* **run-time**: ``cluster_m`` x ``cluster_n`` (1x1, 2x1: two CTAs along M share
  the B tile by TMA multicast, 1x2: two CTAs along N share the A tile),
  ``raster`` ("along_m": groups of tiles along M, M fastest; "along_n") and
  ``group`` (tiles per group, for L2 reuse) and ``splits`` (split-K: each
  output tile's K blocks cut into that many ranges, one work unit each, the
  fp32 partials added in split order by the last; 1 = data-parallel; see
  ``gemm.kernels.sm90.splitk``) and ``stream_k`` (the tiles beyond whole
  waves and their K blocks cut into one span per cluster, the partials of a
  shared tile added by its last contributor; exclusive with split-K, 1x1
  clusters; see ``gemm.kernels.sm90.streamk``) and ``dependent_launch``
  (programmatic dependent launch). M, N and K are run-time too, so one build
  serves every shape.

Only the domain of each field is checked here (``ValueError`` naming the
field); whether a combination can run a problem is the backend's ``check``.
The shared-memory arithmetic mirrors ``Traits`` in ``fp8_gemm.cuh``.
"""

from __future__ import annotations

import dataclasses

from gemm.kernels.base import KernelParams, require_choice, require_int

BLOCK_MS = (64, 128, 256)
#: BLOCK_N is any multiple of this in [16, 256] (the epilogue stores 16-column boxes).
BLOCK_N_STEP = 16
MAX_BLOCK_N = 256
BLOCK_K = 128
RASTERS = ("along_m", "along_n")
RASTER_CODES = {"along_m": 0, "along_n": 1}
CLUSTERS = ((1, 1), (2, 1), (1, 2))
#: Largest split count the params accept (the backend's ``check`` also needs splits <= ceil(K / 128)).
MAX_SPLITS = 32
OUT_DTYPES = ("bfloat16", "float16")
OUT_BYTES = {"bfloat16": 2, "float16": 2}
#: Opt-in shared memory per block on SM90.
SM90_SMEM_BYTES = 232448
#: More stages than this never paid in the sweeps; fewer builds too.
MAX_STAGES = 8
#: fp32 accumulators one consumer thread holds for its partial and total sums (BLOCK_N/2 each per
#: 64-row wgmma, a second partial with ``overlap``) beyond which ptxas spills (nvcc 13.0, sm_90a:
#: 208 builds clean, 216 and 224 spill).
MAX_ACCUMULATORS_PER_THREAD = 208


def consumers(block_m: int) -> int:
    """Consumer warp groups of a tile: one for 64 rows, two otherwise."""
    return 1 if block_m == 64 else 2


def accumulators_per_thread(block_m: int, block_n: int, overlap: bool = False) -> int:
    """fp32 registers one consumer thread needs for the partial sum(s) and the promoted sum."""
    mmas = (block_m // consumers(block_m)) // 64
    return (3 if overlap else 2) * mmas * (block_n // 2)


def overlap_fits(block_m: int, block_n: int) -> bool:
    """True when a tile has registers for the second partial accumulator (``overlap``)."""
    return accumulators_per_thread(block_m, block_n, True) <= MAX_ACCUMULATORS_PER_THREAD


#: Per stage, the tile's (at most 3) weight scales padded to 16 bytes (``Traits::kSfbFloats``).
WEIGHT_SCALE_BYTES = 16
#: BLOCK_M of a swap-AB tile: 64-row slabs of weights that never straddle a 128-row weight-scale block.
SWAP_BLOCK_MS = (64, 128)


def stage_bytes(block_m: int, block_n: int, swap_ab: bool = False) -> int:
    """Shared memory of one pipeline stage: the fp8 A and B tiles and the tile's activation scales (one per
    tile row, with swap-AB one per tile column; padded to 128 bytes) and weight scales."""
    activation_scales = -(-(block_n if swap_ab else block_m) * 4 // 128) * 128
    return block_m * BLOCK_K + block_n * BLOCK_K + activation_scales + WEIGHT_SCALE_BYTES


def shared_memory_bytes(block_m: int, block_n: int, stages: int, out_dtype: str = "bfloat16",
                        swap_ab: bool = False) -> int:
    """Dynamic shared memory one CTA asks for (``Traits::kSmemLaunchBytes``); swap-AB has no epilogue buffer."""
    stages_end = stages * stage_bytes(block_m, block_n, swap_ab)
    epilogue_offset = (stages_end + 1023) // 1024 * 1024
    epilogue = 0 if swap_ab else block_m * block_n * OUT_BYTES[out_dtype]
    return epilogue_offset + epilogue + 2 * stages * 8 + 1024


def stages_that_fit(block_m: int, block_n: int, out_dtype: str = "bfloat16",
                    limit: int = SM90_SMEM_BYTES, swap_ab: bool = False) -> int:
    """Most pipeline stages (at most ``MAX_STAGES``) that fit beside the epilogue; 0 if not even 2 fit."""
    best = 0
    for stages in range(2, MAX_STAGES + 1):
        if shared_memory_bytes(block_m, block_n, stages, out_dtype, swap_ab) <= limit:
            best = stages
    return best


def _check_tile(owner: str, block_m, block_n, stages) -> None:
    require_choice(owner, "block_m", block_m, BLOCK_MS)
    require_int(owner, "block_n", block_n, BLOCK_N_STEP)
    if block_n % BLOCK_N_STEP or block_n > MAX_BLOCK_N:
        raise ValueError(f"{owner}.block_n must be a multiple of {BLOCK_N_STEP} in [{BLOCK_N_STEP}, {MAX_BLOCK_N}], "
                         f"got {block_n}")
    require_int(owner, "stages", stages, 0)
    if stages == 1 or stages > MAX_STAGES:
        raise ValueError(f"{owner}.stages must be 0 (as many as fit) or in [2, {MAX_STAGES}], got {stages}")


def _check_swap(owner: str, swap_ab, block_m: int | None) -> None:
    if not isinstance(swap_ab, bool):
        raise ValueError(f"{owner}.swap_ab must be true/false, got {swap_ab!r}")
    if swap_ab and block_m is not None and block_m not in SWAP_BLOCK_MS:
        raise ValueError(f"{owner}.block_m must be one of {list(SWAP_BLOCK_MS)} with swap_ab (64-row weight slabs "
                         f"inside one 128-row weight-scale block), got {block_m}")


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Everything one compiled library is specialised for (the JIT cache key); ``stages`` >= 2."""

    block_m: int = 128
    block_n: int = 128
    stages: int = 5
    overlap: bool = True
    out_dtype: str = "bfloat16"
    swap_ab: bool = False

    def __post_init__(self) -> None:
        _check_tile("KernelConfig", self.block_m, self.block_n, self.stages)
        if self.stages < 2:
            raise ValueError(f"KernelConfig.stages must be >= 2, got {self.stages}")
        if not isinstance(self.overlap, bool):
            raise ValueError(f"KernelConfig.overlap must be true/false, got {self.overlap!r}")
        require_choice("KernelConfig", "out_dtype", self.out_dtype, OUT_DTYPES)
        _check_swap("KernelConfig", self.swap_ab, self.block_m)

    @property
    def name(self) -> str:
        """Readable, file-name-safe identifier, e.g. ``sm90_128x112x128_s5_ov_bf16`` (``_swab`` before the
        dtype for swap-AB)."""
        out = {"bfloat16": "bf16", "float16": "fp16"}[self.out_dtype]
        overlap = "_ov" if self.overlap else ""
        swap = "_swab" if self.swap_ab else ""
        return f"sm90_{self.block_m}x{self.block_n}x{BLOCK_K}_s{self.stages}{overlap}{swap}_{out}"

    @property
    def shared_memory_bytes(self) -> int:
        return shared_memory_bytes(self.block_m, self.block_n, self.stages, self.out_dtype, self.swap_ab)


@dataclasses.dataclass(frozen=True)
class Sm90Params(KernelParams):
    """One candidate of the Hopper kernel: a tile (compile-time) and how its launch walks the tiles (run-time).

    ``block_m`` in {64, 128, 256} (one consumer warp group for 64 rows, two
    otherwise), ``block_n`` a multiple of 16 in [16, 256], ``stages`` (0 = as
    many as fit), ``overlap`` (promotion overlapped with the next block's
    wgmmas), ``cluster_m`` x ``cluster_n`` in {1x1, 2x1, 1x2},
    ``raster`` ("along_m" or "along_n"), ``group`` (>= 1 cluster tiles per group) and
    ``splits`` (1 = data-parallel; S in [2, 32]: split-K over S ranges of K blocks), ``swap_ab``
    (D^T = B A^T for decode: ``block_m`` in {64, 128} rows of N, ``block_n`` columns of M; 1x1 clusters)
    and ``stream_k`` (hybrid data-parallel + stream-K schedule; with ``splits`` = 1 and 1x1 clusters only,
    which the backend's ``check`` enforces), ``dependent_launch`` (programmatic dependent launch: the
    launch may start while the stream's previous kernel finishes; it waits for that kernel before its
    first global read).
    """

    block_m: int = 128
    block_n: int = 128
    stages: int = 0
    overlap: bool = True
    cluster_m: int = 1
    cluster_n: int = 1
    raster: str = "along_m"
    group: int = 8
    splits: int = 1
    swap_ab: bool = False
    stream_k: bool = False
    dependent_launch: bool = False

    def __post_init__(self) -> None:
        owner = "Sm90Params"
        _check_tile(owner, self.block_m, self.block_n, self.stages)
        if not isinstance(self.overlap, bool):
            raise ValueError(f"{owner}.overlap must be true/false, got {self.overlap!r}")
        require_int(owner, "cluster_m", self.cluster_m, 1)
        require_int(owner, "cluster_n", self.cluster_n, 1)
        if (self.cluster_m, self.cluster_n) not in CLUSTERS:
            raise ValueError(f"{owner} cluster {self.cluster_m}x{self.cluster_n} is not one of "
                             f"{[f'{m}x{n}' for m, n in CLUSTERS]}")
        require_choice(owner, "raster", self.raster, RASTERS)
        require_int(owner, "group", self.group, 1)
        require_int(owner, "splits", self.splits, 1)
        if self.splits > MAX_SPLITS:
            raise ValueError(f"{owner}.splits must be in [1, {MAX_SPLITS}], got {self.splits}")
        # The domain only: the tile and cluster swap-AB needs are the backend's ``check`` (with reasons).
        _check_swap(owner, self.swap_ab, None)
        if not isinstance(self.stream_k, bool):
            raise ValueError(f"{owner}.stream_k must be true/false, got {self.stream_k!r}")
        if not isinstance(self.dependent_launch, bool):
            raise ValueError(f"{owner}.dependent_launch must be true/false, got {self.dependent_launch!r}")

    @classmethod
    def for_tile(cls, block_m: int, block_n: int, overlap: bool | None = None, **fields) -> "Sm90Params":
        """Params of a ``block_m`` x ``block_n`` tile, with ``overlap`` where its registers allow unless told."""
        return cls(block_m=block_m, block_n=block_n,
                   overlap=overlap_fits(block_m, block_n) if overlap is None else overlap, **fields)

    def resolved_stages(self, out_dtype: str = "bfloat16") -> int:
        """``stages``, or with 0 the most that fit (0 when none do)."""
        return self.stages or stages_that_fit(self.block_m, self.block_n, out_dtype, swap_ab=self.swap_ab)

    def kernel_config(self, out_dtype: str = "bfloat16") -> KernelConfig:
        """The compile-time part: what one shared library is built for (ValueError when no stages fit)."""
        return KernelConfig(self.block_m, self.block_n, self.resolved_stages(out_dtype), self.overlap, out_dtype,
                            self.swap_ab)

    def short(self) -> str:
        """e.g. ``128x112x128,stauto,ov,c1x1,along_m,g8`` (``,sk4`` appended for 4-way split-K, ``,sk-stream``
        for stream-K, ``,swab`` for swap-AB, ``,pdl`` for a dependent launch)."""
        return (f"{self.block_m}x{self.block_n}x{BLOCK_K},st{self.stages or 'auto'},{'ov,' if self.overlap else ''}"
                f"c{self.cluster_m}x{self.cluster_n},{self.raster},g{self.group}"
                + (f",sk{self.splits}" if self.splits > 1 else "") + (",sk-stream" if self.stream_k else "")
                + (",swab" if self.swap_ab else "") + (",pdl" if self.dependent_launch else ""))
