"""A held-out set of bad inputs across the command line, the config files and the Python API.

Every case must end in a clear error: a command exits 1 or 2 with one line on stderr naming the argument
(or the path, key and M) and no traceback; an API call raises the documented error naming the argument;
a bad config file is reported, never used silently.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import gemm
from gemm import dispatch
from gemm.cli import main
from gemm.configs import (
    ConfigEntry, ConfigError, ConfigFile, ConfigWarning, Provenance, import_config, load_config_file,
    validate_config_file, write_config,
)
from gemm.problem import GemmProblem
from gemm.tuner.results.log import Fingerprint, ResultsLog
from gemm.tuner.results.measurement import Measurement

ENGINE = "N=256,K=256,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
GOOD_ENGINE = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
               "num_stages": 3}
TRITON = {"block_m": 64, "block_n": 128, "block_k": 128, "group_m": 8, "num_warps": 4, "num_stages": 3}


def _log(path: Path, device: str) -> Path:
    fingerprint = Fingerprint(device, "H100", None, None, None, "0", "hash", (128, 128), "bfloat16")
    with ResultsLog.create(path, fingerprint) as log:
        for m in (1, 2, 4):
            log.append(Measurement("triton", {"v": m}, 256, 256, m, "final", "OK", us=10.0))
    return path


def _engine(directory: Path, name: str, **changes) -> Path:
    path = directory / name / ENGINE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"1": GOOD_ENGINE, "16": {**GOOD_ENGINE, **changes}}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The paths the cases name: plain files, directories, logs and config files good and bad."""
    root = tmp_path_factory.mktemp("bad-inputs")
    made = {"tmp": root, "dir": root / "dir", "file": root / "afile", "missing": root / "missing"}
    made["dir"].mkdir()
    made["file"].write_text("not a directory\n")
    made["log"] = _log(root / "h100.jsonl", "NVIDIA_H100_80GB_HBM3")
    made["h200log"] = _log(root / "h200.jsonl", "NVIDIA_H200")
    corrupt = _log(root / "corrupt.jsonl", "CPU_interpreter")
    lines = corrupt.read_text().splitlines()
    lines[2] = '{"torn in the middle'
    corrupt.write_text("\n".join(lines) + "\n")
    made["corruptlog"] = corrupt
    native = ConfigFile("NVIDIA_H100_80GB_HBM3", "H100", 256, 256, (128, 128), "bfloat16",
                        Provenance.current("measured"), {1: ConfigEntry("triton", dict(TRITON, block_m=17), 5.0)})
    made["block17"] = write_config(root / "block17", native)
    made["k100"] = _engine(root, "k100", BLOCK_SIZE_K=100)
    made["warps3"] = _engine(root, "warps3", num_warps=3)
    made["m0"] = _engine(root, "m0", BLOCK_SIZE_M=0)
    made["strkey"] = _engine(root, "strkey", GROUP_SIZE_M="8")
    notjson = root / "notjson" / ENGINE
    notjson.parent.mkdir()
    notjson.write_text("{ broken")
    made["notjson"] = notjson
    return made


