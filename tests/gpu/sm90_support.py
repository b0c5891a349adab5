"""What the sm90 GPU test files share: the backend (skipping where it cannot run), inputs with their fp32
reference made once per shape, one checked launch into a NaN-filled output, the split-K/stream-K counters'
reset, and CUDA-graph replay with new data."""

from __future__ import annotations

import pytest
import torch

from graphs import capture, refill
from gemm.arch import detect_arch
from gemm.kernels.sm90 import launcher
from gemm.kernels.sm90.backend import Sm90Backend
from gemm.problem import GemmProblem
from gemm.quant import mn_major_scales, random_problem_inputs
from gemm.reference import reference_matmul, relative_error, tolerance_for


def sm90_backend() -> Sm90Backend:
    """The backend, or a skip naming why it cannot run here."""
    backend = Sm90Backend()
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(reason)
    return backend


_INPUTS: dict[tuple[int, int, int], tuple] = {}


def inputs(m: int, n: int, k: int) -> tuple:
    """(a, b, a_scale, b_scale, reference) for [M, K] x [N, K]: random, made once per shape and shared by
    the cases of a run (at most 17 shapes kept)."""
    if (m, n, k) not in _INPUTS:
        if len(_INPUTS) > 16:
            _INPUTS.clear()
        a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
        _INPUTS[(m, n, k)] = (a, b, sa, sb, reference_matmul(a, b, sa, sb))
    return _INPUTS[(m, n, k)]


def checked_run(backend: Sm90Backend, params, m: int, n: int, k: int, layout: str = "row",
                out_dtype: str = "bfloat16") -> torch.Tensor:
    """Run ``params`` on the shared inputs of (m, n, k) with row-major (``layout="row"``) or MN-major
    (``"mn"``) activation scales into a NaN-filled [M, N] output; skip what ``check`` refuses; assert every
    element was written and the result is within the dtype's tolerance of the reference."""
    problem = GemmProblem(m, n, k, out_dtype=out_dtype)
    reason = backend.check(problem, params, detect_arch())
    if reason:
        pytest.skip(reason)
    a, b, sa, sb, ref = inputs(m, n, k)
    fn = backend.build(problem, params)
    out = torch.full((m, n), float("nan"), dtype=problem.torch_out_dtype, device="cuda")
    fn(a, b, mn_major_scales(sa) if layout == "mn" else sa, sb, out=out)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), f"{params.short()}: unwritten or NaN outputs at {problem}"
    error = relative_error(out, ref)
    assert error < tolerance_for(problem.torch_out_dtype), f"{params.short()} at {problem}: {error:.2e}"
    return out


def assert_counters_zero() -> None:
    """Every split-K/stream-K arrival counter of the current device's workspace is zero: each launch resets
    the ones it used, so none needs a memset before the next."""
    workspace = launcher._WORKSPACES.get(torch.cuda.current_device())
    if workspace is not None:
        torch.cuda.synchronize()
        assert int(workspace.counters.count_nonzero()) == 0, "a launch left arrival counters non-zero"


def assert_graph_replays(fn, m: int, n: int, k: int) -> None:
    """Capture ``fn`` on fresh [M, K] x [N, K] inputs: the replay equals the eager call bitwise; replayed
    twice in a row with new data in the captured buffers, it matches the reference (no NaN) and leaves the
    counters at zero each time."""
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
    eager = fn(a, b, sa, sb)
    graph, out = capture(fn, a, b, sa, sb)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager), "the graph's launch differs from the eager one"
    for _ in range(2):
        refill((a, b, sa, sb), random_problem_inputs(m, n, k, device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        assert not torch.isnan(out).any()
        assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2
        assert_counters_zero()
    assert not torch.equal(out, eager)


def fixup_tile(m: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) the split-K and stream-K tests run at M: 64x128 up to M = 64, else 128x112."""
    return (64, 128) if m <= 64 else (128, 112)


def checked_fixup_run(backend: Sm90Backend, params, m: int, n: int, k: int, layout: str = "row",
                      out_dtype: str = "bfloat16") -> torch.Tensor:
    """``checked_run``, then the arrival counters are back at zero."""
    out = checked_run(backend, params, m, n, k, layout, out_dtype)
    assert_counters_zero()
    return out
