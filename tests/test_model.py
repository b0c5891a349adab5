"""The cost model: physical monotonicity, coefficient files, fitting to a recorded log, and `gemm predict`."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from gemm.arch import get_arch
from gemm.configs import NoEngineMeasurements, export_config, load_config_file, validate_config_file
from gemm.problem import GemmProblem
from gemm.tuner.model.fit import cross_validate, fit_model, load_observations, quality_of, spearman, summarize
from gemm.tuner.model.fitted import FittedModel, default_model, load_model, predict_us, predict_with, prior_model
from gemm.tuner.model.roofline import COEFFICIENT_TYPES, TritonCoefficients, smooth_max
from gemm.tuner.results.log import Fingerprint, ResultsLog
from gemm.tuner.results.measurement import Measurement

H100, H20 = get_arch("H100"), get_arch("H20")
SHAPES = [(576, 7168), (2112, 7168), (7168, 2048), (4096, 512)]


def _candidates(backend: str, problem: GemmProblem, arch) -> list[dict]:
    from gemm.kernels import get_backend

    b = get_backend(backend)
    return [p.to_dict() for p in b.param_space(problem, arch) if b.check(problem, p, arch) is None]


def _sample(seed: int = 0, per_point: int = 6):
    """(backend, problem, params) triples over shapes, M and backends, a few candidates each."""
    rng = random.Random(seed)
    out = []
    for n, k in SHAPES:
        for m in (1, 16, 128, 1024, 4096):
            problem = GemmProblem(m, n, k)
            for backend in ("triton", "cutlass", "cublas"):
                candidates = _candidates(backend, problem, H100)
                out += [(backend, problem, p) for p in rng.sample(candidates, min(per_point, len(candidates)))]
    return out


def test_smooth_max_is_between_max_and_sum():
    assert smooth_max(3.0) == pytest.approx(3.0)
    assert 5.0 <= smooth_max(5.0, 1.0) <= 5.0 * 1.001
    assert 4.0 < smooth_max(4.0, 4.0) < 8.0
    assert smooth_max(0.0, 0.0) == 0.0


@pytest.mark.parametrize("backend", ["triton", "cutlass", "cublas"])
def test_more_sms_at_the_same_rate_per_sm_are_never_slower(backend):
    bigger = dataclasses.replace(H100, num_sms=2 * H100.num_sms, fp8_tflops=2 * H100.fp8_tflops)
    for name, problem, params in _sample():
        if name != backend:
            continue
        assert predict_us(name, problem, params, bigger) <= predict_us(name, problem, params, H100) * (1 + 1e-9)


@pytest.mark.parametrize("backend", ["triton", "cutlass", "cublas"])
def test_more_bytes_are_never_faster_and_faster_memory_never_slower(backend):
    faster_hbm = dataclasses.replace(H100, hbm_tbps=2 * H100.hbm_tbps)
    faster_mma = dataclasses.replace(H100, fp8_tflops=2 * H100.fp8_tflops)
    for name, problem, params in _sample(seed=1):
        if name != backend:
            continue
        base = predict_us(name, problem, params, H100)
        deeper = dataclasses.replace(problem, k=problem.k + 1024)  # more weight and activation bytes
        assert predict_us(name, deeper, params, H100) >= base
        assert predict_us(name, problem, params, faster_hbm) <= base * (1 + 1e-9)
        assert predict_us(name, problem, params, faster_mma) <= base * (1 + 1e-9)


def test_model_sees_the_known_regimes():
    decode = GemmProblem(1, 4608, 7168)
    base = {"block_m": 16, "block_n": 64, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 4}
    # Decode: a few tiles need split-K to keep the machine busy.
    assert predict_us("triton", decode, {**base, "split_k": 4}, H100) < predict_us("triton", decode,
                                                                                    {**base, "split_k": 1}, H100)
    # Decode is bound by weight bytes: never faster than streaming them at the datasheet rate.
    assert predict_us("triton", decode, {**base, "split_k": 4}, H100) > decode.min_bytes / (H100.hbm_tbps * 1e6)
    # Prefill: 64 accumulators per thread (128x128 on 8 warps) beat 128 of them (on 4 warps, they spill).
    prefill = GemmProblem(4096, 7168, 2048)
    wide = {**base, "block_m": 128, "block_n": 128, "num_stages": 3, "split_k": 1}
    assert predict_us("triton", prefill, {**wide, "num_warps": 8}, H100) < predict_us("triton", prefill, wide, H100)
    # The compute-poor H20 is slower than an H100 on the same prefill GEMM.
    coop = {"schedule": "cooperative", "tile_m": 128, "tile_n": 128, "tile_k": 128}
    assert predict_us("cutlass", prefill, coop, H20) > 3 * predict_us("cutlass", prefill, coop, H100)
    assert predict_us("fake", prefill, {}, H100) is None


def test_coefficient_file_round_trip_and_errors(tmp_path):
    model = FittedModel("v-test", {**prior_model().coefficients, "triton": TritonCoefficients(launch_us=7.0)})
    path = tmp_path / "coef.json"
    path.write_text(json.dumps(model.to_json(["a.jsonl"], {"in_sample": {}})))
    loaded = load_model(path)
    assert loaded.version == "v-test" and loaded.coefficients["triton"].launch_us == 7.0
    problem, params = GemmProblem(64, 2112, 7168), {"block_m": 64, "block_n": 64, "block_k": 128,
                                                     "num_warps": 4, "num_stages": 3}
    assert predict_with(loaded, "triton", problem, params, H100) == pytest.approx(
        predict_with(model, "triton", problem, params, H100))
    bad = model.to_json()
    bad["backends"]["triton"]["launch_us"] = -1
    with pytest.raises(ValueError, match=r"backends.triton coefficients \['launch_us'\] must be positive"):
        FittedModel.from_json(bad, "x.json")
    bad = model.to_json()
    bad["backends"]["cutlass"]["nonsense"] = 1.0
    with pytest.raises(ValueError, match="unknown coefficients"):
        FittedModel.from_json(bad, "x.json")
    with pytest.raises(ValueError, match="not a roofline-2 coefficients file"):
        FittedModel.from_json({"model_family": "other"}, "x.json")


def test_shipped_model_is_fitted_and_loads():
    model = default_model()
    assert set(model.coefficients) == set(COEFFICIENT_TYPES)
    assert "prior" not in model.version, "the package should ship fitted coefficients"


def _write_log(path: Path, truth: FittedModel, noise: float, seed: int) -> None:
    """A results log whose OK rows were 'measured' by ``truth`` (times up to ``noise`` off)."""
    rng = random.Random(seed)
    fingerprint = Fingerprint("NVIDIA_H100_80GB_HBM3", "H100", "t", "t", None, "0", "hash", (128, 128), "bfloat16")
    with ResultsLog.create(path, fingerprint) as log:
        for backend, problem, params in _sample(seed=seed):
            us = predict_with(truth, backend, problem, params, H100) * (1 + rng.uniform(-noise, noise))
            log.append(Measurement(backend, params, problem.n, problem.k, problem.m, "screen", "OK", us=us))
        # Failed candidates carry no time and must not reach the fit.
        log.append(Measurement("triton", {"block_m": 16}, 576, 7168, 1, "verify", "WRONG_RESULT"))


def _truth() -> FittedModel:
    prior = prior_model().coefficients
    return FittedModel("truth", {
        "triton": dataclasses.replace(prior["triton"], launch_us=3.0, wgmma_eff=0.35, pressure=2.0, tile_us=2.5),
        "cutlass": dataclasses.replace(prior["cutlass"], coop_eff=0.6, latency_us=0.8, tile_us=1.2),
        "cublas": dataclasses.replace(prior["cublas"], launch_us=6.0, hbm_eff=0.55)})


def test_fit_recovers_a_recorded_log(tmp_path):
    truth = _truth()
    log = tmp_path / "h100.jsonl"
    _write_log(log, truth, noise=0.02, seed=3)
    observations = load_observations([log])
    assert observations and all(o.us > 0 for o in observations)
    prior_quality = summarize(prior_model(), observations)
    fitted = fit_model(observations, "fit-test")
    quality = summarize(fitted, observations)
    assert quality.median_abs_error_factor < 1.05 < prior_quality.median_abs_error_factor
    assert quality.pick_ratio_geomean > 0.97
    assert quality.spearman_mean > prior_quality.spearman_mean
    # Fresh data from the same GPU (other candidates) is predicted as well as the fitted data.
    other = tmp_path / "other.jsonl"
    _write_log(other, truth, noise=0.0, seed=11)
    assert summarize(fitted, load_observations([other])).median_abs_error_factor < 1.06


def test_cross_validation_scores_every_shape_out_of_sample(tmp_path):
    log = tmp_path / "h100.jsonl"
    _write_log(log, _truth(), noise=0.02, seed=5)
    observations = [o for o in load_observations([log]) if o.backend == "cublas"]  # one fast fit per shape
    scores = cross_validate(observations)
    assert {(s.n, s.k) for s in scores} == set(SHAPES)
    assert quality_of(scores).pick_ratio_geomean == pytest.approx(1.0)  # one candidate per point


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None


def test_gemm_fit_writes_a_loadable_file(tmp_path, capsys):
    from gemm.cli import main

    log = tmp_path / "h100.jsonl"
    _write_log(log, _truth(), noise=0.01, seed=7)
    out = tmp_path / "coef.json"
    assert main(["fit", str(log), "--out", str(out), "--version", "v1", "--check", str(log)]) == 0
    document = json.loads(out.read_text())
    assert document["version"] == "v1" and document["fitted_on"] == ["h100.jsonl"]
    assert document["quality"]["in_sample"]["points"] > 0 and "check:h100.jsonl" in document["quality"]
    assert load_model(out).version == "v1"
    other = tmp_path / "h200.jsonl"
    _write_log(other, _truth(), noise=0.01, seed=8)
    assert main(["fit", str(log), "--out", str(out), "--check", str(log), str(other)]) == 0
    quality = json.loads(out.read_text())["quality"]
    each = quality["check:h100.jsonl"]["points"], quality["check:h200.jsonl"]["points"]
    assert max(each) <= quality["check:all"]["points"] <= sum(each)  # one score over both logs' points
    assert main(["fit", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_gemm_predict_writes_valid_predicted_configs(tmp_path, capsys):
    from gemm.cli import main

    code = main(["predict", "--arch", "H20", "--shape", "2112,7168", "--shape", "7168,2304",
                 "--m", "1,64,4096", "--out", str(tmp_path)])
    assert code == 0
    files = sorted((tmp_path / "NVIDIA_H20").glob("*.json"))
    assert [f.name for f in files] == [
        "N=2112,K=7168,device_name=NVIDIA_H20,dtype=fp8_w8a8,block_shape=[128,128].json",
        "N=7168,K=2304,device_name=NVIDIA_H20,dtype=fp8_w8a8,block_shape=[128,128].json"]
    for path in files:
        assert validate_config_file(path) == []
        config = load_config_file(path)
        assert config.provenance.kind == "predicted"
        assert config.provenance.model_version == default_model().version
        assert sorted(config.entries) == [1, 64, 4096]
        assert all(e.us is None and e.engine_triton for e in config.entries.values())
        # K = 2304 is 18 scale blocks: cuBLAS blockwise is wrong there, so it must never be predicted.
        if config.k == 2304:
            assert all(e.backend != "cublas" for e in config.entries.values())
    with pytest.raises(NoEngineMeasurements, match=r"predicted triton.*gemm tune --engine vllm"):
        export_config(files[0], "vllm", tmp_path / "vllm")  # predicted entries are no engine measurement
    exported = export_config(files[0], "vllm", tmp_path / "vllm", stand_ins=True)
    assert set(json.loads(exported.read_text())) == {"1", "64", "4096"}
    capsys.readouterr()
    assert main(["show", str(tmp_path / "NVIDIA_H20")]) == 0
    assert "predicted" in capsys.readouterr().out


def test_gemm_predict_rejects_bad_arguments(tmp_path, capsys):
    from gemm.cli import main

    assert main(["predict", "--arch", "H20", "--shape", "2112,7168", "--model", str(tmp_path / "none.json"),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "no such file" in err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["predict", "--arch", "H20", "--shape", "2112,7168", "--model", str(tmp_path / "bad.json"),
                 "--out", str(tmp_path)]) == 2
    assert "bad.json: not JSON" in capsys.readouterr().err

    assert main(["predict", "--arch", "B300", "--shape", "2112,7168", "--out", str(tmp_path)]) == 2
    assert "--arch 'B300' is not a known GPU" in capsys.readouterr().err
    assert main(["predict", "--arch", "H20", "--shape", "2112,7168", "--backends", "triton,nope",
                 "--out", str(tmp_path)]) == 2
    assert "--backends" in capsys.readouterr().err
    assert not (tmp_path / "NVIDIA_H20").exists()


def test_predictions_never_replace_measured_entries(tmp_path):
    from gemm.configs import ConfigEntry, ConfigFile, Provenance, write_config
    from gemm.cli import main

    measured = {"block_m": 16, "block_n": 64, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 3,
                "split_k": 1, "use_tma": False, "persistent": False, "k_unroll": 1}
    write_config(tmp_path, ConfigFile("NVIDIA_H20", "H20", 2112, 7168, (128, 128), "bfloat16",
                                      Provenance.current("measured"), {1: ConfigEntry("triton", measured, 12.5)}))
    assert main(["predict", "--arch", "H20", "--shape", "2112,7168", "--m", "1,64", "--out", str(tmp_path)]) == 0
    config = load_config_file(next((tmp_path / "NVIDIA_H20").glob("*.json")))
    assert config.entries[1].params == measured and config.entries[1].us == 12.5
    assert config.provenance_of(1).kind == "measured" and config.provenance_of(64).kind == "predicted"
    assert config.entries[64].us is None


def test_prune_levels_set_the_budget_and_the_savings_line():
    from gemm.cli import build_parser
    from gemm.cli.tune import settings_from_args
    from gemm.tuner.outputs import pruning_savings
    from gemm.tuner.search.space import PRUNE_LEVELS

    def settings(*options):
        args = build_parser().parse_args(["tune", "--interpret", "--shape", "256,256", "--m", "1", *options])
        return settings_from_args(args).sweep_settings("t", ("triton",))

    assert settings("--prune", "aggressive").prune.budget == PRUNE_LEVELS["aggressive"] == 12
    assert settings("--prune", "none").prune.budget is None
    assert settings("--prune", "aggressive", "--budget", "5").prune.budget == 5
    assert settings("--exhaustive").prune.budget is None and settings("--exhaustive").keep is None
    rows = [Measurement("triton", {"block_m": b}, 256, 256, 1, "screen", "OK", us=1.0) for b in (16, 32)]
    rows.append(Measurement("triton", {"block_m": 64}, 256, 256, 1, "space", "INVALID"))
    line = pruning_savings({"kept": 2, "pruned": 6}, rows, wall_s=60.0, resumed_rows=0)
    # 60 s over the 2 evaluated candidates is 30 s each; 6 pruned ones would have taken 3 minutes.
    assert line == ("pruning: the cost model kept 2 of 8 valid candidates; at this sweep's 30.00 s per "
                    "candidate it saved about 3.0 min")
    assert pruning_savings({"kept": 2, "pruned": 0}, rows, 60.0, 0) is None
    assert pruning_savings({"kept": 2, "pruned": 6}, rows, 60.0, resumed_rows=5) is None


def test_gemm_fit_without_out_writes_into_the_user_data_directory(tmp_path, monkeypatch):
    from gemm.cli import main
    from gemm.tuner.model.fitted import COEFFICIENTS_PATH

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    shipped = COEFFICIENTS_PATH.read_bytes()
    log = tmp_path / "h100.jsonl"
    _write_log(log, _truth(), noise=0.01, seed=7)
    assert main(["fit", str(log), "--version", "mine"]) == 0
    assert load_model(tmp_path / "data" / "gemm" / "coefficients.json").version == "mine"
    assert COEFFICIENTS_PATH.read_bytes() == shipped


def test_sm90_model_prefers_split_k_only_where_tiles_are_few():
    """Split-K pays where a launch has fewer tiles than SMs and costs where every SM already has a tile."""
    from gemm.tuner.model.fitted import predict_with, prior_model

    model, arch = prior_model(), get_arch("H200")

    def us(m, n, k, **p):
        return predict_with(model, "sm90", GemmProblem(m, n, k), {"block_m": 64, "block_n": 96, **p}, arch)

    assert us(128, 2112, 7168, splits=3) < 0.7 * us(128, 2112, 7168)       # 44 tiles on 132 SMs
    assert us(4096, 7168, 7168, splits=3) > us(4096, 7168, 7168)           # 4,736 tiles
    assert us(4096, 7168, 7168, cluster_m=2) > us(4096, 7168, 7168)        # 2x1 measured slower
    assert us(4096, 7168, 7168, block_m=128, block_n=128) < us(4096, 7168, 7168, block_m=64, block_n=64)
