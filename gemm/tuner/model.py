"""A cheap analytical time model of the Triton kernel, used to rank candidates before any is built.

The model only has to order candidates well enough that the best ones survive
the per-point budget (measurement decides among the survivors), so it keeps to
first-order effects:

* **waves**: work units (output tiles x K slices) are spread over
  ``num_sms x CTAs-per-SM`` slots; the last partial wave costs a full one;
* **per K step**, a CTA is limited by tensor-core time (its share of the SM's
  FP8 rate; M tiles under 64 rows still occupy a 64-row wgmma, and without a
  full warpgroup multiple the kernel falls back to slower MMA) or by memory
  latency: with ``stages - 1`` steps in flight it cannot step faster than
  that many round trips allow (Little's law);
* **bandwidth**: the unique bytes (``GemmProblem.min_bytes``) cross HBM once,
  every CTA's tile loads cross L2; the slowest of loop, HBM and L2 wins --
  which is why small M needs split-K or many tiles to fill the machine;
* **split-K** pays a fp32 partial write and read per slice and an
  arrival counter;
* a fixed launch/graph-node cost.
"""

from __future__ import annotations

import math

from gemm.arch import ArchSpec
from gemm.problem import GemmProblem

MODEL_VERSION = "triton-roofline-1"

_LAUNCH_US = 2.0              # graph node + prologue/epilogue of a short kernel
_MEM_LATENCY_S = 1.0e-6       # loaded HBM latency seen by a pipelined TMA/LDG stream
_HBM_EFFICIENCY = 0.85        # achievable share of datasheet bandwidth
_WGMMA_EFFICIENCY = 0.70      # achievable share of datasheet FP8 rate with wgmma
_MMA_EFFICIENCY = 0.30        # without a full warpgroup tile the kernel cannot use wgmma
_L2_TBPS = 8.0                # split-K partials stay in L2
_REGISTERS_PER_SM = 65536
_MAX_CTAS_PER_SM = 4


def _ctas_per_sm(p: dict, arch: ArchSpec) -> int:
    unroll = int(p.get("k_unroll", 1))  # an unrolled K step holds two tiles and two accumulators
    smem = p["num_stages"] * (p["block_m"] + p["block_n"]) * p["block_k"] * unroll
    by_smem = max(1, arch.smem_per_block_bytes // max(smem, 1))
    threads = 32 * p["num_warps"]
    regs_per_thread = max(64, unroll * p["block_m"] * p["block_n"] // threads + 64)  # accumulators + addressing
    by_regs = max(1, _REGISTERS_PER_SM // (threads * min(regs_per_thread, 255)))
    return min(by_smem, by_regs, _MAX_CTAS_PER_SM)


def predict_triton_us(problem: GemmProblem, params: dict, arch: ArchSpec) -> float:
    """Estimated microseconds of one launch of the Triton kernel with ``params`` (TritonParams fields)."""
    p = params
    bm, bn, bk = p["block_m"], p["block_n"], p["block_k"]
    split = max(1, int(p.get("split_k", 1)))
    tiles = math.ceil(problem.m / bm) * math.ceil(problem.n / bn)
    k_iters = math.ceil(problem.k / bk)
    split = min(split, k_iters)
    iters_per_unit = math.ceil(k_iters / split)
    work = tiles * split
    slots = arch.num_sms * _ctas_per_sm(p, arch)
    if p.get("persistent"):
        slots = min(slots, arch.num_sms)
    waves = math.ceil(work / slots)
    active = min(work, slots)
    per_sm = max(1, math.ceil(active / arch.num_sms))  # CTAs sharing one SM's tensor cores

    wgmma = bm >= 64 and p["num_warps"] % 4 == 0
    efficiency = _WGMMA_EFFICIENCY if wgmma else _MMA_EFFICIENCY
    sm_flops = arch.fp8_tflops * 1e12 / arch.num_sms * efficiency
    step_flops = 2 * max(bm, 64) * bn * bk
    compute_s = step_flops * per_sm / sm_flops

    # Latency: a CTA keeps ``stages - 1`` K steps in flight, so it cannot step faster than that many
    # memory round trips allow (Little's law); this is what starves small-M launches of few CTAs.
    latency_s = _MEM_LATENCY_S / max(1, p["num_stages"] - 1)
    if p.get("use_tma"):
        latency_s *= 0.95  # bulk copies: fewer address instructions in the loop
    main_s = waves * iters_per_unit * max(compute_s, latency_s)

    # Bandwidth: unique bytes come from HBM once; every CTA's tile loads go through L2.
    hbm_s = problem.min_bytes / (arch.hbm_tbps * 1e12 * _HBM_EFFICIENCY)
    rows_read = min(bm, problem.m)  # rows past M are clamped onto real rows: they hit in L1
    l2_bytes = work * iters_per_unit * (rows_read + bn) * bk
    l2_s = l2_bytes / (_L2_TBPS * 1e12)
    split_s = 0.0
    if split > 1:  # fp32 partials written and read back through L2, plus the arrival counter
        split_s = 2 * work * bm * bn * 4 / (_L2_TBPS * 1e12) + 1.0e-6
    body_s = max(main_s, hbm_s, l2_s) + split_s
    return _LAUNCH_US + body_s * 1e6


def predict_us(backend_name: str, problem: GemmProblem, params: dict, arch: ArchSpec) -> float | None:
    """The model's time for a candidate, or None for backends the model does not describe."""
    if backend_name == "triton":
        return predict_triton_us(problem, params, arch)
    return None
