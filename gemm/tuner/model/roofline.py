"""An analytical time model of each backend, with a few coefficients fitted to measurements.

The tuner uses it to rank candidates before any is built (measurement decides
among the survivors); ``gemm predict`` uses it to choose configs for a GPU
nobody has measured (the H20, say) from its spec alone. It keeps to first-order
effects, each a term of the time of one launch:

* **waves**: work units (output tiles x K slices) are spread over the SMs
  (times the CTAs an SM holds); the last partial wave costs a full one, unless
  stream-K spreads the remainder's K iterations evenly over the machine;
* **per K step**, a CTA is limited by tensor-core time (its share of the SM's
  FP8 rate at a fitted efficiency; a 16-row Triton tile cannot use wgmma) plus
  the CUDA-core multiply of its accumulators by the two block scales (the
  Triton kernel does it every step; CUTLASS overlaps it), or by memory latency:
  with ``stages - 1`` steps in flight a CTA cannot step faster than that many
  round trips allow (Little's law). What starves small-M launches of few tiles;
* **bandwidth**: the unique bytes (``GemmProblem.min_bytes``) cross HBM once and
  every CTA's tile loads cross L2 (whose bandwidth grows with the SM count);
* **reductions**: split-K partials written and read back through L2, stream-K
  fix-ups serialised per tile;
* a fixed launch/graph-node cost.

Terms that overlap (the K loop, HBM and L2 traffic) are combined with a smooth
maximum, so the fit sees a gradient where the bottleneck changes. Per-SM
rates come from the ``ArchSpec`` (datasheet FP8 rate and HBM bandwidth), so one
set of coefficients describes every Hopper part.

The coefficients of each backend are fitted to results logs by
``gemm.tuner.model.fit`` and stored in ``coefficients.json`` beside this
module (with the logs they came from; ``gemm.tuner.model.fitted`` reads them);
without that file the priors below are used.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from gemm.arch import ArchSpec
from gemm.kernels.sm90 import streamk
from gemm.problem import GemmProblem

_SMOOTH_P = 6.0               # smooth maximum exponent: 6 is within 12% of max() where two terms tie
_REGISTERS_PER_SM = 65536
_MAX_CTAS_PER_SM = 4


@dataclass(frozen=True)
class TritonCoefficients:
    """Coefficients of the Triton kernel's model (priors; ``coefficients.json`` holds the fit)."""

    launch_us: float = 2.0          # graph node + prologue/epilogue of a short kernel
    latency_us: float = 1.0         # loaded memory round trip seen by a pipelined load stream
    hbm_eff: float = 0.85           # achievable share of datasheet HBM bandwidth
    wgmma_eff: float = 0.70         # achievable share of the FP8 rate with wgmma (>= 64 rows, full warp groups)
    mma_eff: float = 0.30           # ... without it
    scale_ns_per_kelem: float = 0.5  # CUDA-core rescale of 1024 accumulators by the block scales, per K step
    unroll_scale: float = 0.6       # share of that cost left when two K steps are unrolled
    tma_factor: float = 0.95        # latency-bound step time with bulk (TMA) loads
    l2_gbps_per_sm: float = 60.0    # L2 bandwidth per SM
    split_fixed_us: float = 1.0     # split-K arrival counter + last-CTA reduction
    pressure: float = 1.0           # slow-down per 64 accumulator registers per thread beyond the first 64
    tile_us: float = 0.5            # per tile a CTA runs: pipeline fill and output epilogue


@dataclass(frozen=True)
class CutlassCoefficients:
    """Coefficients of the CUTLASS SM90 blockwise kernel's model."""

    launch_us: float = 3.0
    latency_us: float = 1.5
    hbm_eff: float = 0.85
    coop_eff: float = 0.75          # cooperative 128-row tiles: share of the FP8 rate
    pingpong_eff: float = 0.75      # ping-pong 64-row tiles (two in flight per SM)
    l2_gbps_per_sm: float = 60.0
    streamk_fixup_us: float = 0.5   # one partial tile reduced into its owner (turnstile), serialised per tile
    splitk_fixed_us: float = 2.0    # split-K reduction kernel epilogue
    tile_us: float = 0.5            # per tile an SM runs: pipeline fill and output epilogue