# (id, argv with {placeholders} from ``files``, environment, exit code, what the one stderr line names)
CLI_CASES = [
    ("tune-tie-negative", "tune --interpret --tie -1 --out {tmp}/o", {}, 2, "--tie"),
    ("tune-tie-nan", "tune --interpret --tie nan --out {tmp}/o", {}, 2, "--tie"),
    ("tune-screen-margin", "tune --interpret --screen-margin -0.5 --out {tmp}/o", {}, 2, "--screen-margin"),
    ("tune-keep-zero", "tune --interpret --keep 0 --out {tmp}/o", {}, 2, "--keep"),
    ("tune-budget-zero", "tune --interpret --budget 0 --out {tmp}/o", {}, 2, "--budget"),
    ("tune-workers-negative", "tune --interpret --workers -1 --out {tmp}/o", {}, 2, "--workers"),
    ("tune-timeout-zero", "tune --interpret --timeout 0 --out {tmp}/o", {}, 2, "--timeout"),
    ("tune-build-timeout-inf", "tune --interpret --build-timeout inf --out {tmp}/o", {}, 2, "--build-timeout"),
    ("tune-time-limit-negative", "tune --interpret --time-limit -5 --out {tmp}/o", {}, 2, "--time-limit"),
    ("tune-seed-negative", "tune --interpret --seed -1 --out {tmp}/o", {}, 2, "--seed"),
    ("tune-timer-spec", "tune --interpret --timer bogus --out {tmp}/o", {}, 2, "--timer"),
    ("tune-timer-module", "tune --interpret --timer no_such_mod:T --out {tmp}/o", {}, 2, "--timer"),
    ("tune-timer-not-a-class", "tune --interpret --timer os.path:sep --out {tmp}/o", {}, 2, "--timer"),
    ("tune-m-empty-item", "tune --interpret --m 1,,2 --out {tmp}/o", {}, 2, "--m"),
    ("tune-m-zero", "tune --interpret --m 0 --out {tmp}/o", {}, 2, "--m"),
    ("tune-m-word", "tune --interpret --m abc --out {tmp}/o", {}, 2, "--m"),
    ("tune-m-extra-trailing", "tune --interpret --m-extra 8192, --out {tmp}/o", {}, 2, "--m-extra"),
    ("tune-shape-one-number", "tune --interpret --shape 7168 --out {tmp}/o", {}, 2, "--shape"),
    ("tune-shape-zero", "tune --interpret --shape 0,5 --out {tmp}/o", {}, 2, "--shape"),
    ("tune-backends-empty", "tune --interpret --backends , --out {tmp}/o", {}, 2, "--backends"),
    ("tune-backends-unknown", "tune --interpret --backends nope --out {tmp}/o", {}, 2, "--backends"),
    ("tune-out-file", "tune --interpret --out {file}", {}, 2, "--out"),
    ("tune-out-under-file", "tune --interpret --out {file}/below", {}, 2, "--out"),
    ("tune-log-directory", "tune --interpret --out {tmp}/o --log {dir}", {}, 2, "--log"),
    ("tune-resume-corrupt", "tune --interpret --out {tmp}/o --log {corruptlog} --resume", {}, 2, "corrupt.jsonl:3"),
    ("tune-preset-unknown", "tune --preset nope", {}, 2, "--preset"),
    ("tune-prune-unknown", "tune --prune nope", {}, 2, "--prune"),
    ("tune-out-dtype", "tune --out-dtype int8", {}, 2, "--out-dtype"),
    ("tune-gpus-word", "tune --interpret --gpus abc --out {tmp}/o", {}, 2, "--gpus"),
    ("tune-seed-huge", "tune --interpret --seed 99999999999999999999 --out {tmp}/o", {}, 2, "--seed"),
    ("tune-log-gz", "tune --interpret --out {tmp}/o --log {tmp}/shipped.jsonl.gz --resume", {}, 2, "--log"),
    ("tune-resume-other-device", "tune --interpret --out {tmp}/o --log {log} --resume", {}, 2, "cannot resume"),
    ("tune-nvcc-missing", "tune --interpret --out {tmp}/o", {"GEMM_NVCC": "{missing}"}, 2, "GEMM_NVCC"),
    ("tune-config-dir-file", "tune --interpret", {"GEMM_CONFIG_DIR": "{file}"}, 2, "GEMM_CONFIG_DIR"),
    ("tune-build-jobs-word", "tune --interpret --out {tmp}/o", {"GEMM_BUILD_JOBS": "abc"}, 2, "GEMM_BUILD_JOBS"),
    ("predict-arch", "predict --arch H999", {}, 2, "--arch"),
    ("predict-backends", "predict --arch H20 --backends triton,nope", {}, 2, "--backends"),
    ("predict-backends-empty", "predict --arch H20 --backends triton,", {}, 2, "--backends"),
    ("predict-model-missing", "predict --arch H20 --model {missing}", {}, 2, "--model"),
    ("predict-out-file", "predict --arch H20 --shape 256,256 --m 1 --out {file}", {}, 2, "--out"),
    ("predict-m", "predict --arch H20 --m 1,,2", {}, 2, "--m"),
    ("fit-log-missing", "fit {missing}", {}, 2, "missing"),
    ("fit-out-directory", "fit {log} --out {dir}", {}, 2, "--out"),
    ("export-format", "export --format trt {dir} --out {tmp}/e", {}, 2, "--format"),
    ("export-out-file", "export --format vllm {dir} --out {file}", {}, 2, "--out"),
    ("export-block-m-17", "export --format vllm {block17} --out {tmp}/e17 --stand-ins", {}, 1, "BLOCK_SIZE_M=17"),
    ("export-no-measurements", "export --format vllm {block17} --out {tmp}/e18", {}, 1, "--engine vllm"),
    ("export-force-alone", "export --format vllm {block17} --out {tmp}/e19 --force", {}, 2, "--stand-ins"),
    ("export-engine-path-alone", "export --format vllm {block17} --out {tmp}/e20 --engine-path {tmp}", {}, 2,
     "--install"),
    ("export-install-not-found", "export --format sglang {block17} --install --engine-path {tmp}", {}, 2,
     "no SGLang package"),
    ("tune-baseline-alone", "tune --baseline {dir}", {}, 2, "--engine"),
    ("tune-engine-backends", "tune --engine vllm --backends triton", {}, 2, "--backends"),
    ("tune-baseline-missing", "tune --engine vllm --baseline {missing}", {}, 2, "--baseline"),
    ("tune-engine-unknown", "tune --engine trt", {}, 2, "--engine"),
    ("select-report-alone", "select {log} --out {tmp}/s1 --report {tmp}/r1", {}, 2, "--baseline"),
    ("select-baseline-not-engine", "select {log} --out {tmp}/s2 --baseline {dir}", {}, 2, "engine sweep"),
    ("export-source-missing", "export --format vllm {missing} --out {tmp}/e", {}, 2, "missing"),
    ("import-block-k-100", "import {k100} --out {tmp}/i1", {}, 1, "BLOCK_SIZE_K=100"),
    ("import-num-warps-3", "import {warps3} --out {tmp}/i2", {}, 1, "num_warps=3"),
    ("import-block-m-0", "import {m0} --out {tmp}/i3", {}, 1, "BLOCK_SIZE_M"),
    ("import-string-value", "import {strkey} --out {tmp}/i4", {}, 1, "GROUP_SIZE_M"),
    ("import-not-json", "import {notjson} --out {tmp}/i5", {}, 1, "not valid JSON"),
    ("import-file-name", "import {file} --out {tmp}/i6", {}, 1, "not an engine config file name"),
    ("import-arch-unknown", "import {k100} --out {tmp}/i7 --arch H1OO", {}, 2, "--arch"),
    ("fit-version-empty", "fit {log} --version=", {}, 2, "--version"),
    ("import-out-file", "import {k100} --out {file}", {}, 2, "--out"),
    ("build-jobs-negative", "build --jobs -2", {}, 2, "--jobs"),
    ("build-jobs-zero", "build --jobs 0", {}, 2, "--jobs"),
    ("build-config-missing", "build --config {missing}", {}, 2, "--config"),
    ("build-configs-file", "build --configs {file}", {}, 2, "--configs"),
    ("build-env-jobs-word", "build --configs {dir}", {"GEMM_BUILD_JOBS": "abc"}, 2, "GEMM_BUILD_JOBS"),
    ("build-env-jobs-zero", "build --configs {dir}", {"GEMM_BUILD_JOBS": "0"}, 2, "GEMM_BUILD_JOBS"),
    ("show-env-cache-file", "show {dir}", {"GEMM_CACHE_DIR": "{file}"}, 2, "GEMM_CACHE_DIR"),
    ("show-env-check-scales", "show {dir}", {"GEMM_CHECK_SCALES": "maybe"}, 2, "GEMM_CHECK_SCALES"),
    ("plot-out-file", "plot {log} --out {file}", {}, 2, "--out"),
    ("plot-log-missing", "plot {missing} --out {tmp}/p", {}, 2, "missing"),
    ("plot-not-a-log", "plot {file} --out {tmp}/p", {}, 2, "afile"),
    ("plot-two-devices", "plot {log} {h200log} --out {tmp}/p", {}, 2, "one device"),
    ("select-tie", "select {log} --out {tmp}/s --tie -1", {}, 2, "--tie"),
    ("select-out-file", "select {log} --out {file}", {}, 2, "--out"),
    ("select-log-missing", "select {missing} --out {tmp}/s", {}, 2, "missing"),
    ("compare-target", "compare {log} {log} --target 0", {}, 2, "--target"),
    ("compare-target-above-one", "compare {log} {log} --target 1.5", {}, 2, "--target"),
    ("compare-tie", "compare {log} {log} --tie nan", {}, 2, "--tie"),
    ("compare-log-missing", "compare {missing} {log}", {}, 2, "missing"),
    ("bench-time-limit", "bench --time-limit 0", {}, 2, "--time-limit"),
    ("bench-m", "bench --m 1,,2", {}, 2, "--m"),
    ("bench-out-file", "bench --out {file}", {}, 2, "--out"),
    ("bench-report-form", "bench --report H200", {}, 2, "H200"),
    ("show-missing", "show {missing}", {}, 1, "missing"),
    ("show-not-json", "show {notjson}", {}, 1, "not valid JSON"),
    ("command-unknown", "nope", {}, 2, "nope"),
    ("command-missing", "", {}, 2, "command"),
]


