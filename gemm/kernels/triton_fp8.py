"""Triton block-scaled FP8 GEMM (DeepSeek-V3 recipe) and its backend.

``C[M, N] = sum_kb (A[:, kb] @ B[:, kb]^T) * sa[:, kb] * sb[n // 128, kb]``

One program computes a BLOCK_M x BLOCK_N output tile over a range of K
blocks; every BLOCK_K step multiplies its fp32 partial product by the
activation scales (per row) and weight scales (per 128 columns of N) before
accumulating. Beyond the classic kernel engines ship:

* **split-K in one launch**: with SPLIT_K > 1 each K slice writes its fp32
  partial tile to a workspace and bumps a per-tile counter; the last slice
  to arrive sums the partials in slice order (deterministic) and writes the
  output, then resets the counter, so no memset or second kernel is needed.
  Small M is memory-bound and has few tiles (7168 x 2304 weights at
  BLOCK_N=128 give 56 tiles for 132 SMs): splitting K fills the machine.
* **TMA** (``use_tma``): A and B tiles come through host-built tensor
  descriptors (Hopper's bulk tensor copy engine); out-of-bounds rows read
  as zeros, so ragged M and N need no masks.
* **persistent** schedule: ``min(work, num_sms * waves)`` programs loop over
  the (tile, K-slice) work units, grouped along M for L2 reuse of B.

The kernel runs under ``TRITON_INTERPRET=1`` too (CPU tensors), which is how
the CPU tests check it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import threading
from typing import Iterable

import torch
import triton
import triton.language as tl

from gemm import envs
from gemm.arch import ArchSpec
from gemm.kernels.base import Backend, GemmFn, KernelParams, LaunchError, UnsupportedProblem
from gemm.problem import GemmProblem


@triton.jit
def _tile_coords(work_id, num_pid_m, num_pid_n, SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n, pid_k) of a work unit; tiles are grouped GROUP_M rows at a time for L2 reuse."""
    tile_id = work_id // SPLIT_K
    pid_k = work_id % SPLIT_K
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((tile_id % num_pid_in_group) % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return tile_id, pid_m, pid_n, pid_k


@triton.jit
def _load_step(a_ptr, b_ptr, a_ptrs, b_ptrs, as_ptrs, bs_ptrs, it, pid_m, pid_n, K, offs_k,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SCALE_K: tl.constexpr,
               USE_TMA: tl.constexpr, EVEN_K: tl.constexpr):
    """A [BM, BK] and B^T [BK, BN] tiles of K step ``it`` and their combined scale [BM, BN]."""
    k0 = it * BLOCK_K
    if USE_TMA:
        a = a_ptr.load([pid_m * BLOCK_M, k0])
        b = b_ptr.load([pid_n * BLOCK_N, k0]).T
    elif EVEN_K:
        a = tl.load(a_ptrs + k0)
        b = tl.load(b_ptrs + k0)
    else:
        a = tl.load(a_ptrs + k0, mask=offs_k[None, :] < K - k0, other=0.0)
        b = tl.load(b_ptrs + k0, mask=offs_k[:, None] < K - k0, other=0.0)
    kb = k0 // SCALE_K
    a_s = tl.load(as_ptrs + kb)
    b_s = tl.load(bs_ptrs + kb)
    return a, b, a_s[:, None] * b_s[None, :]


@triton.jit
def _block_fp8_tile(
    a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr, lock_ptr,
    M, N, K, stride_am, stride_bn, stride_cm, stride_as, stride_bs,
    work_id, num_pid_m, num_pid_n, k_blocks_per_split, num_k_iters,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SCALE_N: tl.constexpr, SCALE_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, USE_TMA: tl.constexpr, EVEN_K: tl.constexpr, K_UNROLL: tl.constexpr,
):
    tile_id, pid_m, pid_n, pid_k = _tile_coords(work_id, num_pid_m, num_pid_n, SPLIT_K, GROUP_M)
    it_start = pid_k * k_blocks_per_split
    it_end = tl.minimum(it_start + k_blocks_per_split, num_k_iters)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows past M / N are clamped (wrapped) so loads need no mask; their results are never stored.
    safe_m = offs_m % M
    safe_n = offs_n % N
    as_ptrs = as_ptr + safe_m * stride_as
    bs_ptrs = bs_ptr + (safe_n // SCALE_N) * stride_bs
    a_ptrs = a_ptr  # unused with TMA
    b_ptrs = b_ptr
    if not USE_TMA:
        a_ptrs = a_ptr + safe_m[:, None] * stride_am + offs_k[None, :]
        b_ptrs = b_ptr + safe_n[None, :] * stride_bn + offs_k[:, None]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if K_UNROLL == 2:
        # Two independent products per step: the second MMA runs while the first is scaled.
        for j in range(0, (it_end - it_start) // 2):
            it = it_start + 2 * j
            a0, b0, s0 = _load_step(a_ptr, b_ptr, a_ptrs, b_ptrs, as_ptrs, bs_ptrs, it, pid_m, pid_n, K, offs_k,
                                    BLOCK_M, BLOCK_N, BLOCK_K, SCALE_K, USE_TMA, EVEN_K)
            a1, b1, s1 = _load_step(a_ptr, b_ptr, a_ptrs, b_ptrs, as_ptrs, bs_ptrs, it + 1, pid_m, pid_n, K, offs_k,
                                    BLOCK_M, BLOCK_N, BLOCK_K, SCALE_K, USE_TMA, EVEN_K)
            p0 = tl.dot(a0, b0)
            p1 = tl.dot(a1, b1)
            acc += p0 * s0 + p1 * s1
        if (it_end - it_start) % 2 == 1:
            a0, b0, s0 = _load_step(a_ptr, b_ptr, a_ptrs, b_ptrs, as_ptrs, bs_ptrs, it_end - 1, pid_m, pid_n, K,
                                    offs_k, BLOCK_M, BLOCK_N, BLOCK_K, SCALE_K, USE_TMA, EVEN_K)
            acc += tl.dot(a0, b0) * s0
    else:
        for it in range(it_start, it_end):
            a, b, scale = _load_step(a_ptr, b_ptr, a_ptrs, b_ptrs, as_ptrs, bs_ptrs, it, pid_m, pid_n, K, offs_k,
                                     BLOCK_M, BLOCK_N, BLOCK_K, SCALE_K, USE_TMA, EVEN_K)
            acc += tl.dot(a, b) * scale

    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :]
    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K == 1:
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)
    else:
        # Partial tiles live at ws[tile, split] as dense BLOCK_M x BLOCK_N fp32 blocks.
        tile_offs = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        tile_base = ws_ptr + tile_id.to(tl.int64) * (SPLIT_K * BLOCK_M * BLOCK_N)
        tl.store(tile_base + pid_k * (BLOCK_M * BLOCK_N) + tile_offs, acc)
        # Every thread's partial must be written before the counter says so.
        tl.debug_barrier()
        arrived = tl.atomic_add(lock_ptr + tile_id, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in range(SPLIT_K):
                total += tl.load(tile_base + s * (BLOCK_M * BLOCK_N) + tile_offs, cache_modifier=".cg")
            tl.store(c_ptrs, total.to(c_ptr.dtype.element_ty), mask=c_mask)
            # Leave the counter at zero for the next launch (no memset needed).
            tl.atomic_xchg(lock_ptr + tile_id, 0, sem="relaxed", scope="gpu")


@triton.jit
def block_fp8_gemm_kernel(
    a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr, lock_ptr,
    M, N, K, stride_am, stride_bn, stride_cm, stride_as, stride_bs, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SCALE_N: tl.constexpr, SCALE_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, USE_TMA: tl.constexpr, PERSISTENT: tl.constexpr,
    EVEN_K: tl.constexpr, K_UNROLL: tl.constexpr,
):
    """Block-scaled FP8 GEMM; see the module docstring. ``a_ptr``/``b_ptr`` are descriptors when USE_TMA."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_k_iters = tl.cdiv(K, BLOCK_K)
    k_blocks_per_split = tl.cdiv(num_k_iters, SPLIT_K)
    if PERSISTENT:
        total_work = num_pid_m * num_pid_n * SPLIT_K
        for work_id in range(tl.program_id(0), total_work, num_programs):
            _block_fp8_tile(a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr, lock_ptr,
                            M, N, K, stride_am, stride_bn, stride_cm, stride_as, stride_bs,
                            work_id, num_pid_m, num_pid_n, k_blocks_per_split, num_k_iters,
                            BLOCK_M, BLOCK_N, BLOCK_K, SCALE_N, SCALE_K, GROUP_M, SPLIT_K, USE_TMA, EVEN_K, K_UNROLL)
    else:
        _block_fp8_tile(a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr, lock_ptr,
                        M, N, K, stride_am, stride_bn, stride_cm, stride_as, stride_bs,
                        tl.program_id(0), num_pid_m, num_pid_n, k_blocks_per_split, num_k_iters,
                        BLOCK_M, BLOCK_N, BLOCK_K, SCALE_N, SCALE_K, GROUP_M, SPLIT_K, USE_TMA, EVEN_K, K_UNROLL)


@dataclasses.dataclass(frozen=True)
class TritonParams(KernelParams):
    """Compile-time configuration of ``block_fp8_gemm_kernel``."""

    block_m: int = 64
    block_n: int = 128
    block_k: int = 128
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    split_k: int = 1
    use_tma: bool = False
    persistent: bool = False
    k_unroll: int = 1


# --------------------------------------------------------------------------- launch helpers

_LOCKS: dict[torch.device, torch.Tensor] = {}
# Counters outgrown by a larger launch stay allocated: a CUDA graph captured earlier still replays with their
# address, and freed memory would be handed to other tensors that its kernels would then write into.
_RETIRED_LOCKS: list[torch.Tensor] = []
_LOCKS_GUARD = threading.Lock()


def _split_k_counters(device: torch.device, tiles: int) -> torch.Tensor:
    """Per-tile arrival counters shared by all launches on ``device``; kernels leave them at zero.

    Concurrent split-K launches on different streams of one device would share
    counters; the op runs on one stream at a time, as engines do. Outgrown counters are kept, never freed,
    for the graphs captured with them.
    """
    with _LOCKS_GUARD:
        counters = _LOCKS.get(device)
        if counters is None or counters.numel() < tiles:
            size = max(tiles, 4096 if counters is None else 2 * counters.numel())
            if counters is not None:
                _RETIRED_LOCKS.append(counters)
            counters = torch.zeros(size, dtype=torch.int32, device=device)
            _LOCKS[device] = counters
        return counters


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _ensure_tma_allocator() -> None:
    # Host-built descriptors need no device scratch, but some Triton versions ask for an allocator anyway.
    if getattr(_ensure_tma_allocator, "done", False):
        return
    try:
        triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    except AttributeError:
        pass
    _ensure_tma_allocator.done = True


def launch(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
           params: TritonParams, out_dtype: torch.dtype = torch.bfloat16,
           block_size: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """Run the kernel on already-validated inputs (see ``gemm.problem.validate_inputs``).

    a [M, K] e4m3 (unit stride along K), b [N, K] e4m3 contiguous, a_scale
    [M, ceil(K/128)] fp32 (MN-major scales are copied row-major first: the kernel reads each
    row's scales at unit stride), b_scale [ceil(N/128), ceil(K/128)] fp32 -> [M, N] ``out_dtype``.
    """
    if a_scale.stride(1) != 1:
        a_scale = a_scale.contiguous()
    m, k = a.shape
    n = b.shape[0]
    p = params
    out = torch.empty((m, n), dtype=out_dtype, device=a.device)
    tiles = triton.cdiv(m, p.block_m) * triton.cdiv(n, p.block_n)
    k_iters = triton.cdiv(k, p.block_k)
    split_k = max(1, min(p.split_k, k_iters))
    if split_k > 1:
        workspace = torch.empty(tiles * split_k * p.block_m * p.block_n, dtype=torch.float32, device=a.device)
        counters = _split_k_counters(a.device, tiles)
    else:
        workspace = counters = out  # unused placeholders
    work = tiles * split_k
    if p.persistent and a.is_cuda:
        num_programs = min(work, _num_sms(a.device.index or 0))
    else:
        num_programs = work
    a_arg, b_arg = a, b
    if p.use_tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        if a.is_cuda:
            _ensure_tma_allocator()
        a_arg = TensorDescriptor(a, [m, k], [a.stride(0), 1], [p.block_m, p.block_k])
        b_arg = TensorDescriptor(b, [n, k], [b.stride(0), 1], [p.block_n, p.block_k])
    block_fp8_gemm_kernel[(num_programs,)](
        a_arg, b_arg, out, a_scale, b_scale, workspace, counters,
        m, n, k, a.stride(0), b.stride(0), out.stride(0), a_scale.stride(0), b_scale.stride(0), num_programs,
        BLOCK_M=p.block_m, BLOCK_N=p.block_n, BLOCK_K=p.block_k,
        SCALE_N=block_size[0], SCALE_K=block_size[1], GROUP_M=p.group_m,
        SPLIT_K=split_k, USE_TMA=p.use_tma, PERSISTENT=p.persistent and a.is_cuda,
        EVEN_K=(k % p.block_k == 0), K_UNROLL=p.k_unroll,
        num_warps=p.num_warps, num_stages=p.num_stages,
    )
    return out


# --------------------------------------------------------------------------- backend

_POW2_BLOCK_M = (16, 32, 64, 128, 256)
_POW2_BLOCK_N = (32, 64, 128, 256)


def static_check(problem: GemmProblem, params: KernelParams) -> str | None:
    """Why ``params`` cannot run ``problem`` on any GPU (None if they can); see also ``TritonBackend.check``."""
    p = params
    if not isinstance(p, TritonParams):
        return f"expected TritonParams, got {type(p).__name__}"
    if p.block_m not in _POW2_BLOCK_M:
        return f"block_m={p.block_m} not in {_POW2_BLOCK_M}"
    if p.block_n not in _POW2_BLOCK_N:
        return f"block_n={p.block_n} not in {_POW2_BLOCK_N}"
    if p.block_k not in (64, 128) or problem.block_k % p.block_k:
        return f"block_k={p.block_k} must be 64 or 128 and divide the scale block {problem.block_k}"
    if p.block_n > problem.block_n and p.block_n % problem.block_n:
        return f"block_n={p.block_n} must divide or be a multiple of the scale block {problem.block_n}"
    if p.k_unroll not in (1, 2):
        return f"k_unroll={p.k_unroll} must be 1 or 2"
    if p.num_warps not in (2, 4, 8, 16) or p.num_stages < 1 or p.group_m < 1 or p.split_k < 1:
        return "num_warps must be 2/4/8/16; num_stages, group_m and split_k >= 1"
    k_iters = math.ceil(problem.k / p.block_k)
    if p.split_k > k_iters:
        return f"split_k={p.split_k} exceeds the {k_iters} K iterations"
    if p.split_k > 1 and math.ceil(k_iters / p.split_k) * (p.split_k - 1) >= k_iters:
        return f"split_k={p.split_k} leaves an empty K slice for {k_iters} K iterations"
    if p.use_tma and problem.k % 16:
        return "TMA needs K to be a multiple of 16 (16-byte row pitch)"
    live = p.block_m * p.block_n * (2 if p.k_unroll == 2 else 1)
    if live // (32 * p.num_warps) > 192:
        return (f"{p.block_m}x{p.block_n} fp32 accumulators (k_unroll={p.k_unroll}) need more than 192 "
                f"registers/thread at {p.num_warps} warps")
    return None


class TritonBackend(Backend):
    """The Triton kernel as a tuner/op backend."""

    name = "triton"
    params_type = TritonParams

    def unavailable_reason(self, device=None) -> str | None:
        if envs.triton_interpret():
            return None
        if not torch.cuda.is_available():
            return "no CUDA device (set TRITON_INTERPRET=1 to run on the CPU interpreter)"
        major, _ = torch.cuda.get_device_capability(device)
        if major < 9:
            return f"FP8 tensor cores need compute capability >= 8.9; this device has {major}.x"
        return None

    def check(self, problem: GemmProblem, params: KernelParams, arch: ArchSpec) -> str | None:
        reason = static_check(problem, params)
        if reason is not None:
            return reason
        p = params
        smem = p.num_stages * (p.block_m + p.block_n) * p.block_k * (2 if p.k_unroll == 2 else 1)
        if smem > arch.smem_per_block_bytes:
            return f"needs {smem} B of shared memory for {p.num_stages} stages, limit {arch.smem_per_block_bytes}"
        return None

    def param_space(self, problem: GemmProblem, arch: ArchSpec) -> Iterable[TritonParams]:
        """Candidates by M range; ``check`` filters what does not fit the problem or the GPU.

        Decode (M <= 64): narrow M tiles, split-K up to 8, TMA or not.
        Mid (M <= 512): 64/128-row tiles, split-K up to 4, K unrolled by 2 or not.
        Prefill: 64/128-row tiles up to 256 wide, persistent or not, K unrolled or not.
        """
        m = problem.m
        if m <= 64:
            block_ms = [bm for bm in (16, 32, 64) if bm <= max(16, 1 << (m - 1).bit_length())]
            for bm, bn, split, tma, stages in itertools.product(block_ms, (64, 128), (1, 2, 4, 8),
                                                                (False, True), (3, 4)):
                yield TritonParams(bm, bn, 128, 8, 4, stages, split, tma)
        elif m <= 512:
            for (bm, bn, warps), split, tma, unroll in itertools.product(
                    ((64, 64, 4), (64, 128, 4), (64, 256, 8), (128, 128, 8), (128, 256, 8)),
                    (1, 2, 4), (False, True), (1, 2)):
                yield TritonParams(bm, bn, 128, 8, warps, 3, split, tma, False, unroll)
        else:
            for (bm, bn, warps), stages, (tma, persistent), unroll in itertools.product(
                    ((64, 256, 8), (128, 128, 8), (128, 256, 8), (128, 128, 4)), (3, 4),
                    ((False, False), (True, False), (True, True)), (1, 2)):
                yield TritonParams(bm, bn, 128, 8, warps, stages, 1, tma, persistent, unroll)

    def default_params(self, problem: GemmProblem, arch: ArchSpec) -> TritonParams:
        """Heuristic used when no tuned config exists.

        Small M (decode) is bandwidth-bound: narrow 16/32/64 x 64 tiles and
        enough K slices (up to 8, at least 4 K steps each) that tiles x slices
        covers the SMs about twice. 64x128 tiles (4 warps) up to M = 256, 64x256
        (8 warps) above; TMA loads whenever K allows (measured on H100: these
        won most points of a sweep over DeepSeek-V3 shapes).
        """
        if problem.m <= 64:
            block_m, block_n, warps, stages = (16 if problem.m <= 16 else 32 if problem.m <= 32 else 64), 64, 4, 4
        elif problem.m <= 256:
            block_m, block_n, warps, stages = 64, 128, 4, 3
        else:
            block_m, block_n, warps, stages = 64, 256, 8, 3
        tiles = math.ceil(problem.m / block_m) * math.ceil(problem.n / block_n)
        k_iters = math.ceil(problem.k / 128)
        split_k = 1
        while (problem.m <= 256 and tiles * split_k * 2 <= 2 * arch.num_sms and split_k * 2 <= 8
               and math.ceil(k_iters / (split_k * 2)) >= 4):
            split_k *= 2
        params = TritonParams(block_m, block_n, 128, 8, warps, stages, split_k, use_tma=problem.k % 16 == 0)
        if self.check(problem, params, arch) is not None:  # e.g. few K iterations
            params = dataclasses.replace(params, split_k=1)
        return params

    def build(self, problem: GemmProblem, params: KernelParams) -> GemmFn:
        reason = static_check(problem, params)
        if reason is not None:
            raise UnsupportedProblem(reason)
        out_dtype = problem.torch_out_dtype
        block_size = (problem.block_n, problem.block_k)

        def run(a, b, a_scale, b_scale):
            try:
                return launch(a, b, a_scale, b_scale, params, out_dtype, block_size)
            except triton.runtime.errors.OutOfResources as exc:  # too much smem / registers
                raise LaunchError(f"{params.short()}: {exc}") from exc

        return run
