"""The op's choice for shapes nobody tuned: the cost model's ranking per M bucket, its cache, its warning,
and the heuristic as the last fallback."""

from __future__ import annotations

import warnings

import pytest

import gemm.kernels.triton_fp8  # noqa: F401  (imported before TRITON_INTERPRET is set by the fixture)
from fake_backends import FakeBackend, FakeParams
from gemm import dispatch, untuned
from gemm.arch import get_arch, interpreter_arch
from gemm.configs import ConfigEntry, ConfigFile, ConfigWarning, Provenance, write_config
from gemm.kernels.triton_fp8 import TritonBackend
from gemm.problem import GemmProblem
from gemm.tuner.model import choice, roofline
from gemm.tuner.model.fitted import FittedModel, default_model
from dispatch_calls import choose_with_warnings

N, K = 256, 384


class TwoSpeeds(FakeBackend):
    """A non-Triton backend with a fast and a slow candidate; the fast one refuses odd M."""

    name = "fake"
    PARAMS = (FakeParams("ok", 3.0, 0), FakeParams("ok", 1.0, 1))

    def check(self, problem, params, arch):
        if params.variant == 1 and problem.m % 2:
            return f"variant 1 needs an even M, got M={problem.m}"
        return None


class Calls:
    """A fake time model: ``FakeParams.us`` for the fake backend, ``triton_us`` for every Triton candidate;
    counts its calls and raises once ``fail_from_m`` is reached."""

    def __init__(self, triton_us: float = 100.0, fail_from_m: int | None = None):
        self.triton_us, self.fail_from_m, self.count = triton_us, fail_from_m, 0

    def fake(self, problem, params, arch, coefficients):
        self.count += 1
        if self.fail_from_m is not None and problem.m >= self.fail_from_m:
            raise ZeroDivisionError("a broken coefficient")
        return params["us"]

    def triton(self, problem, params, arch, coefficients):
        self.count += 1
        return self.triton_us


@pytest.fixture
def untuned_setup(tmp_path, monkeypatch):
    """An empty user config directory, the interpreter device, and a predictor over TwoSpeeds and Triton whose
    model covers the interpreter's stand-in GPU. Yields the call counter."""
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    calls = Calls()
    monkeypatch.setitem(roofline.MODELS, "fake", calls.fake)
    monkeypatch.setitem(roofline.MODELS, "triton", calls.triton)
    model = FittedModel("fake-model-1", {"fake": object(), "triton": object()}, (interpreter_arch().name,))
    predictor = untuned.Predictor(model, (TwoSpeeds(), TritonBackend()))
    monkeypatch.setattr(untuned, "predictor_for", lambda arch, device: predictor)
    dispatch.clear_caches()
    yield calls
    dispatch.clear_caches()


def choose(m: int, n: int = N, k: int = K):
    """dispatch.choose for CPU tensors, with the ConfigWarnings it gave."""
    return choose_with_warnings(m, n, k)


def test_the_predicted_choice_follows_the_model_across_backends(untuned_setup):
    backend, params, _ = choose(64)
    assert (backend.name, params) == ("fake", FakeParams("ok", 1.0, 1))  # the fastest predicted
    untuned_setup.triton_us = 0.5                                        # now the model prefers Triton
    dispatch.clear_caches()
    assert choose(64)[0].name == "triton"


def test_the_ranking_is_computed_once_per_shape_and_m_bucket(untuned_setup):
    choose(300)
    per_ranking = untuned_setup.count
    assert per_ranking > 2  # both fake candidates and the Triton space were timed by the model
    for m in (256, 300, 350, 384):  # all nearest to the grid's 256 (384 ties 256 and 512: the smaller)
        choose(m)
    assert untuned_setup.count == per_ranking
    choose(385)                     # nearest 512: a new bucket
    assert untuned_setup.count == 2 * per_ranking
    choose(300, n=512)              # another shape: its own ranking
    assert untuned_setup.count == 3 * per_ranking


def test_a_call_at_an_m_the_top_candidate_refuses_gets_the_next_ranked(untuned_setup):
    assert choose(256)[1] == FakeParams("ok", 1.0, 1)
    before = untuned_setup.count
    assert choose(257)[1] == FakeParams("ok", 3.0, 0)  # same bucket; variant 1 refuses odd M
    assert untuned_setup.count == before


