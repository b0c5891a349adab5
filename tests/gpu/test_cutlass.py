"""CUTLASS SM90 blockwise FP8 backend on a Hopper GPU.

Correctness against the fp32 reference for every scheduler and decomposition
mode over the DeepSeek-V3 shapes and M values (ragged N = 576 and 2112 and
K = 2304 included), output dtypes, scale layouts, strided and misaligned
activations, bitwise reproducibility of deterministic stream-K and split-K,
CUDA-graph capture, and refusals that must be errors, not crashes.

Variants follow the installed CUTLASS release (``gemm.kernels.cutlass.support``):
ping-pong 64x128 where it compiles (4.2), cooperative 256x128 where the
backend offers it (4.3 on, e.g. ``GEMM_CUTLASS_DIR`` from
scripts/fetch_cutlass_headers.py).

The kernels these tests need are compiled up front in parallel (a few
minutes on a cold cache; ``gemm build`` or scripts/check_cutlass_gpu.py warm it).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gemm.arch import detect_arch
from graphs import capture, refill
from gemm.kernels.base import UnsupportedProblem
from gemm.kernels.cutlass import aot, jit, launcher, support
from gemm.kernels.nvcc import toolchain
from gemm.kernels.cutlass.backend import CutlassBackend
from gemm.kernels.cutlass.config import CutlassParams as P
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error, tolerance_for

SHAPES = [(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304), (576, 7168),
          (36864, 7168), (7168, 18432)]
M_VALUES = [1, 3, 16, 64, 100, 128, 512, 1024, 4096]
M_MAX = max(M_VALUES)

STREAMK = dict(scheduler="streamk")
VARIANTS = {
    "coop_persistent": P(),
    "pingpong_persistent": P(schedule="pingpong", tile_m=64),
    "coop_along_m_swizzle4": P(raster="along_m", max_swizzle=4),
    "coop_cluster2x1": P(cluster_m=2),
    "pingpong_cluster1x2_along_n": P(schedule="pingpong", tile_m=64, cluster_n=2, raster="along_n"),
    "coop_stages4": P(stages=4),
    "coop_mn_major_scales": P(sfa_major="mn"),
    "streamk_data_parallel": P(**STREAMK, decomposition="data_parallel"),
    "streamk_streamk": P(**STREAMK, decomposition="streamk"),
    "streamk_streamk_cluster1x2": P(**STREAMK, decomposition="streamk", cluster_n=2),
    "streamk_splitk2": P(**STREAMK, decomposition="splitk", splits=2),
    "streamk_splitk4_nondeterministic": P(**STREAMK, decomposition="splitk", splits=4, reduction="nondeterministic"),
    "streamk_streamk_nondeterministic": P(**STREAMK, decomposition="streamk", reduction="nondeterministic"),
    "streamk_heuristic": P(**STREAMK, decomposition="heuristic"),
}
WIDE = dict(tile_m=256)
WIDE_VARIANTS = {
    "coop256_persistent": P(**WIDE),
    "coop256_along_m_swizzle4": P(**WIDE, raster="along_m", max_swizzle=4),
    "coop256_cluster2x1": P(**WIDE, cluster_m=2),
    "coop256_cluster1x2_mn_major_scales": P(**WIDE, cluster_n=2, sfa_major="mn"),
    "coop256_streamk": P(**WIDE, **STREAMK, decomposition="streamk"),
    "coop256_splitk2": P(**WIDE, **STREAMK, decomposition="splitk", splits=2),
}
FP16_VARIANTS = {"coop_fp16": P(), "pingpong_fp16": P(schedule="pingpong", tile_m=64), "coop256_fp16": P(**WIDE)}

CUTLASS_VERSION = toolchain.cutlass_version_or_none()


def _runs_here(params: P) -> bool:
    """Whether the installed CUTLASS builds ``params`` and the backend would offer its tile."""
    if support.unbuildable_reason(params.tile_m, CUTLASS_VERSION) is not None:
        return False
    return params.tile_m != 256 or support.wide_tile_offered(CUTLASS_VERSION)


VARIANTS = {name: p for name, p in {**VARIANTS, **WIDE_VARIANTS}.items() if _runs_here(p)}
FP16_VARIANTS = {name: p for name, p in FP16_VARIANTS.items() if _runs_here(p)}


def available(*names: str) -> list[str]:
    """The named variants that run with the installed CUTLASS."""
    return [name for name in names if name in VARIANTS]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def backend():
    be = CutlassBackend(allow_nondeterministic=True)
    reason = be.unavailable_reason()
    if reason is not None:
        pytest.skip(f"CUTLASS backend unavailable: {reason}")
    # Compile every instantiation this module uses at once, in parallel.
    configs = [p.kernel_config("bfloat16") for p in VARIANTS.values()]
    configs += [p.kernel_config("float16") for p in FP16_VARIANTS.values()]
    aot.build_kernels(configs)
    return be


@pytest.fixture(scope="module")
def arch():
    return detect_arch()


_INPUTS: dict = {}


def shape_inputs(n: int, k: int, out_dtype=torch.bfloat16):
    """(a, b, a_scale, b_scale, reference) for M_MAX rows; rows are independent, so a[:m] has ref[:m]."""
    key = (n, k)
    if key not in _INPUTS:
        a, b, sa, sb = random_problem_inputs(M_MAX, n, k, device="cuda", seed=n * 7 + k)
        _INPUTS[key] = (a, b, sa, sb, reference_matmul(a, b, sa, sb))
    return _INPUTS[key]


def check_points(backend, arch, params: P, n: int, k: int, out_dtype: str = "bfloat16") -> list[str]:
    """Run ``params`` at every M for (n, k); return a description of each wrong or crashing point."""
    a, b, sa, sb, ref = shape_inputs(n, k)
    failures = []
    for m in M_VALUES:
        problem = GemmProblem(m, n, k, out_dtype=out_dtype)
        reason = backend.check(problem, params, arch)
        if reason is not None:
            # Refused up front; building must refuse the same way, never launch.
            with pytest.raises(UnsupportedProblem):
                backend.build(problem, params)
            continue
        out = backend.build(problem, params)(a[:m], b, sa[:m], sb)
        torch.cuda.synchronize()
        error = relative_error(out, ref[:m])
        if out.dtype != problem.torch_out_dtype or out.shape != (m, n) or not error < tolerance_for(out.dtype):
            failures.append(f"M={m} N={n} K={k}: relative error {error:.3g}, {out.dtype} {tuple(out.shape)}")
    return failures


@pytest.mark.parametrize("n,k", SHAPES, ids=[f"N{n}_K{k}" for n, k in SHAPES])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_correct_over_deepseek_shapes(backend, arch, variant, n, k):
    failures = check_points(backend, arch, VARIANTS[variant], n, k)
    assert not failures, f"{VARIANTS[variant].short()}:\n" + "\n".join(failures)


@pytest.mark.parametrize("n,k", [(2112, 7168), (576, 7168), (7168, 2304)])
@pytest.mark.parametrize("variant", list(FP16_VARIANTS))
def test_fp16_output(backend, arch, variant, n, k):
    failures = check_points(backend, arch, FP16_VARIANTS[variant], n, k, out_dtype="float16")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("m,n,k", [(1, 200, 1040), (37, 328, 272), (300, 1160, 4112)])
@pytest.mark.parametrize("variant", available("coop_persistent", "pingpong_persistent", "streamk_streamk",
                                               "streamk_splitk2", "coop256_persistent", "coop256_streamk"))
def test_ragged_n_and_k(backend, arch, variant, m, n, k):
    """N and K that are not multiples of 128 (only of 8 and 16): partial scale blocks at the edges."""
    params, problem = VARIANTS[variant], GemmProblem(m, n, k)
    assert backend.check(problem, params, arch) is None
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda", seed=m + n + k)
    out = backend.build(problem, params)(a, b, sa, sb)
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2


@pytest.mark.parametrize("variant", available("streamk_streamk", "streamk_splitk2", "streamk_heuristic",
                                               "coop256_streamk", "coop256_splitk2"))
@pytest.mark.parametrize("m,n,k", [(64, 576, 7168), (128, 7168, 18432), (512, 2112, 7168)])
def test_deterministic_reduction_is_bitwise_reproducible(backend, variant, m, n, k):
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda", seed=3)
    fn = backend.build(GemmProblem(m, n, k), VARIANTS[variant])
    first = fn(a, b, sa, sb)
    for _ in range(5):
        assert torch.equal(fn(a, b, sa, sb), first)


@pytest.mark.parametrize("variant", available("coop_persistent", "pingpong_cluster1x2_along_n", "streamk_streamk",
                                               "streamk_splitk2", "coop_mn_major_scales", "coop256_persistent",
                                               "coop256_cluster1x2_mn_major_scales"))
def test_cuda_graph_capture_and_replay(backend, variant):
    m, n, k = 512, 2112, 7168
    fn = backend.build(GemmProblem(m, n, k), VARIANTS[variant])
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda", seed=5)
    eager = fn(a, b, sa, sb)
    graph, captured = capture(fn, a, b, sa, sb)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)
    # Replays read the inputs' current contents: new data, new result.
    a2, b2, sa2, sb2 = random_problem_inputs(m, n, k, device="cuda", seed=6)
    refill((a, b, sa, sb), (a2, b2, sa2, sb2))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, fn(a, b, sa, sb))
    assert relative_error(captured, reference_matmul(a2, b2, sa2, sb2)) < 1e-2


def test_activations_with_a_row_pitch_and_misaligned_bases(backend):
    m, n, k = 100, 2112, 7168
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda", seed=7)
    ref = reference_matmul(a, b, sa, sb)
    fn = backend.build(GemmProblem(m, n, k), P())
    wide = torch.zeros(m, k + 256, dtype=a.dtype, device="cuda")
    wide[:, 128:128 + k] = a
    strided = wide[:, 128:128 + k]  # lda = K + 256, base 128 bytes in: used as is
    assert relative_error(fn(strided, b, sa, sb), ref) < 1e-2
    shifted = torch.zeros(m * k + 8, dtype=a.dtype, device="cuda")
    shifted[8:] = a.reshape(-1)
    misaligned = shifted[8:].view(m, k)  # base 8 bytes past alignment: copied before the launch
    assert misaligned.data_ptr() % 16 == 8
    assert relative_error(fn(misaligned, b, sa, sb), ref) < 1e-2


@pytest.mark.parametrize("variant", ["coop_persistent", "coop_mn_major_scales"])
def test_m_major_activation_scales_are_accepted(backend, variant):
    m, n, k = 512, 576, 7168
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda", seed=8)
    m_major = sa.t().contiguous().t()  # same values, stride (1, M)
    fn = backend.build(GemmProblem(m, n, k), VARIANTS[variant])
    assert torch.equal(fn(a, b, m_major, sb), fn(a, b, sa, sb))
    assert relative_error(fn(a, b, m_major, sb), reference_matmul(a, b, sa, sb)) < 1e-2


def test_refusals_are_errors_not_crashes(backend):
    library = launcher.load_library(jit.build(P().kernel_config()).path)
    for problem in (GemmProblem(16, 100, 512), GemmProblem(16, 256, 200)):  # N % 8, K % 16
        with pytest.raises(UnsupportedProblem, match="can_implement"):
            launcher.make_gemm_fn(library, problem, P())
    # Knobs the persistent scheduler would silently ignore are refused by the library itself.
    bypass = dataclasses.replace(P(), decomposition="streamk")
    with pytest.raises(UnsupportedProblem, match="persistent tile scheduler"):
        launcher.make_gemm_fn(library, GemmProblem(16, 256, 512), bypass)
    # The backend refuses a split-K workspace over the cap before building.
    with pytest.raises(UnsupportedProblem, match="MiB"):
        backend.build(GemmProblem(4096, 36864, 7168), P(**STREAMK, decomposition="splitk", splits=8))
    # Inputs of another shape than the kernel was built for.
    fn = backend.build(GemmProblem(16, 256, 512), P())
    a, b, sa, sb = random_problem_inputs(32, 256, 512, device="cuda")
    with pytest.raises(ValueError, match="built for"):
        fn(a, b, sa, sb)


def test_workspace_comes_from_torch_and_matches_the_library(backend):
    problem = GemmProblem(64, 576, 7168)
    params = VARIANTS["streamk_splitk2"]
    library = launcher.load_library(jit.build(params.kernel_config()).path)
    options = launcher.runtime_options(params)
    needed = library.workspace_size(problem.m, problem.n, problem.k, problem.k, options)
    assert 0 < needed <= launcher.MAX_WORKSPACE_BYTES
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    fn = backend.build(problem, params)
    a, b, sa, sb = random_problem_inputs(problem.m, problem.n, problem.k, device="cuda", seed=9)
    fn(a, b, sa, sb)
    assert torch.cuda.memory_stats()["allocation.all.allocated"] - before >= 2  # output and workspace


def test_default_params_run_correctly(backend, arch):
    for n, k in [(576, 7168), (7168, 2304), (4096, 512)]:
        for m in (1, 64, 4096):
            problem = GemmProblem(m, n, k)
            params = backend.default_params(problem, arch)
            a, b, sa, sb, ref = shape_inputs(n, k)
            out = backend.build(problem, params)(a[:m], b, sa[:m], sb)
            assert relative_error(out, ref[:m]) < 1e-2, (problem, params.short())
