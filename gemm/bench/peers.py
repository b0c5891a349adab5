"""What the benchmark times at each point, and how: the peers as ``PeerCall``s, the GPU they run on.

Peers, measured side by side in one process: cuBLAS blockwise (``torch._scaled_mm``
with 1x128 / 128x128 scales, verified), cuBLAS per-tensor FP8 (the speed of FP8
without block scales), the classic block-FP8 Triton kernel at the default config
engines fall back to, and bf16 ``torch.matmul``; the tuned op
``gemm.w8a8_block_fp8_matmul`` as shipped (peer ``tuned_op``, dispatching from the
configs of the GPU); and our backends: the Triton kernel's untuned heuristic, with
``sweep`` the best of a modest per-point sweep of it (every candidate verified
first), with ``cutlass`` the CUTLASS backend's default params and space, with ``sm90`` the Hopper
kernel's default params and the candidates of its space the cost model ranks fastest.

``GpuRig`` is the CUDA device; ``gemm.bench.run`` drives any object with its
methods, so the bench's bookkeeping runs in tests with a stand-in rig.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from gemm.bench.measure import Ceilings, Timing, graph_time_us, make_input_sets, measure_ceilings
from gemm.bench.tables import TUNED
from gemm.problem import GemmProblem


@dataclass(frozen=True)
class PeerCall:
    """One candidate of a peer at a point: ``fn(*args)`` for each arg set, verified against the reference
    first when ``verify``. ``fn`` is the exception instead when the candidate could not be built."""

    peer: str
    config: str
    fn: Callable | Exception
    arg_sets: Sequence[tuple]
    verify: bool = True


def modest_triton_space(problem: GemmProblem, arch) -> list:
    """About 12-18 Triton candidates per point, by M range (decode / mid / prefill)."""
    from gemm.kernels.triton_fp8 import TritonBackend, TritonParams

    m = problem.m
    out = []
    if m <= 64:
        bm = 16 if m <= 16 else 32 if m <= 32 else 64
        for bn in (64, 128):
            for split in (1, 2, 4, 8):
                out.append(TritonParams(bm, bn, 128, 8, 4, 4, split, True, False))
        out += [TritonParams(bm, 64, 128, 8, 4, 4, split, False, False) for split in (1, 4, 8)]
    elif m <= 512:
        for bm, bn, warps in ((64, 128, 4), (64, 256, 8)):
            for split in (1, 2, 4):
                for unroll in (1, 2):
                    out.append(TritonParams(bm, bn, 128, 8, warps, 3, split, True, False, unroll))
    else:
        for bm, bn, warps in ((128, 128, 8), (128, 256, 8), (64, 256, 8)):
            for stages in (3, 4):
                for persistent, unroll in ((False, 1), (False, 2), (True, 2)):
                    out.append(TritonParams(bm, bn, 128, 8, warps, stages, 1, True, persistent, unroll))
    backend = TritonBackend()
    return [p for p in dict.fromkeys(out) if backend.check(problem, p, arch) is None]


def external_peers(problem: GemmProblem, sets: Sequence[tuple]) -> list[PeerCall]:
    """The classic Triton config, cuBLAS blockwise, cuBLAS per-tensor and bf16 at this point."""
    from gemm.kernels.classic_triton import CLASSIC_DEFAULT, classic_block_fp8_matmul
    from gemm.kernels.cublas import cublas_scale_layouts

    m = problem.m
    calls = [PeerCall("classic_default", "",
                      lambda a, b, sa, sb: classic_block_fp8_matmul(a, b, sa, sb, CLASSIC_DEFAULT), sets)]
    # cuBLAS wants M a multiple of 4 (blockwise) or 16 (per-tensor) and its own scale layouts: prepared here,
    # outside the timed call, as an engine whose quantizer writes them so would have them.
    m4 = (m + 3) // 4 * 4
    cub_sets = []
    for a, b, sa, sb in sets:
        a_pad = torch.cat([a, a[-1:].expand(m4 - m, -1)]) if m4 != m else a
        sa_c, sb_c = cublas_scale_layouts(sa, sb, m4)
        cub_sets.append((a_pad, b, sa_c, sb_c))
    calls.append(PeerCall(
        "cublas_blockwise", "",
        lambda a, b, sa, sb: torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)[:m],
        cub_sets))
    m16 = (m + 15) // 16 * 16
    one = torch.ones((), device="cuda")
    pt_sets = [(torch.cat([a, a[-1:].expand(m16 - m, -1)]) if m16 != m else a, b) for a, b, _, _ in sets]
    calls.append(PeerCall(
        "cublas_per_tensor", "",
        lambda a, b: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
        pt_sets, verify=False))
    bf_sets = [(a.to(torch.bfloat16), b.to(torch.bfloat16)) for a, b, _, _ in sets[: max(2, len(sets) // 2)]]
    calls.append(PeerCall("bf16_matmul", "", lambda a, b: torch.matmul(a, b.t()), bf_sets, verify=False))
    return calls


def tuned_config(problem: GemmProblem) -> str:
    """``backend:params`` the op dispatches ``problem`` to on the current GPU (as the op itself picks it)."""
    from gemm import dispatch

    try:
        backend, params = dispatch.choose(problem, "cuda", torch.cuda.current_device())
    except Exception as exc:  # the config column is informative only; timing the op reports its own failure
        return f"unknown: {type(exc).__name__}"
    return f"{backend.name}:{params.short()}"


def built_calls(backend, problem: GemmProblem, wanted: Sequence[tuple[str, object]],
                sets: Sequence[tuple]) -> list[PeerCall]:
    """A PeerCall per (peer, params) of ``wanted``: the backend's function at ``problem``, or the exception
    its build raised (recorded as a failed candidate)."""
    calls = []
    for peer, params in wanted:
        try:
            fn = backend.build(problem, params)
        except Exception as exc:  # recorded as a failed candidate
            fn = exc
        calls.append(PeerCall(peer, params.short(), fn, sets))
    return calls


def unavailable_call(backend, peer: str, sets: Sequence[tuple]) -> PeerCall | None:
    """A failed ``peer`` candidate saying why ``backend`` cannot run here (no nvcc, no headers, no Hopper
    GPU), so that a run asked to time it records the reason instead of leaving it out; None if it can run."""
    from gemm.kernels.base import BackendUnavailable

    reason = backend.unavailable_reason()
    return None if reason is None else PeerCall(peer, "", BackendUnavailable(f"{backend.name}: {reason}"), sets)


def cutlass_calls(problem: GemmProblem, arch, sets: Sequence[tuple]) -> list[PeerCall]:
    """CUTLASS's default params and every valid candidate of its space, each built (or its build error)."""
    from gemm.kernels.cutlass.backend import CutlassBackend

    backend = CutlassBackend()
    if (missing := unavailable_call(backend, "cutlass_default", sets)) is not None:
        return [missing]
    default = backend.default_params(problem, arch)
    wanted = [("cutlass_default", default)]
    wanted += [("cutlass_sweep", p) for p in backend.param_space(problem, arch)
               if backend.check(problem, p, arch) is None]
    return built_calls(backend, problem, wanted, sets)