def test_one_warning_per_shape_says_predicted_and_how_to_tune(untuned_setup):
    warned = choose(1)[2]
    assert len(warned) == 1
    assert "no tuned config for N=256 K=384" in warned[0]
    assert "predicted choice" in warned[0] and "fake-model-1" in warned[0]
    assert f"gemm tune --shape {N},{K}" in warned[0]
    assert all(choose(m)[2] == [] for m in (2, 64, 4096))  # other buckets of the shape: not again
    assert len(choose(1, n=512)[2]) == 1                    # another shape: its own warning


def test_a_tuned_entry_wins_and_the_model_is_not_asked(untuned_setup, tmp_path):
    measured = dict(block_m=16, block_n=64, block_k=128, group_m=8, num_warps=4, num_stages=3, split_k=1,
                    use_tma=False, persistent=False)
    write_config(tmp_path, ConfigFile(dispatch.INTERPRETER_DEVICE_NAME, interpreter_arch().name, N, K, (128, 128),
                                      "bfloat16", Provenance.current("measured"),
                                      {16: ConfigEntry("triton", measured, 5.0)}))
    backend, params, warned = choose(16)
    assert (backend.name, params.to_dict()) == ("triton", {**measured, "k_unroll": 1})
    assert warned == [] and untuned_setup.count == 0


def test_no_tuned_entry_usable_here_uses_the_prediction(untuned_setup, tmp_path):
    write_config(tmp_path, ConfigFile(dispatch.INTERPRETER_DEVICE_NAME, interpreter_arch().name, N, K, (128, 128),
                                      "bfloat16", Provenance.current("measured"),
                                      {16: ConfigEntry("fpga", {}, 5.0)}))
    backend, _, warned = choose(16)
    assert backend.name == "fake"
    assert any("no entry can run on this device" in w and "predicted choice" in w for w in warned)


def test_without_coefficients_for_this_gpu_the_heuristic_runs(tmp_path, monkeypatch):
    """The real predictor: the shipped model was never fitted on the interpreter's stand-in GPU."""
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    dispatch.clear_caches()
    try:
        backend, params, warned = choose(64)
        assert (backend, params) == dispatch.heuristic_choice(GemmProblem(64, N, K), interpreter_arch())
        assert len(warned) == 1 and "Using the Triton heuristic" in warned[0]
        assert f"not on {interpreter_arch().name}" in warned[0] and "gemm tune --shape" in warned[0]
    finally:
        dispatch.clear_caches()


def test_a_model_that_covers_no_gpu_is_not_used(monkeypatch):
    model = FittedModel("x", default_model().coefficients, ())
    monkeypatch.setattr(untuned, "default_model", lambda: model)
    untuned.clear_cache()
    try:
        outcome = untuned.predicted_choice(GemmProblem(64, N, K), get_arch("H200"), None)
        assert outcome.choice is None and "fitted on no GPU, not on H200" in outcome.note
    finally:
        untuned.clear_cache()


def test_unreadable_coefficients_fall_back(monkeypatch):
    def broken():
        raise ValueError("coefficients.json: not JSON")

    monkeypatch.setattr(untuned, "default_model", broken)
    untuned.clear_cache()
    try:
        outcome = untuned.predicted_choice(GemmProblem(64, N, K), get_arch("H200"), None)
        assert outcome.choice is None and "cannot be read" in outcome.note and "not JSON" in outcome.note
    finally:
        untuned.clear_cache()


def test_a_failing_model_falls_back_to_the_heuristic_with_one_warning(untuned_setup):
    untuned_setup.fail_from_m = 1
    backend, params, warned = choose(64)
    assert (backend, params) == dispatch.heuristic_choice(GemmProblem(64, N, K), interpreter_arch())
    assert len(warned) == 1 and "the cost model failed" in warned[0] and "ZeroDivisionError" in warned[0]
    assert choose(65)[2] == [] and choose(4096)[2] == []


def test_a_model_failing_at_a_later_bucket_says_so_once(untuned_setup):
    untuned_setup.fail_from_m = 1024
    backend, _, warned = choose(64)
    assert backend.name == "fake" and len(warned) == 1 and "predicted choice" in warned[0]
    backend, params, warned = choose(2048)
    assert (backend, params) == dispatch.heuristic_choice(GemmProblem(2048, N, K), interpreter_arch())
    assert len(warned) == 1 and "the cost model failed at M=2048" in warned[0]
    assert choose(4096)[2] == []


