"""The project's Hopper kernel ("sm90") on a Hopper GPU.

Correctness against the fp32 reference over the ragged set (M = 1, 3, 17, 100; N = 576, 2112; K = 256,
512, 2304, 7168, 18432) for tiles that straddle weight-scale blocks, both activation-scale layouts,
every cluster shape and tile order, fp16 output; bitwise reproducibility; CUDA-graph capture and
replay; and the op dispatching to it from a tuned config. The kernels are built on first use
(about 5 s each on one core; ``scripts/check_sm90_gpu.py build`` warms the cache).
"""

from __future__ import annotations

import json

import pytest
import torch

import gemm
from graphs import capture, refill
from sm90_support import sm90_backend
from gemm import dispatch
from gemm.arch import detect_arch
from gemm.configs.naming import config_path
from gemm.kernels.sm90.params import Sm90Params
from gemm.problem import GemmProblem
from gemm.quant import mn_major_scales, random_problem_inputs
from gemm.reference import reference_matmul, relative_error, tolerance_for

RAGGED = [(1, 576, 7168), (3, 2112, 7168), (17, 512, 256), (31, 7168, 512), (100, 2112, 512),
          (128, 7168, 2304), (257, 576, 7168), (64, 1536, 18432)]
TILES = [(64, 128), (64, 208), (128, 128), (128, 112), (128, 160), (128, 48), (256, 96)]


@pytest.fixture(scope="module")
def backend():
    return sm90_backend()


def check(backend, params, m, n, k, layout="row", out_dtype="bfloat16"):
    problem = GemmProblem(m, n, k, out_dtype=out_dtype)
    reason = backend.check(problem, params, detect_arch())
    if reason:
        pytest.skip(reason)
    a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda")
    ref = reference_matmul(a, b, sa, sb)
    poison = torch.full((m, n), float("nan"), dtype=problem.torch_out_dtype, device="cuda")
    del poison  # the output reuses the block: unwritten elements stay NaN
    out = backend.build(problem, params)(a, b, mn_major_scales(sa) if layout == "mn" else sa, sb)
    assert out.shape == (m, n) and out.dtype == problem.torch_out_dtype
    assert not torch.isnan(out).any(), f"{params.short()}: unwritten or NaN outputs at {problem}"
    error = relative_error(out, ref)
    assert error < tolerance_for(problem.torch_out_dtype), f"{params.short()} at {problem}: {error:.2e}"
    return out


@pytest.mark.parametrize("block_m,block_n", TILES)
@pytest.mark.parametrize("m,n,k", RAGGED)
def test_ragged_set(backend, block_m, block_n, m, n, k):
    check(backend, Sm90Params.for_tile(block_m, block_n), m, n, k)


@pytest.mark.parametrize("layout", ["row", "mn"])
@pytest.mark.parametrize("cluster", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("m,n,k", [(3, 576, 512), (300, 2112, 7168), (1000, 4608, 2304)])
def test_clusters_and_scale_layouts(backend, layout, cluster, m, n, k):
    check(backend, Sm90Params.for_tile(128, 112, cluster_m=cluster[0], cluster_n=cluster[1]), m, n, k, layout)
    check(backend, Sm90Params.for_tile(64, 128, cluster_m=cluster[0], cluster_n=cluster[1], raster="along_n",
                                       group=3), m, n, k, layout)


@pytest.mark.parametrize("overlap", [True, False])
def test_overlap_and_fp16(backend, overlap):
    check(backend, Sm90Params.for_tile(128, 128, overlap=overlap), 520, 7168, 18432)
    check(backend, Sm90Params.for_tile(128, 96, overlap=overlap), 100, 2112, 7168, out_dtype="float16")


def test_bitwise_reproducible(backend):
    problem = GemmProblem(1000, 4608, 7168)
    fn = backend.build(problem, Sm90Params.for_tile(128, 112, cluster_m=2))
    inputs = random_problem_inputs(1000, 4608, 7168, device="cuda")
    first = fn(*inputs)
    assert all(torch.equal(first, fn(*inputs)) for _ in range(3))


def test_cuda_graph_capture_and_replay(backend):
    problem = GemmProblem(100, 2112, 7168)
    fn = backend.build(problem, Sm90Params.for_tile(128, 112))
    a, b, sa, sb = random_problem_inputs(100, 2112, 7168, device="cuda")
    eager = fn(a, b, sa, sb)
    graph, out = capture(fn, a, b, sa, sb)
    for _ in range(2):  # replayed twice in a row with new data in the captured buffers
        refill((a, b, sa, sb), random_problem_inputs(100, 2112, 7168, device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2
    assert not torch.equal(out, eager)


def test_default_params_run(backend):
    arch = detect_arch()
    for m, n, k in RAGGED[:5]:
        check(backend, backend.default_params(GemmProblem(m, n, k), arch), m, n, k)


def test_op_dispatches_to_sm90_from_a_config(backend, tmp_path, monkeypatch):
    arch = detect_arch()
    n, k = 2112, 7168
    params = Sm90Params.for_tile(128, 112).to_dict()
    document = {
        "schema_version": 1, "device_name": arch.config_device_name, "arch": arch.name, "n": n, "k": k,
        "block_shape": [128, 128], "out_dtype": "bfloat16",
        "provenance": {"kind": "measured", "tool_version": gemm.__version__, "torch": torch.__version__,
                       "triton": None, "cutlass": None, "date": "2026-12-01T00:00:00+00:00", "model_version": None},
        "entries": {"64": {"backend": "sm90", "params": params, "us": 10.0}},
    }
    path = config_path(tmp_path, arch.config_device_name, n, k)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(document))
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(tmp_path))
    dispatch.clear_caches()
    try:
        chosen, chosen_params = dispatch.choose(GemmProblem(64, n, k), "cuda", torch.cuda.current_device())
        assert chosen.name == "sm90" and chosen_params.to_dict() == params
        x = torch.randn(64, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.05
        for layout in ("row_major", "mn_major"):
            a, sa = gemm.per_token_group_quant_fp8(x, 128, scale_layout=layout)
            b, sb = gemm.per_block_quant_fp8(w, (128, 128))
            out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
            assert relative_error(out, reference_matmul(a, b, sa.contiguous(), sb)) < 1e-2
    finally:
        dispatch.clear_caches()