@dataclass(frozen=True)
class CublasCoefficients:
    """Coefficients of cuBLAS blockwise (``torch._scaled_mm``), modelled as a 128x128-tile persistent kernel."""

    launch_us: float = 4.0
    latency_us: float = 2.0
    hbm_eff: float = 0.8
    mma_eff: float = 0.7
    l2_gbps_per_sm: float = 60.0
    pad_us: float = 2.0             # M not a multiple of 4: the op pads A first
    tile_us: float = 0.5            # per tile an SM runs


@dataclass(frozen=True)
class Sm90Coefficients:
    """Coefficients of the project's Hopper kernel (``sm90``). Priors set from the H200 timings in
    docs/sm90.md (4096x7168x7168 at 128x128: 432 us, 367 us without loads); no fit has seen this backend
    yet, so sweep it with ``--prune none`` first and ``gemm fit`` its log."""

    launch_us: float = 3.0
    latency_us: float = 1.5
    hbm_eff: float = 0.85
    wgmma_eff: float = 0.75         # share of the FP8 rate of a consumer's wgmmas
    promote_ns_per_kelem: float = 4.5  # fp32 promotion of 1024 accumulators per K block, one consumer alone
    turn_overlap: float = 0.1       # share of that left with two consumers taking issue turns
    l2_gbps_per_sm: float = 60.0
    cluster_factor: float = 1.1     # 2-CTA clusters: measured slower than 1x1 even without loads
    splitk_fixed_us: float = 1.0    # counter hand-off of a split tile
    slot_gbps: float = 60.0         # one SM reading back the fp32 partial tiles of a split tile
    tile_us: float = 0.5            # per work unit: pipeline fill and output epilogue


Coefficients = TritonCoefficients | CutlassCoefficients | CublasCoefficients | Sm90Coefficients
COEFFICIENT_TYPES: dict[str, type] = {
    "triton": TritonCoefficients, "cutlass": CutlassCoefficients, "cublas": CublasCoefficients,
    "sm90": Sm90Coefficients}


def smooth_max(*values: float) -> float:
    """A differentiable stand-in for max() of positive times (p-norm)."""
    top = max(values)
    if top <= 0:
        return 0.0
    return top * sum((v / top) ** _SMOOTH_P for v in values) ** (1.0 / _SMOOTH_P)


def _sm_flops(arch: ArchSpec) -> float:
    return arch.fp8_tflops * 1e12 / arch.num_sms


def _l2_bytes_per_s(arch: ArchSpec, gbps_per_sm: float) -> float:
    return gbps_per_sm * 1e9 * arch.num_sms


# --------------------------------------------------------------------------- Triton


