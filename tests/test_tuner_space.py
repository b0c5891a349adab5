"""Search spaces: constraint rejections with reasons, pruning by the cost model, backend references."""

from __future__ import annotations

import pytest

from gemm.arch import get_arch, interpreter_arch
from gemm.configs.engines import is_plain_triton
from gemm.problem import GemmProblem
from gemm.tuner.model.fitted import predict_triton_us, predict_us
from gemm.tuner.search.space import Candidate, PruneSettings, point_space, resolve_backend, space_hash

H100 = get_arch("H100")


def test_rejections_keep_their_reasons():
    space = point_space("fake_backends:SafeMixedBackend", GemmProblem(4, 128, 256), interpreter_arch(),
                        PruneSettings(budget=None))
    assert len(space.candidates) == 5
    ((candidate, reason),) = space.rejected
    assert candidate.params["behaviour"] == "invalid" and "rejects" in reason


def test_triton_space_is_checked_and_pruned_to_budget():
    problem = GemmProblem(64, 4608, 7168)
    full = point_space("triton", problem, H100, PruneSettings(budget=None))
    pruned = point_space("triton", problem, H100, PruneSettings(budget=12, plain_triton=3))
    assert len(full.candidates) > 12
    assert len(pruned.candidates) == 12 and pruned.pruned == len(full.candidates) - 12
    assert {c.key for c in pruned.candidates} <= {c.key for c in full.candidates}
    # Ranked best first by the model.
    times = [pruned.predicted[c.params_json] for c in pruned.candidates]
    assert times == sorted(times)
    # Several tile families survive, and plain Triton configs (engine fallbacks) are kept.
    families = {(c.params["block_m"], c.params["block_n"], c.params["split_k"]) for c in pruned.candidates}
    assert len(families) >= 4
    assert sum(is_plain_triton("triton", c.params) for c in pruned.candidates) >= 3
    # The model's favourite is kept.
    best = min(full.candidates, key=lambda c: full.predicted[c.params_json])
    assert best in pruned.candidates


def test_every_triton_candidate_passes_the_backends_check():
    from gemm.kernels.triton_fp8 import TritonBackend, TritonParams

    backend = TritonBackend()
    for m in (1, 64, 256, 4096):
        problem = GemmProblem(m, 7168, 2304)
        space = point_space("triton", problem, H100, PruneSettings(budget=None))
        for c in space.candidates:
            assert backend.check(problem, TritonParams.from_dict(c.params), H100) is None
        for c, reason in space.rejected:
            assert reason == backend.check(problem, TritonParams.from_dict(c.params), H100)


def test_backends_without_a_model_are_not_cut():
    space = point_space("fake_backends:GoodBackend", GemmProblem(4, 128, 256), interpreter_arch(),
                        PruneSettings(budget=2))
    assert len(space.candidates) == 5 and space.pruned == 0


def test_interpret_space_is_tiny_and_valid():
    space = point_space("triton", GemmProblem(1, 256, 256), interpreter_arch(), PruneSettings(budget=None),
                        interpret=True)
    assert 2 <= len(space.candidates) <= 6 and not space.rejected


def test_model_prefers_split_k_for_decode_and_big_tiles_for_prefill():
    decode = GemmProblem(1, 4608, 7168)
    base = {"block_m": 16, "block_n": 64, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 4}
    split = predict_triton_us(decode, {**base, "split_k": 4}, H100)
    assert split < predict_triton_us(decode, {**base, "split_k": 1}, H100)
    prefill = GemmProblem(4096, 4608, 7168)
    big = {**base, "block_m": 128, "block_n": 128, "num_warps": 8, "num_stages": 3, "split_k": 1}
    small = {**base, "split_k": 1}
    assert predict_triton_us(prefill, big, H100) < predict_triton_us(prefill, small, H100)
    floor = H100.floor_us(prefill.flops, prefill.min_bytes)
    assert predict_triton_us(prefill, big, H100) > floor
    assert predict_us("fake_backends:GoodBackend", prefill, {}, H100) is None


def test_resolve_backend_references():
    assert resolve_backend("triton").name == "triton"
    assert resolve_backend("fake_backends:GoodBackend").name == "fake"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("nope")
    with pytest.raises(ValueError, match="no attribute"):
        resolve_backend("fake_backends:Missing")
    with pytest.raises(ValueError, match="not a Backend"):
        resolve_backend("fake_backends:FakeTimer")
    with pytest.raises(ImportError):
        resolve_backend("no_such_module_here:Backend")


def test_space_hash_changes_with_candidates_and_settings():
    problem = GemmProblem(4, 128, 256)
    space = point_space("fake_backends:GoodBackend", problem, interpreter_arch(), PruneSettings())
    other = point_space("fake_backends:SafeMixedBackend", problem, interpreter_arch(), PruneSettings())
    assert space_hash([space], {"keep": 4}) == space_hash([space], {"keep": 4})
    assert space_hash([space], {"keep": 4}) != space_hash([space], {"keep": 3})
    assert space_hash([space], {}) != space_hash([other], {})


def test_candidate_identity_is_canonical():
    a = Candidate.of("triton", {"b": 1, "a": 2})
    b = Candidate.of("triton", {"a": 2, "b": 1})
    assert a == b and a.params == {"a": 2, "b": 1}