def test_the_op_and_gemm_predict_make_the_same_choice(monkeypatch):
    """On the H200's spec with the shipped model and every modelled backend: the untuned path's pick at each
    bucket is what ``gemm predict`` writes there."""
    arch = get_arch("H200")
    predictor = untuned.Predictor(default_model(), choice.resolve(choice.PREDICTABLE_BACKENDS))
    monkeypatch.setattr(untuned, "predictor_for", lambda arch, device: predictor)
    untuned.clear_cache()
    try:
        for m in (1, 48, 512, 4096):
            for n, k in ((2560, 5120), (4096, 10944)):
                problem = GemmProblem(m, n, k)
                backend, params = untuned.predicted_choice(problem, arch, None).choice
                written = choice.predict_point(problem, arch, predictor.model)
                assert (backend.name, params.to_dict()) == (written.backend, written.params)
    finally:
        untuned.clear_cache()


def test_kernel_for_builds_the_predicted_choice_once(untuned_setup):
    problem = GemmProblem(64, N, K)
    with pytest.warns(ConfigWarning, match="predicted choice"):
        fn = dispatch.kernel_for(problem, "cpu", None)
    assert fn.fake_us == 1.0
    count = untuned_setup.count
    assert dispatch.kernel_for(problem, "cpu", None) is fn and untuned_setup.count == count


# --------------------------------------------------------------------------- the ranking itself


class Unmodelled(FakeBackend):
    name = "unmodelled"


def test_rank_orders_by_predicted_time_and_breaks_ties_by_backend_then_space_order(monkeypatch):
    monkeypatch.setitem(roofline.MODELS, "fake", lambda problem, p, arch, c: p["us"])

    class Tied(TwoSpeeds):
        PARAMS = (FakeParams("ok", 2.0, 5), FakeParams("ok", 1.0, 6), FakeParams("ok", 1.0, 7))

    model = FittedModel("m", {"fake": object()}, ())
    ranked = choice.rank(GemmProblem(2, N, K), get_arch("H200"), model, (Unmodelled(), Tied()))
    assert [r.params.variant for r in ranked] == [6, 7, 5]  # the unmodelled backend's candidates left out
    assert [r.predicted_us for r in ranked] == [1.0, 1.0, 2.0]


def test_candidates_are_the_space_once_each_as_check_admits():
    class Repeats(TwoSpeeds):
        PARAMS = TwoSpeeds.PARAMS + (FakeParams("ok", 3.0, 0),)

        def default_params(self, problem, arch):
            return FakeParams("ok", 0.1, 3)  # outside the space: never timed by a sweep, so never ranked

    arch = get_arch("H200")
    assert list(choice.candidates(Repeats(), GemmProblem(4, N, K), arch)) == [
        FakeParams("ok", 3.0, 0), FakeParams("ok", 1.0, 1)]
    assert list(choice.candidates(Repeats(), GemmProblem(3, N, K), arch)) == [FakeParams("ok", 3.0, 0)]


def test_prediction_m_is_the_nearest_grid_m_ties_to_the_smaller():
    assert [choice.prediction_m(m) for m in (1, 3, 5, 100, 384, 385, 6000, 100000)] == [
        1, 2, 4, 96, 256, 512, 4096, 8192]


def test_a_predicted_choice_that_cannot_be_built_gives_way_to_the_heuristic(untuned_setup, monkeypatch):
    from gemm.kernels.base import CompileError

    def no_compiler(self, problem, params):
        raise CompileError("nvcc: not found")

    monkeypatch.setattr(TwoSpeeds, "build", no_compiler)
    problem = GemmProblem(64, N, K)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn = dispatch.kernel_for(problem, "cpu", None)
        dispatch.kernel_for(GemmProblem(65, N, K), "cpu", None)
    said = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert not hasattr(fn, "fake_us")  # the Triton heuristic's kernel, not the fake one
    assert len(said) == 2 and "predicted choice" in said[0]
    assert "cannot be built here" in said[1] and "nvcc: not found" in said[1] and "Triton heuristic" in said[1]


def test_a_tuned_entry_that_cannot_be_built_still_raises(untuned_setup, tmp_path, monkeypatch):
    from gemm.kernels.base import CompileError

    def no_compiler(self, problem, params):
        raise CompileError("ptxas: out of registers")

    monkeypatch.setattr(TritonBackend, "build", no_compiler)
    measured = dict(block_m=16, block_n=64, block_k=128, group_m=8, num_warps=4, num_stages=3)
    write_config(tmp_path, ConfigFile(dispatch.INTERPRETER_DEVICE_NAME, interpreter_arch().name, N, K, (128, 128),
                                      "bfloat16", Provenance.current("measured"),
                                      {16: ConfigEntry("triton", measured, 5.0)}))
    with pytest.raises(CompileError, match="out of registers"):
        dispatch.kernel_for(GemmProblem(16, N, K), "cpu", None)