def triton_ctas_per_sm(p: dict, arch: ArchSpec) -> int:
    """CTAs of the Triton kernel one SM holds, by shared memory and registers."""
    unroll = int(p.get("k_unroll", 1))  # an unrolled K step holds two tiles and two accumulators
    smem = p["num_stages"] * (p["block_m"] + p["block_n"]) * p["block_k"] * unroll
    by_smem = max(1, arch.smem_per_block_bytes // max(smem, 1))
    threads = 32 * p["num_warps"]
    regs_per_thread = max(64, unroll * p["block_m"] * p["block_n"] // threads + 64)  # accumulators + addressing
    by_regs = max(1, _REGISTERS_PER_SM // (threads * min(regs_per_thread, 255)))
    return min(by_smem, by_regs, _MAX_CTAS_PER_SM)


def triton_us(problem: GemmProblem, p: dict, arch: ArchSpec, c: TritonCoefficients) -> float:
    """Microseconds of one launch of the Triton kernel with params ``p`` (TritonParams fields)."""
    bm, bn, bk = p["block_m"], p["block_n"], p["block_k"]
    k_iters = math.ceil(problem.k / bk)
    split = min(max(1, int(p.get("split_k", 1))), k_iters)
    iters_per_unit = math.ceil(k_iters / split)
    work = math.ceil(problem.m / bm) * math.ceil(problem.n / bn) * split
    slots = arch.num_sms * triton_ctas_per_sm(p, arch)
    if p.get("persistent"):
        slots = min(slots, arch.num_sms)
    waves = math.ceil(work / slots)
    per_sm = max(1, math.ceil(min(work, slots) / arch.num_sms))  # CTAs sharing one SM's tensor cores

    wgmma = bm >= 64 and p["num_warps"] % 4 == 0
    efficiency = c.wgmma_eff if wgmma else c.mma_eff
    compute_s = 2 * max(bm, 64 if wgmma else 16) * bn * bk * per_sm / (_sm_flops(arch) * efficiency)
    unroll = int(p.get("k_unroll", 1))
    scale_s = c.scale_ns_per_kelem * 1e-9 * bm * bn / 1024 * per_sm * (c.unroll_scale if unroll > 1 else 1.0)
    # Beyond 64 fp32 accumulators per thread (128x128 on 4 warps, or two unrolled accumulators) the
    # kernel runs out of registers for its pipeline and spills: measured 2-3x slower at large M.
    accumulators = unroll * bm * bn / (32 * p["num_warps"])
    pressure = 1.0 + c.pressure * max(0.0, accumulators / 64 - 1.0)
    latency_s = c.latency_us * 1e-6 / max(1, p["num_stages"] - 1)
    if p.get("use_tma"):
        latency_s *= c.tma_factor
    step_s = smooth_max((compute_s + scale_s) * pressure, latency_s)
    main_s = waves * (iters_per_unit * step_s + c.tile_us * 1e-6)

    hbm_s = problem.min_bytes / (arch.hbm_tbps * 1e12 * c.hbm_eff)
    rows_read = min(bm, problem.m)  # rows past M are clamped onto real rows: they hit in L1
    l2_s = work * iters_per_unit * (rows_read + bn) * bk / _l2_bytes_per_s(arch, c.l2_gbps_per_sm)
    split_s = 0.0
    if split > 1:  # fp32 partials written and read back through L2, plus the arrival counter
        split_s = 2 * work * bm * bn * 4 / _l2_bytes_per_s(arch, c.l2_gbps_per_sm) + c.split_fixed_us * 1e-6
    return c.launch_us + (smooth_max(main_s, hbm_s, l2_s) + split_s) * 1e6


# --------------------------------------------------------------------------- CUTLASS and cuBLAS


@functools.lru_cache(maxsize=64)
def _cutlass_stages(tile_m: int, tile_n: int, tile_k: int, stages: int, smem_per_block: int) -> int:
    """Explicit stages, or as many as fit beside the epilogue (what ``stages=0`` builds)."""
    if stages:
        return stages
    from gemm.kernels.cutlass.backend import EPILOGUE_SMEM_BYTES, SM90_SMEM_BYTES, stage_bytes
    from gemm.kernels.cutlass.config import CutlassParams

    per_stage = stage_bytes(CutlassParams(tile_m=tile_m, tile_n=tile_n, tile_k=tile_k))
    return max(2, (min(smem_per_block, SM90_SMEM_BYTES) - EPILOGUE_SMEM_BYTES) // per_stage)


def _tile_loop_s(tile_m: int, tile_n: int, in_flight: int, efficiency: float,
                 latency_us: float, stages: int, arch: ArchSpec) -> float:
    """Seconds of one K step of one SM that works on ``in_flight`` tiles at once."""
    compute_s = 2 * tile_m * tile_n * 128 * in_flight / (_sm_flops(arch) * efficiency)
    latency_s = latency_us * 1e-6 / max(1, stages - 1)
    return smooth_max(compute_s, latency_s)


def cutlass_us(problem: GemmProblem, p: dict, arch: ArchSpec, c: CutlassCoefficients) -> float:
    """Microseconds of one launch of the CUTLASS kernel with params ``p`` (CutlassParams fields)."""
    tm, tn, tk = p.get("tile_m", 128), p.get("tile_n", 128), p.get("tile_k", 128)
    pingpong = p.get("schedule") == "pingpong"
    in_flight = 2 if pingpong else 1  # ping-pong's two consumer warp groups work on two tiles
    efficiency = c.pingpong_eff if pingpong else c.coop_eff
    stages = _cutlass_stages(tm, tn, tk, int(p.get("stages", 0)), arch.smem_per_block_bytes)
    step_s = _tile_loop_s(tm, tn, in_flight, efficiency, c.latency_us, stages, arch)
    k_iters = math.ceil(problem.k / tk)
    tiles = math.ceil(problem.m / tm) * math.ceil(problem.n / tn)
    slots = arch.num_sms * in_flight
    l2_bw = _l2_bytes_per_s(arch, c.l2_gbps_per_sm)
    multicast = max(1, int(p.get("cluster_m", 1)) * int(p.get("cluster_n", 1)))
    # A 2-CTA cluster multicasts one operand: about a quarter of the tile loads are shared.
    l2_bytes = tiles * k_iters * (min(tm, problem.m) + tn) * tk * (1.0 - 0.25 * (multicast - 1) / multicast)
    extra_s, tile_s = 0.0, c.tile_us * 1e-6
    decomposition = p.get("decomposition", "data_parallel")
    if decomposition == "splitk" and int(p.get("splits", 1)) > 1:
        splits = min(int(p["splits"]), k_iters)
        main_s = math.ceil(tiles * splits / slots) * (math.ceil(k_iters / splits) * step_s + tile_s)
        extra_s = 2 * tiles * splits * tm * tn * 4 / l2_bw + c.splitk_fixed_us * 1e-6
    elif decomposition == "streamk":
        full_waves, remainder = divmod(tiles, arch.num_sms)
        main_s = full_waves * (k_iters * step_s + tile_s)
        if remainder:
            # The remainder tiles' K loops are shared by up to num_sms / remainder SMs each; their partials are
            # fixed up one after another. The scheduler shares no more than pays (CUTLASS's heuristic caps it).
            most = max(1, min(k_iters, arch.num_sms // remainder))
            main_s += min(math.ceil(k_iters / s) * step_s + tile_s + c.streamk_fixup_us * 1e-6 * (s - 1)
                          + 2 * remainder * (s - 1) * tm * tn * 4 / l2_bw for s in range(1, most + 1))
    else:
        main_s = math.ceil(tiles / slots) * (k_iters * step_s + tile_s)
    hbm_s = problem.min_bytes / (arch.hbm_tbps * 1e12 * c.hbm_eff)
    return c.launch_us + (smooth_max(main_s, hbm_s, l2_bytes / l2_bw) + extra_s) * 1e6


def cublas_us(problem: GemmProblem, p: dict, arch: ArchSpec, c: CublasCoefficients) -> float:
    """Microseconds of one cuBLAS blockwise call (no params: cuBLAS picks its kernel)."""
    k_iters = math.ceil(problem.k / 128)
    tiles = math.ceil(problem.m / 128) * math.ceil(problem.n / 128)
    step_s = _tile_loop_s(128, 128, 1, c.mma_eff, c.latency_us, 6, arch)
    main_s = math.ceil(tiles / arch.num_sms) * (k_iters * step_s + c.tile_us * 1e-6)
    hbm_s = problem.min_bytes / (arch.hbm_tbps * 1e12 * c.hbm_eff)
    l2_s = tiles * k_iters * (min(128, problem.m) + 128) * 128 / _l2_bytes_per_s(arch, c.l2_gbps_per_sm)
    pad = c.pad_us if problem.m % 4 else 0.0
    return c.launch_us + pad + smooth_max(main_s, hbm_s, l2_s) * 1e6


def sm90_us(problem: GemmProblem, p: dict, arch: ArchSpec, c: Sm90Coefficients) -> float:
    """Microseconds of one launch of the project's Hopper kernel with params ``p`` (Sm90Params fields).

    Per K block a tile costs its wgmmas plus the promotion not hidden under the other consumer's wgmmas;
    split-K (``splits`` S) runs tiles x S units in rounds of floor(SMs / S) tiles, and the unit of split 0
    reads back S - 1 fp32 partial tiles before its epilogue. Stream-K (``stream_k``) runs the data-parallel
    rounds of whole tiles, then each SM's span of ceil(I / G) K blocks of the stream-K tiles
    (``gemm.kernels.sm90.streamk``), plus, where spans cut tiles, the owner's read-back of the other
    contributors' partials and the counter hand-off. Swap-AB (``swap_ab``) is costed as the MMA's
    problem D^T = B A^T, M' = N and N' = M.
    """
    hbm_bytes = problem.min_bytes  # the same bytes either way
    if p.get("swap_ab"):
        problem = problem.transposed()
    bm, bn = int(p.get("block_m", 128)), int(p.get("block_n", 128))
    consumers = 1 if bm == 64 else 2
    stages = int(p.get("stages", 0)) or 4
    cluster = max(1, int(p.get("cluster_m", 1)) * int(p.get("cluster_n", 1)))
    splits = max(1, int(p.get("splits", 1)))
    k_iters = math.ceil(problem.k / 128)
    splits = min(splits, k_iters)
    tiles = math.ceil(problem.m / bm) * math.ceil(problem.n / bn)
    promote_s = c.promote_ns_per_kelem * 1e-9 * bm * bn / 1024 / consumers
    if consumers == 2:
        promote_s *= c.turn_overlap
    step_s = _tile_loop_s(bm, bn, 1, c.wgmma_eff, c.latency_us, stages, arch) + promote_s
    l2_bw = _l2_bytes_per_s(arch, c.l2_gbps_per_sm)
    # A 2-CTA cluster multicasts one operand: about a quarter of the tile loads are shared.
    l2_bytes = tiles * k_iters * (min(bm, problem.m) + bn) * 128 * (1.0 - 0.25 * (cluster - 1) / cluster)
    tile_s = c.tile_us * 1e-6
    if p.get("stream_k"):
        plan = streamk.schedule(tiles, k_iters, arch.num_sms)  # 1x1 clusters: one per SM
        g, dp_rounds, iters = plan.clusters, plan.dp_rounds, plan.iterations
        base, span = iters // g, math.ceil(iters / g)
        cut = iters % g != 0 or base % k_iters != 0  # some tile is shared between spans
        peers = min(g - 1, math.ceil((k_iters - 1) / base)) if cut else 0  # partials an owner reads, at most
        fixup_s = peers * bm * bn * 4 / (c.slot_gbps * 1e9) + (c.splitk_fixed_us * 1e-6 if peers else 0.0)
        pieces = math.ceil(span / k_iters) + (1 if cut else 0)
        main_s = dp_rounds * (k_iters * step_s + tile_s) + span * step_s + pieces * tile_s + fixup_s
    elif splits > 1:
        per_round = max(1, min(arch.num_sms // splits, tiles))
        rounds = math.ceil(tiles / per_round)
        slots_s = (splits - 1) * bm * bn * 4 / (c.slot_gbps * 1e9) + c.splitk_fixed_us * 1e-6
        main_s = rounds * (math.ceil(k_iters / splits) * step_s + tile_s + slots_s)
    else:
        main_s = math.ceil(tiles / arch.num_sms) * (k_iters * step_s + tile_s)
    if cluster > 1:
        main_s *= c.cluster_factor
    hbm_s = hbm_bytes / (arch.hbm_tbps * 1e12 * c.hbm_eff)
    return c.launch_us + smooth_max(main_s, hbm_s, l2_bytes / l2_bw) * 1e6


#: The time function of each modelled backend. The engines' Triton kernel is ours without split-K, TMA,
#: persistence or K unrolling (a plain config of ``triton_us``), so it shares the Triton coefficients.
MODELS = {"triton": triton_us, "cutlass": cutlass_us, "cublas": cublas_us, "sm90": sm90_us,
          "vllm_triton": triton_us, "sglang_triton": triton_us}
#: The backend whose fitted coefficients a modelled backend without its own uses.
SHARED_COEFFICIENTS = {"vllm_triton": "triton", "sglang_triton": "triton"}