def _fill(text: str, files: dict[str, Path]) -> str:
    return text.format(**{name: str(path) for name, path in files.items()})


@pytest.mark.parametrize("argv, env, code, names", [case[1:] for case in CLI_CASES],
                         ids=[case[0] for case in CLI_CASES])
def test_a_bad_command_line_is_one_clear_line(files, capsys, monkeypatch, argv, env, code, names):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # `--interpret` sets it; undo that after each case
    for name, value in env.items():
        monkeypatch.setenv(name, _fill(value, files))
    before = sorted(p.name for p in files["tmp"].iterdir())
    assert main(_fill(argv, files).split()) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and names in lines[0], err
    if code == 2:  # refused before any work: nothing new where the outputs would go
        assert sorted(p.name for p in files["tmp"].iterdir()) == before


@pytest.mark.parametrize("name, names", [
    ("k100", "BLOCK_SIZE_K=100"), ("warps3", "num_warps=3"), ("m0", "BLOCK_SIZE_M"), ("strkey", "GROUP_SIZE_M"),
    ("notjson", "not valid JSON"), ("block17", "block_m=17"),
])
def test_gemm_validate_reports_each_bad_file(files, capsys, name, names):
    assert main(["validate", str(files[name])]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "INVALID" in out and names in out
    assert validate_config_file(files[name])


def test_the_op_never_uses_a_bad_config_silently(files, monkeypatch, tmp_path):
    bad = tmp_path / "root" / "CPU_interpreter" / ENGINE.replace("NVIDIA_H100_80GB_HBM3", "CPU_interpreter")
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1, "entries": ')
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(tmp_path / "root"))
    dispatch.clear_caches()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dispatch.choose(GemmProblem(1, 256, 256), "cpu", None)
    finally:
        dispatch.clear_caches()
    messages = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert len(messages) == 1 and str(bad) in messages[0] and "gemm validate" in messages[0]


