"""How many evaluation workers a sweep runs on one GPU, and how many CPU threads each gets.

The host's CPUs keep the workers compiling (one CPU left free, shared among
the host's GPUs), and one GPU's memory must hold them all: every worker keeps
its shape's inputs and fp32 reference at the sweep's largest M, builds that
reference (dequantized fp32 copies of A and B), and checks outputs; the worker
that times also keeps cold-L2 copies of the inputs.
Fifteen workers on a large shape (N=36864, K=7168, M=8192: about 7 GiB each)
do not fit in 80 GiB, and a worker that runs out of memory would record a
good candidate as failed, so the pool is sized to the GPU's free memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: CUDA context, kernels, allocator slack per process.
PROCESS_OVERHEAD_BYTES = 768 * 2**20
#: Share of the free memory the workers may plan to use together.
USABLE_FRACTION = 0.85


def evaluation_workers(requested: int | None, cpus: int, gpus_per_host: int, interpret: bool) -> int:
    """Evaluation processes per GPU: as asked, else one with ``--interpret``, else the host's CPUs
    (one left free) shared among its GPUs."""
    if requested is not None:
        return requested
    if interpret:
        return 1
    return max(1, min(15, (cpus - 1) // max(1, gpus_per_host)))


def worker_threads(cpus: int, gpus_per_host: int, workers: int) -> int | None:
    """torch CPU threads per evaluation process, so the host's processes do not oversubscribe its CPUs.

    None (torch's default) for one GPU and one worker, as a plain sweep does.
    """
    processes = max(1, gpus_per_host) * max(1, workers)
    return max(1, cpus // processes) if processes > 1 else None


def _out_bytes(out_dtype: str) -> int:
    from gemm.problem import OUT_DTYPES

    return OUT_DTYPES[out_dtype].itemsize if out_dtype in OUT_DTYPES else 4


def _workspace_bytes() -> int:
    """The largest kernel workspace a candidate may ask for (the CUTLASS launcher's cap)."""
    from gemm.kernels.cutlass.launcher import MAX_WORKSPACE_BYTES

    return MAX_WORKSPACE_BYTES


def _check_chunk_elements() -> int:
    """Elements per fp64 block in which outputs are checked."""
    from gemm.reference import CHUNK_ELEMENTS

    return CHUNK_ELEMENTS


@dataclass(frozen=True)
class WorkerMemory:
    """Peak GPU bytes one worker needs, and the (N, K) that needs it."""

    bytes: int
    n: int
    k: int
    m: int


def worker_peak_bytes(n: int, k: int, m_max: int, out_dtype: str = "bfloat16", block_k: int = 128) -> int:
    """Peak GPU bytes of one worker evaluating shape (N, K) with inputs drawn at ``m_max`` rows."""
    k_blocks = math.ceil(k / block_k)
    inputs = m_max * k + n * k + 4 * (m_max + n) * k_blocks       # e4m3 A, B and fp32 scales
    reference = 4 * m_max * n                                     # fp32 [m_max, N], kept for the shape
    building = 4 * (2 * m_max * k + 3 * n * k) + 4 * m_max * n    # fp32 A, B, expanded scales, dequantized B, product
    out_bytes = _out_bytes(out_dtype)
    outputs = 2 * out_bytes * m_max * n                           # two verification calls
    checking = 3 * 8 * _check_chunk_elements()                    # fp64 row blocks (gemm.reference)
    timing = 2 * (inputs + out_bytes * m_max * n)                 # cold-L2 copies, graph outputs
    peak = max(building, outputs + checking + timing)
    return PROCESS_OVERHEAD_BYTES + inputs + reference + peak + _workspace_bytes()


def sweep_worker_memory(shapes, m_max: int, out_dtype: str = "bfloat16") -> WorkerMemory:
    """The largest per-worker peak over ``shapes`` (objects with ``n`` and ``k``)."""
    return max((WorkerMemory(worker_peak_bytes(s.n, s.k, m_max, out_dtype), s.n, s.k, m_max) for s in shapes),
               key=lambda w: w.bytes)


def workers_that_fit(wanted: int, per_worker_bytes: int, free_bytes: int) -> int:
    """At most ``wanted`` workers whose peaks together stay within ``USABLE_FRACTION`` of ``free_bytes`` (>= 1)."""
    if wanted < 1:
        raise ValueError(f"wanted must be >= 1, got {wanted}")
    if per_worker_bytes <= 0:
        raise ValueError(f"per_worker_bytes must be positive, got {per_worker_bytes}")
    return max(1, min(wanted, int(USABLE_FRACTION * free_bytes // per_worker_bytes)))


def free_gpu_bytes(device_index: int = 0) -> int | None:
    """Free bytes on a CUDA device, or None when there is none (or CUDA cannot say)."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        free, _total = torch.cuda.mem_get_info(device_index)
    except RuntimeError:
        return None
    return int(free)


def cap_workers(wanted: int, shapes, m_max: int, out_dtype: str, device_index: int = 0) -> tuple[int, str | None]:
    """(workers, note): ``wanted`` evaluation workers, fewer if the GPU's free memory cannot hold their peaks.

    ``note`` says why the pool was made smaller (None when it was not). Without CUDA, ``wanted`` as is.
    """
    free = free_gpu_bytes(device_index)
    if free is None or wanted <= 1:
        return wanted, None
    need = sweep_worker_memory(shapes, m_max, out_dtype)
    fitted = workers_that_fit(wanted, need.bytes, free)
    if fitted >= wanted:
        return wanted, None
    return fitted, (f"{fitted} workers instead of {wanted}: each needs up to {need.bytes / 2**30:.1f} GiB "
                    f"(N={need.n} K={need.k} at M={need.m}) of the GPU's {free / 2**30:.1f} GiB free")
