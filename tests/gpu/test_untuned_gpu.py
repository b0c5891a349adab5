"""The op on shapes nobody tuned: the cost model's predicted choice runs, is right, warns once per shape, and
replays in a CUDA graph and under torch.compile without choosing again."""

import warnings

import pytest
import torch

import gemm
from gemm import dispatch, untuned
from gemm.configs import ConfigWarning
from gemm.kernels import get_backend
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error
from gemm.tuner.model import choice

# Outside every preset (scripts/outside_shapes.py): one even shape and two ragged ones.
SHAPES = ((2560, 5120), (5472, 4096), (4096, 2736))
MS = (1, 33, 512, 1500)


@pytest.fixture(autouse=True)
def no_user_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(tmp_path))
    dispatch.clear_caches()
    yield
    dispatch.clear_caches()


@pytest.fixture(scope="module", autouse=True)
def cutlass_kernels_built():
    """The CUTLASS kernels the predictions name, compiled in parallel before the tests run them."""
    if not torch.cuda.is_available() or get_backend("cutlass").unavailable_reason(torch.device("cuda", 0)):
        return
    from gemm.kernels.cutlass.aot import build_kernels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        picks = [dispatch.choose(GemmProblem(m, n, k), "cuda", 0) for n, k in SHAPES for m in MS]
    build_kernels([params for backend, params in picks if backend.name == "cutlass"])
    dispatch.clear_caches()


@pytest.mark.parametrize("n, k", SHAPES)
def test_untuned_shapes_run_the_prediction_correctly_with_one_warning(n, k):
    arch = dispatch.arch_for_device("cuda", 0)
    predictor = untuned.predictor_for(arch, torch.device("cuda", 0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for m in MS:
            a, b, sa, sb = random_problem_inputs(m, n, k, device="cuda", seed=m)
            out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
            assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2, m
            backend, params = dispatch.choose(GemmProblem(m, n, k), "cuda", 0)
            if isinstance(predictor, untuned.Predictor) and choice.prediction_m(m) == m:
                written = choice.predict_point(GemmProblem(m, n, k), arch, predictor.model, predictor.backends)
                assert (backend.name, params.to_dict()) == (written.backend, written.params)
    said = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert len(said) == 1 and f"gemm tune --shape {n},{k}" in said[0]
    expected = "predicted choice" if isinstance(predictor, untuned.Predictor) else "Triton heuristic"
    assert expected in said[0]


def test_the_predicted_kernel_replays_in_a_graph_and_under_compile():
    n, k = SHAPES[0]
    a, b, sa, sb = random_problem_inputs(64, n, k, device="cuda", seed=3)
    ref = reference_matmul(a, b, sa, sb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        gemm.w8a8_block_fp8_matmul(a, b, sa, sb)  # choose and build outside the capture
        calls = dispatch.kernel_for.cache_info().misses
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = gemm.w8a8_block_fp8_matmul(a, b, sa, sb)
        graph.replay()
        torch.cuda.synchronize()
        assert relative_error(out, ref) < 1e-2
        compiled = torch.compile(gemm.w8a8_block_fp8_matmul, fullgraph=True)
        assert relative_error(compiled(a, b, sa, sb), ref) < 1e-2
    assert dispatch.kernel_for.cache_info().misses == calls  # nothing chosen or built again