def _inputs():
    from gemm.quant import random_problem_inputs

    return random_problem_inputs(2, 128, 256)


def _bad_call(change: str):
    a, b, sa, sb = _inputs()
    kwargs = {}
    if change == "a-dtype":
        a = a.to(torch.float32)
    elif change == "b-shape":
        b = b[:, :128]
    elif change == "b_scale-shape":
        sb = sb[:, :1].contiguous()
    elif change == "a_scale-dtype":
        sa = sa.double()
    elif change == "block_size":
        kwargs["block_size"] = (64, 64)
    elif change == "out_dtype":
        kwargs["out_dtype"] = torch.int8
    elif change == "a_scale-nan":
        sa[0, 0] = float("nan")
        kwargs["check_scales"] = True
    elif change == "b_scale-inf":
        sb[0, 0] = float("inf")
        kwargs["check_scales"] = True
    return lambda: gemm.w8a8_block_fp8_matmul(a, b, sa, sb, **kwargs)


API_CASES = [
    ("op-a-dtype", lambda: _bad_call("a-dtype")(), gemm.GemmInputError, "a must have dtype"),
    ("op-b-shape", lambda: _bad_call("b-shape")(), gemm.GemmInputError, "b must have shape"),
    ("op-b_scale-shape", lambda: _bad_call("b_scale-shape")(), gemm.GemmInputError, "b_scale must have shape"),
    ("op-a_scale-dtype", lambda: _bad_call("a_scale-dtype")(), gemm.GemmInputError, "a_scale must have dtype"),
    ("op-block-size", lambda: _bad_call("block_size")(), gemm.GemmInputError, "block_size"),
    ("op-out-dtype", lambda: _bad_call("out_dtype")(), gemm.GemmInputError, "out_dtype"),
    ("op-a_scale-nan", lambda: _bad_call("a_scale-nan")(), gemm.GemmInputError, "a_scale holds"),
    ("op-b_scale-inf", lambda: _bad_call("b_scale-inf")(), gemm.GemmInputError, "b_scale holds"),
    ("problem-m-zero", lambda: GemmProblem(0, 128, 128), gemm.GemmInputError, "GemmProblem.m"),
    ("config-not-json", lambda: load_config_file(FILES["notjson"]), ConfigError, "not valid JSON"),
    ("config-engine-as-native", lambda: load_config_file(FILES["k100"]), ConfigError, "gemm import"),
    ("import-block-k", lambda: import_config(FILES["k100"], FILES["tmp"] / "api"), ConfigError, "BLOCK_SIZE_K=100"),
    ("entry-us-negative", lambda: ConfigEntry("triton", {}, -1.0), ConfigError, "us must be a positive"),
    ("write-config-type", lambda: write_config(FILES["tmp"] / "api", {}), TypeError, "config must be a ConfigFile"),
    ("tune-settings-tie", lambda: _settings(tie=-1.0), ValueError, "tie must be"),
    ("tune-settings-keep", lambda: _settings(keep=0), ValueError, "keep must be"),
    ("tune-settings-m-grid", lambda: _settings(m_grid=()), ValueError, "m_grid"),
    ("timer-spec", lambda: _timer("nope"), ValueError, "package.module:Class"),
    ("m-list-empty-item", lambda: _m_list("1,,2"), ValueError, "--m expects"),
]
FILES: dict[str, Path] = {}


def _settings(**changes):
    from gemm.tuner.presets import LayerShape
    from gemm.tuner.settings import TuneSettings

    values = {"shapes": (LayerShape("x", 256, 256),), "m_grid": (1,), "out_root": Path("unused"), **changes}
    return TuneSettings(**values)


def _timer(spec: str):
    from gemm.tuner.timing import timer_class

    return timer_class(spec)


def _m_list(text: str):
    from gemm.tuner.presets import parse_m_list

    return parse_m_list(text)


@pytest.mark.parametrize("call, error, names", [case[1:] for case in API_CASES], ids=[case[0] for case in API_CASES])
def test_a_bad_api_call_raises_a_clear_error(files, monkeypatch, call, error, names):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("GEMM_CHECK_SCALES", raising=False)
    FILES.update(files)
    with pytest.raises(error) as caught:
        call()
    assert names in str(caught.value)


def test_the_held_out_set_is_large():
    assert len(CLI_CASES) + len(API_CASES) + 6 + 1 >= 100
