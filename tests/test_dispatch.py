"""The op's choice of backend and params: tuned configs by nearest M, fallbacks and their warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Imported before any test sets TRITON_INTERPRET, so its kernels stay as this session built them
# (the kernel run under the interpreter below happens in a subprocess).
import gemm.kernels.triton_fp8  # noqa: F401
from gemm import dispatch
from gemm.arch import interpreter_arch
from gemm.configs import ConfigEntry, ConfigFile, Provenance, config_path, write_config
from gemm.kernels.triton_fp8 import TritonParams
from gemm.problem import GemmProblem
from interpreter_support import requires_interpreter
from dispatch_calls import choose_with_warnings

REPO = Path(__file__).resolve().parents[1]
N, K = 256, 384
PROVENANCE = Provenance(kind="measured", tool_version="0.1.0", torch=None, triton=None, cutlass=None,
                        date="2025-01-02T03:04:05+00:00")


def triton_params(block_m=16, block_n=64, num_warps=4, split_k=1, **more) -> dict:
    return dict(block_m=block_m, block_n=block_n, block_k=128, group_m=8, num_warps=num_warps, num_stages=3,
                split_k=split_k, use_tma=False, persistent=False, **more)


def write(root: Path, entries: dict, n: int = N, k: int = K) -> Path:
    return write_config(root, ConfigFile(device_name=dispatch.INTERPRETER_DEVICE_NAME, arch=interpreter_arch().name,
                                         n=n, k=k, block_shape=(128, 128), out_dtype="bfloat16",
                                         provenance=PROVENANCE, entries=entries))


@pytest.fixture
def config_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    dispatch.clear_caches()
    yield tmp_path
    dispatch.clear_caches()


def choose(m: int, n: int = N, k: int = K):
    """dispatch.choose for CPU tensors, with the ConfigWarnings it gave."""
    return choose_with_warnings(m, n, k)


def heuristic(m: int, n: int = N, k: int = K):
    return dispatch.heuristic_choice(GemmProblem(m, n, k), interpreter_arch())


def test_interpreter_configs_live_under_cpu_interpreter():
    assert dispatch.INTERPRETER_DEVICE_NAME == "CPU_interpreter"


def test_picks_the_nearest_tuned_entry(config_root):
    entries = {16: ConfigEntry("triton", triton_params(16, 64, split_k=2), 5.0),
               128: ConfigEntry("triton", triton_params(64, 128), 9.0),
               1024: ConfigEntry("triton", triton_params(128, 128, num_warps=8), 30.0)}
    write(config_root, entries)
    for m, tuned_m in [(1, 16), (20, 16), (72, 16), (73, 128), (575, 128), (577, 1024), (9000, 1024)]:
        backend, params, warned = choose(m)
        assert backend.name == "triton"
        assert params == TritonParams.from_dict(entries[tuned_m].params), m
        assert warned == []


def test_unusable_entries_fall_back_to_the_next_nearest_with_one_warning_each(config_root):
    path = write(config_root, {
        16: ConfigEntry("cublas", {}, 2.0),                             # unavailable on CPU / K/128 = 3 on a GPU
        20: ConfigEntry("fpga", {}, 2.5),                               # unknown backend
        24: ConfigEntry("triton", triton_params(48), 3.0),              # Triton's check rejects block_m=48
        30: ConfigEntry("triton", {"block_mm": 16}, 3.0),               # not TritonParams
        512: ConfigEntry("triton", triton_params(64, 128), 40.0),
    })
    backend, params, warned = choose(17)
    assert params == TritonParams.from_dict(triton_params(64, 128))
    assert len(warned) == 4
    assert all(str(path) in w for w in warned)
    assert any("M=16 (cublas)" in w for w in warned)
    assert any("M=20 (fpga)" in w and "unknown backend 'fpga'" in w for w in warned)
    assert any("M=24 (triton)" in w and "block_m=48" in w for w in warned)
    assert any("M=30 (triton)" in w and "unknown TritonParams parameter" in w for w in warned)
    _, again, warned_again = choose(18)
    assert again == params and warned_again == []  # each cause is reported once


def test_an_entry_rejected_for_some_m_warns_once_not_per_m(config_root, monkeypatch):
    """Like MN-major CUTLASS entries at ragged M: the reason names M, the warning still comes once."""
    from gemm.kernels.triton_fp8 import TritonBackend

    aligned_only = TritonParams.from_dict(triton_params(64, 128))
    original = TritonBackend.check

    def check(self, problem, params, arch):
        if params == aligned_only and problem.m % 4:
            return f"needs M % 4 == 0, got M={problem.m}"
        return original(self, problem, params, arch)

    monkeypatch.setattr(TritonBackend, "check", check)
    write(config_root, {16: ConfigEntry("triton", triton_params(16, 64), 2.0),
                        512: ConfigEntry("triton", triton_params(64, 128), 40.0)})
    assert choose(512)[1] == aligned_only
    backend, params, warned = choose(513)
    assert params == TritonParams.from_dict(triton_params(16, 64))  # the next-nearest entry
    assert len(warned) == 1 and "M=512 (triton)" in warned[0] and "got M=513" in warned[0]
    for m in (514, 515, 1001):
        assert choose(m)[2] == []


def test_no_usable_entry_uses_the_heuristic(config_root):
    write(config_root, {16: ConfigEntry("fpga", {}, 1.0)})
    backend, params, warned = choose(16)
    assert (backend, params) == heuristic(16)
    assert any("no entry can run on this device" in w for w in warned)


def test_missing_file_warns_once_per_shape(config_root):
    backend, params, warned = choose(1)
    assert (backend, params) == heuristic(1)
    expected = config_path(config_root, "CPU_interpreter", N, K)
    assert len(warned) == 1
    assert str(expected) in warned[0] and f"gemm tune --shape {N},{K}" in warned[0]
    assert choose(64)[2] == []                      # same (device, N, K): not again
    assert len(choose(64, n=512)[2]) == 1            # another shape: its own warning


@pytest.mark.parametrize("content, message", [
    ("{ not json", "not valid JSON"),
    (json.dumps({"schema_version": 1, "device_name": "CPU_interpreter"}), "arch is missing"),
    (json.dumps({"1": {"BLOCK_SIZE_M": 16}}), "engine file"),
])
def test_corrupt_file_warns_and_uses_the_heuristic(config_root, content, message):
    path = config_path(config_root, "CPU_interpreter", N, K)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    backend, params, warned = choose(32)
    assert (backend, params) == heuristic(32)
    assert len(warned) == 1 and str(path) in warned[0] and message in warned[0] and "gemm validate" in warned[0]
    assert choose(33)[2] == []


def test_mismatched_file_warns_and_uses_the_heuristic(config_root):
    right = write(config_root, {16: ConfigEntry("triton", triton_params(), 1.0)}, n=512)
    wrong = config_path(config_root, "CPU_interpreter", N, K)
    wrong.write_text(right.read_text())  # content says N=512, name says N=256
    backend, params, warned = choose(16)
    assert (backend, params) == heuristic(16)
    assert len(warned) == 1 and "the file name says n=256 but the content has n=512" in warned[0]


def test_clear_caches_forgets_configs_kernels_and_warnings(config_root):
    assert len(choose(16)[2]) == 1                     # no file yet
    dispatch.kernel_for(GemmProblem(16, N, K), "cpu", None)
    assert dispatch.kernel_for.cache_info().currsize == 1
    path = write(config_root, {16: ConfigEntry("triton", triton_params(32, 128), 1.0)})
    assert choose(16)[1] == TritonParams.from_dict(triton_params(32, 128))  # a write refreshes the lookup
    raw = json.loads(path.read_text())
    raw["entries"]["16"]["params"]["block_n"] = 64
    path.write_text(json.dumps(raw))                   # edited behind the cache's back
    assert choose(16)[1].block_n == 128
    dispatch.clear_caches()
    assert dispatch.kernel_for.cache_info().currsize == 0
    assert choose(16)[1].block_n == 64
    path.unlink()
    dispatch.clear_caches()
    assert len(choose(16)[2]) == 1                     # warnings were forgotten too


END_TO_END = textwrap.dedent("""
    import json, sys, warnings
    import gemm
    from gemm.configs import ConfigEntry, ConfigFile, ConfigWarning, Provenance, write_config
    from gemm.kernels.triton_fp8 import TritonBackend
    from gemm.quant import random_problem_inputs
    from gemm.reference import reference_matmul, relative_error

    built = []
    original_build = TritonBackend.build
    def recording_build(self, problem, params):
        built.append(params.to_dict())
        return original_build(self, problem, params)
    TritonBackend.build = recording_build

    params = json.loads(sys.argv[2])
    write_config(sys.argv[1], ConfigFile(
        device_name="CPU_interpreter", arch="CPU-interpreter", n=256, k=384, block_shape=(128, 128),
        out_dtype="bfloat16", provenance=Provenance.current("measured"),
        entries={16: ConfigEntry("triton", params["16"], 5.0), 256: ConfigEntry("triton", params["256"], 9.0)}))
    a, b, a_scale, b_scale = random_problem_inputs(20, 256, 384, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = gemm.w8a8_block_fp8_matmul(a, b, a_scale, b_scale)
    ref = reference_matmul(a, b, a_scale, b_scale, (128, 128))
    print(json.dumps({"built": built, "error": relative_error(out.float(), ref), "dtype": str(out.dtype),
                      "config_warnings": [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]}))
""")


@requires_interpreter
def test_op_runs_the_tuned_entry_end_to_end_on_the_interpreter(tmp_path):
    """Write a config as a CPU tuning run would, then call the op: it runs that entry's params, correctly."""
    params = {"16": triton_params(16, 64), "256": triton_params(64, 128)}
    assert TritonParams.from_dict(params["16"]) != heuristic(20)[1]  # else the check below proves nothing
    env = dict(os.environ, TRITON_INTERPRET="1", GEMM_CONFIG_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", END_TO_END, str(tmp_path), json.dumps(params)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["built"] == [TritonParams.from_dict(params["16"]).to_dict()]
    assert report["config_warnings"] == []
    assert report["dtype"] == "torch.bfloat16"
    assert report["error"] <= 1e-2