def sm90_calls(problem: GemmProblem, arch, sets: Sequence[tuple], keep: int) -> list[PeerCall]:
    """The Hopper kernel's default params (peer ``sm90_default``) and the ``keep`` candidates of its space the
    cost model ranks fastest (``sm90_sweep``; ``gemm tune --prune aggressive`` keeps 12 the same way), each
    built (or its build error). The libraries are compiled in parallel first (``gemm.kernels.prebuild``),
    then bound to the point one by one from the cache."""
    from gemm.kernels.prebuild import prebuild
    from gemm.kernels.sm90.backend import Sm90Backend
    from gemm.tuner.model.choice import rank
    from gemm.tuner.model.fitted import default_model

    backend = Sm90Backend()
    if (missing := unavailable_call(backend, "sm90_default", sets)) is not None:
        return [missing]
    wanted = [("sm90_default", backend.default_params(problem, arch))]
    wanted += [("sm90_sweep", r.params) for r in rank(problem, arch, default_model(), [backend])[:keep]]
    prebuild(backend.name, [p for _, p in wanted], problem.out_dtype, lambda line: None)
    return built_calls(backend, problem, wanted, sets)


class GpuRig:
    """The CUDA device the benchmark times on (the current one)."""

    def __init__(self) -> None:
        from gemm.arch import detect_arch

        self.arch = detect_arch()
        self.label = self.arch.name  # the report's heading, e.g. "H200"
        self.device_name = self.arch.device_name
        self.l2_bytes = self.arch.l2_bytes

    def ceilings(self) -> Ceilings:
        return measure_ceilings()

    def inputs(self, problem: GemmProblem, copies: int) -> list[tuple]:
        return make_input_sets(problem.m, problem.n, problem.k, copies)

    def time(self, fn: Callable, arg_sets: Sequence[tuple]) -> Timing:
        return graph_time_us(fn, arg_sets)

    def calls(self, problem: GemmProblem, sets: Sequence[tuple], settings) -> Iterable[PeerCall]:
        """Every candidate ``settings`` (a ``gemm.bench.run.BenchSettings``) asks for at ``problem``, peers
        first (built as they are reached)."""
        import gemm
        from gemm.kernels.triton_fp8 import TritonBackend, launch

        yield from external_peers(problem, sets)
        if settings.tuned:
            yield PeerCall(TUNED, tuned_config(problem), gemm.w8a8_block_fp8_matmul, sets)
        default = TritonBackend().default_params(problem, self.arch)
        yield PeerCall("triton_heuristic", default.short(), lambda *xs, p=default: launch(*xs, p), sets)
        if settings.sweep:
            for params in modest_triton_space(problem, self.arch):
                yield PeerCall("triton_sweep", params.short(), lambda *xs, p=params: launch(*xs, p), sets)
        if settings.cutlass:
            yield from cutlass_calls(problem, self.arch, sets)
        if settings.sm90:
            yield from sm90_calls(problem, self.arch, sets, settings.sm90_keep)

    def release(self) -> None:
        """Give the point's cached blocks back before the next point allocates its own."""
        torch.cuda.empty_cache()
