"""CPU tests of the CUTLASS backend: params, code generation, toolchain discovery, the JIT cache
(with a stand-in compiler), ahead-of-time builds and the backend's constraints and space.

Nothing here needs nvcc or a GPU; the real compile is in test_cutlass_compile.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from gemm.arch import get_arch
from gemm.kernels import get_backend
from gemm.kernels.base import BackendUnavailable, CompileError, UnsupportedProblem
from gemm.kernels.cutlass import aot, backend as backend_module, codegen, jit, launcher, toolchain
from gemm.kernels.cutlass.backend import CutlassBackend
from gemm.kernels.cutlass.config import (DECOMPOSITION_CODES, RASTER_CODES, REDUCTION_CODES, CutlassParams,
                                         KernelConfig)
from gemm.problem import GemmProblem

H100 = get_arch("H100")
DEEPSEEK_SHAPES = [(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304),
                   (576, 7168), (36864, 7168), (7168, 18432)]
M_VALUES = [1, 3, 16, 64, 100, 128, 512, 1024, 4096]


# --------------------------------------------------------------------------- params


def test_params_defaults_are_the_measured_baseline():
    p = CutlassParams()
    assert (p.schedule, p.tile_m, p.tile_n, p.tile_k, p.cluster_m, p.cluster_n) == ("cooperative", 128, 128, 128, 1, 1)
    assert (p.scheduler, p.decomposition, p.reduction, p.sfa_major) == ("persistent", "data_parallel",
                                                                         "deterministic", "k")


@pytest.mark.parametrize("field, value", [
    ("schedule", "warp"), ("tile_m", 0), ("tile_m", 12.0), ("tile_n", True), ("stages", -1),
    ("sfa_major", "m"), ("scheduler", "stream_k"), ("decomposition", "split"), ("splits", 0),
    ("raster", "m"), ("max_swizzle", 3), ("max_swizzle", True), ("reduction", "atomic"),
])
def test_params_reject_values_outside_their_domain(field, value):
    with pytest.raises(ValueError, match=rf"CutlassParams\.{field}"):
        CutlassParams(**{field: value})


def test_kernel_config_rejects_unsupported_out_dtype():
    with pytest.raises(ValueError, match="out_dtype"):
        KernelConfig(out_dtype="float32")
    with pytest.raises(ValueError, match=r"KernelConfig\.schedule"):
        KernelConfig(schedule="split")


def test_params_round_trip_through_dict_and_name_unknown_keys():
    p = CutlassParams(schedule="pingpong", tile_m=64, cluster_n=2, raster="along_m", max_swizzle=4)
    assert CutlassParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ValueError, match="tile_q"):
        CutlassParams.from_dict({"tile_q": 1})
    with pytest.raises(ValueError, match="splits"):
        CutlassParams.from_dict({"splits": "2"})


def test_run_time_fields_share_one_kernel_config():
    base = CutlassParams(scheduler="streamk", decomposition="streamk")
    variants = [dataclasses.replace(base, decomposition="splitk", splits=4),
                dataclasses.replace(base, raster="along_n", max_swizzle=8, reduction="nondeterministic")]
    assert {v.kernel_config() for v in variants} == {base.kernel_config()}
    for field, value in [("tile_m", 256), ("cluster_m", 2), ("stages", 4), ("sfa_major", "mn"),
                         ("scheduler", "persistent")]:
        assert dataclasses.replace(base, **{field: value}).kernel_config() != base.kernel_config()
    assert base.kernel_config("float16") != base.kernel_config("bfloat16")


def test_kernel_config_names_are_distinct_and_file_safe():
    configs = {p.kernel_config(dtype) for n, k in DEEPSEEK_SHAPES for m in M_VALUES
               for p in CutlassBackend().param_space(GemmProblem(m, n, k), H100) for dtype in ("bfloat16", "float16")}
    names = {c.name for c in configs}
    assert len(names) == len(configs) > 10
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", name) for name in names)


# --------------------------------------------------------------------------- code generation


@pytest.mark.parametrize("config, expected", [
    (KernelConfig(), ["Schedule::Cooperative", "128, 128, 128,", "1, 1,", "    0,", "    false,",
                      "Scheduler::Persistent", "cutlass::bfloat16_t>"]),
    (KernelConfig(schedule="pingpong", tile_m=64, cluster_n=2, out_dtype="float16"),
     ["Schedule::Pingpong", "64, 128, 128,", "1, 2,", "cutlass::half_t>"]),
    (KernelConfig(scheduler="streamk", cluster_m=2, sfa_major="mn", stages=4),
     ["Scheduler::StreamK", "2, 1,", "    4,", "    true,"]),
])
def test_render_source_spells_the_instantiation(config, expected):
    source = codegen.render_source(config)
    for text in expected:
        assert text in source, (text, source)
    assert f'#include "{codegen.HEADER_NAME}"' in source
    assert config.name in source


def test_render_source_exports_the_whole_abi():
    source = codegen.render_source(KernelConfig())
    for symbol in ("abi_version", "config_name", "last_error", "shared_memory_bytes", "stages", "prepare",
                   "workspace_size", "can_implement", "run"):
        assert re.search(rf"GEMM_CUTLASS_EXPORT [^\n]*\b{codegen.SYMBOL_PREFIX}{symbol}\(", source), symbol
    assert f"return {codegen.ABI_VERSION};" in source


def test_distinct_configs_render_distinct_sources():
    configs = [KernelConfig(), KernelConfig(cluster_m=2), KernelConfig(sfa_major="mn"),
               KernelConfig(scheduler="streamk"), KernelConfig(out_dtype="float16"), KernelConfig(stages=3)]
    assert len({codegen.render_source(c) for c in configs}) == len(configs)


def test_render_source_rejects_other_objects():
    with pytest.raises(ValueError, match="KernelConfig"):
        codegen.render_source(CutlassParams())


def _header_switch_cases(header: str, field: str) -> dict[int, str]:
    block = re.search(rf"switch \(options\.{field}\) \{{(.*?)default:", header, re.S)
    assert block, field
    return {int(code): name for code, name in re.findall(r"case (\d+): [^;]*::(\w+);", block.group(1))}


def test_run_time_enum_codes_match_the_header():
    header = codegen.header_text()
    expected_decomposition = {"heuristic": "Heuristic", "data_parallel": "DataParallel", "splitk": "SplitK",
                              "streamk": "StreamK"}
    cases = _header_switch_cases(header, "decomposition")
    assert {code: cases[code] for code in DECOMPOSITION_CODES.values()} == {
        DECOMPOSITION_CODES[k]: v for k, v in expected_decomposition.items()}
    cases = _header_switch_cases(header, "raster")
    assert cases == {RASTER_CODES["heuristic"]: "Heuristic", RASTER_CODES["along_m"]: "AlongM",
                     RASTER_CODES["along_n"]: "AlongN"}
    assert REDUCTION_CODES == {"deterministic": 0, "nondeterministic": 1}
    assert "options.reduction == 0 ? Reduction::Deterministic : Reduction::Nondeterministic" in header


def test_runtime_options_struct_matches_the_header():
    header = codegen.header_text()
    body = re.search(r"struct RuntimeOptions \{(.*?)\};", header, re.S).group(1)
    fields = re.findall(r"int32_t (\w+);", body)
    assert fields == [name for name, _ in launcher.RuntimeOptions._fields_]
    opts = launcher.runtime_options(CutlassParams(scheduler="streamk", decomposition="splitk", splits=3,
                                                  raster="along_n", max_swizzle=8, reduction="nondeterministic"))
    assert (opts.decomposition, opts.splits, opts.raster, opts.max_swizzle, opts.reduction) == (2, 3, 2, 8, 1)


def test_status_codes_match_the_header():
    header = codegen.header_text()
    codes = dict(re.findall(r"k(\w+) = (\d+),", header))
    assert {name: int(v) for name, v in codes.items()} == {
        "Ok": launcher.OK, "Unsupported": launcher.UNSUPPORTED, "BadArgument": launcher.BAD_ARGUMENT,
        "CudaError": launcher.CUDA_ERROR, "Internal": launcher.INTERNAL}


# --------------------------------------------------------------------------- toolchain


def _fake_cutlass_tree(root: Path, version=(4, 3, 1)) -> Path:
    include = root / "include" / "cutlass"
    include.mkdir(parents=True)
    (include / "version.h").write_text(textwrap.dedent(f"""\
        #define CUTLASS_MAJOR {version[0]}
        #define CUTLASS_MINOR {version[1]}
        #define CUTLASS_PATCH {version[2]}
        """))
    (root / "tools" / "util" / "include" / "cutlass" / "util").mkdir(parents=True)
    return root


FAKE_NVCC = """\
#!{python}
# Stand-in for nvcc: answers --version, writes the -o file, records each compile, fails on request.
import os, sys, time
args = sys.argv[1:]
if args == ["--version"]:
    print("Cuda compilation tools, release 13.0, V13.0.88")
    sys.exit(0)
source = open(args[-1]).read()
with open(os.environ["FAKE_NVCC_CALLS"], "a") as calls:
    calls.write(source.splitlines()[1] + "\\n")
time.sleep(float(os.environ.get("FAKE_NVCC_SLEEP", "0")))
if os.environ.get("FAKE_NVCC_FAIL_ON", "\\0") in source:
    print("kernel.cu(12): error: static assertion failed with \\"made-up failure\\"", file=sys.stderr)
    sys.exit(2)
with open(args[args.index("-o") + 1], "w") as out:
    out.write("not really a library")
print("ptxas info    : Used 168 registers, used 2 barriers")
print("ptxas info    :     0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads")
"""


@pytest.fixture
def fake_toolchain(tmp_path, monkeypatch):
    """A made-up nvcc and CUTLASS tree, and a private cache directory."""
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text(FAKE_NVCC.format(python=sys.executable))
    nvcc.chmod(0o755)
    calls = tmp_path / "nvcc_calls.txt"
    calls.write_text("")
    monkeypatch.setenv("GEMM_NVCC", str(nvcc))
    monkeypatch.setenv("GEMM_CUTLASS_DIR", str(_fake_cutlass_tree(tmp_path / "cutlass")))
    monkeypatch.setenv("GEMM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_NVCC_CALLS", str(calls))
    return calls


def test_cutlass_dir_override_and_its_version(fake_toolchain, tmp_path):
    headers = toolchain.find_cutlass()
    assert headers.version == (4, 3, 1) and headers.origin == "GEMM_CUTLASS_DIR"
    root = tmp_path / "cutlass"
    assert headers.include_dirs == (root / "include", root / "tools" / "util" / "include")
    assert toolchain.find_toolchain().nvcc_version == "13.0.88"


def test_missing_headers_and_nvcc_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMM_CUTLASS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(BackendUnavailable, match="no CUTLASS headers in .*GEMM_CUTLASS_DIR"):
        toolchain.find_cutlass()
    assert toolchain.cutlass_version_or_none() is None
    monkeypatch.setenv("GEMM_NVCC", str(tmp_path / "no-nvcc"))
    with pytest.raises(BackendUnavailable, match="nvcc not found"):
        toolchain.find_nvcc()


def test_wheel_headers_are_found_without_importing_the_package():
    code = ("import sys; from gemm.kernels.cutlass import toolchain; h = toolchain.find_cutlass(); "
            "print(h.version, h.origin, 'cutlass_library' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "GEMM_CUTLASS_DIR"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if "CUTLASS headers not found" in result.stderr:
        pytest.skip("the nvidia-cutlass wheel is not installed")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\(4, \d+, \d+\) nvidia-cutlass wheel False", result.stdout.strip()), result.stdout


# --------------------------------------------------------------------------- JIT cache


def test_build_compiles_once_and_caches_by_content(fake_toolchain, tmp_path):
    first = jit.build(KernelConfig())
    assert not first.cached and first.path.read_text() == "not really a library"
    assert (first.registers, first.spill_bytes) == (168, 12)
    entry = first.path.parent
    assert entry.parent == tmp_path / "cache" / "cutlass"
    assert (entry / "kernel.cu").read_text() == codegen.render_source(KernelConfig())
    assert (entry / codegen.HEADER_NAME).read_text() == codegen.header_text()
    meta = json.loads((entry / jit.META_NAME).read_text())
    assert meta["cutlass_version"] == "4.3.1" and meta["nvcc_version"] == "13.0.88" and meta["registers"] == 168
    assert "ptxas" in (entry / jit.LOG_NAME).read_text()
    again = jit.build(KernelConfig())
    assert again.cached and again.path == first.path and again.registers == 168
    other = jit.build(KernelConfig(cluster_n=2))
    assert other.path != first.path
    assert len(fake_toolchain.read_text().splitlines()) == 2
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")], "temporary build dirs left behind"


def test_cache_key_covers_source_header_versions_and_flags(fake_toolchain):
    tc = toolchain.find_toolchain()
    source, header = codegen.render_source(KernelConfig()), codegen.header_text()
    key = jit.cache_key(source, header, tc)
    other_tc = dataclasses.replace(tc, cutlass=dataclasses.replace(tc.cutlass, version=(4, 2, 0)))
    variants = [jit.cache_key(source + " ", header, tc), jit.cache_key(source, header + " ", tc),
                jit.cache_key(source, header, other_tc),
                jit.cache_key(source, header, dataclasses.replace(tc, nvcc_version="12.9.1")),
                jit.cache_key(source, header, tc, flags=("-O2",))]
    assert key not in variants and len(set(variants)) == len(variants)


def test_failed_build_raises_with_the_compiler_log_and_leaves_nothing(fake_toolchain, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_FAIL_ON", "Pingpong")
    with pytest.raises(CompileError, match="made-up failure") as info:
        jit.build(KernelConfig(schedule="pingpong", tile_m=64))
    assert isinstance(info.value, jit.NvccError)
    assert "made-up failure" in info.value.log and info.value.command[0].endswith("nvcc")
    assert "pingpong_64x128x128" in str(info.value)
    root = tmp_path / "cache" / "cutlass"
    assert not [p for p in root.iterdir() if p.is_dir()], "a failed build must not leave a cache entry"


def test_build_many_dedups_runs_in_parallel_and_isolates_failures(fake_toolchain, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_FAIL_ON", "Pingpong")
    monkeypatch.setenv("FAKE_NVCC_SLEEP", "0.3")
    configs = [KernelConfig(), KernelConfig(cluster_m=2), KernelConfig(), KernelConfig(schedule="pingpong", tile_m=64),
               KernelConfig(sfa_major="mn")]
    seen = []
    outcomes = jit.build_many(configs, jobs=4, progress=seen.append)
    assert [o.config for o in outcomes] == list(dict.fromkeys(configs))
    assert len(seen) == 4
    failed = [o for o in outcomes if o.error is not None]
    assert [o.config.schedule for o in failed] == ["pingpong"] and isinstance(failed[0].error, CompileError)
    assert all(o.result.path.is_file() for o in outcomes if o.error is None)
    assert len(fake_toolchain.read_text().splitlines()) == 4


def test_concurrent_builds_of_one_kernel_compile_it_once(fake_toolchain, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_SLEEP", "0.5")
    results = []
    threads = [threading.Thread(target=lambda: results.append(jit.build(KernelConfig()))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.path for r in results}) == 1 and sum(not r.cached for r in results) == 1
    assert len(fake_toolchain.read_text().splitlines()) == 1


# --------------------------------------------------------------------------- ahead-of-time builds


def _write_config(path: Path, entries: dict, **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"entries": entries, **top}))
    return path


def test_config_files_yield_their_cutlass_params(tmp_path):
    coop = CutlassParams().to_dict()
    ping = CutlassParams(schedule="pingpong", tile_m=64).to_dict()
    _write_config(tmp_path / "dev" / "N=2112,K=7168.json", {
        "1": {"backend": "cutlass", "params": ping, "us": 10.0},
        "64": {"backend": "triton", "params": {"block_m": 64}, "us": 12.0},
        "4096": {"backend": "cutlass", "params": coop, "us": 90.0}})
    single = _write_config(tmp_path / "other" / "N=576,K=7168.json", {
        "16": {"backend": "cutlass", "params": ping, "us": 5.0},
        "512": {"backend": "cutlass", "params": dict(coop, raster="along_m"), "us": 30.0}}, out_dtype="float16")
    params = aot.params_in_config_files([tmp_path / "dev", single])
    assert params == [CutlassParams(schedule="pingpong", tile_m=64), CutlassParams(),
                      CutlassParams(raster="along_m")]
    configs = aot.kernel_configs_in_config_files([tmp_path])
    assert set(configs) == {CutlassParams(schedule="pingpong", tile_m=64).kernel_config("bfloat16"),
                            CutlassParams().kernel_config("bfloat16"),
                            CutlassParams(schedule="pingpong", tile_m=64).kernel_config("float16"),
                            CutlassParams().kernel_config("float16")}


def test_bad_config_files_are_named_in_the_error(tmp_path):
    bad_json = tmp_path / "a.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="a.json"):
        aot.params_in_config_files([bad_json])
    bad_params = _write_config(tmp_path / "b.json", {"8": {"backend": "cutlass", "params": {"tile_m": "big"}}})
    with pytest.raises(ValueError, match=r"(?s)b\.json.*M=8.*tile_m"):
        aot.params_in_config_files([bad_params])
    with pytest.raises(FileNotFoundError, match="missing"):
        aot.params_in_config_files([tmp_path / "missing"])


def test_build_kernels_builds_each_library_once_and_reports_failures(fake_toolchain, monkeypatch):
    params = [CutlassParams(), CutlassParams(raster="along_m"), CutlassParams(cluster_m=2)]
    paths = aot.build_kernels(params, jobs=2)
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    monkeypatch.setenv("FAKE_NVCC_FAIL_ON", "Pingpong")
    with pytest.raises(CompileError, match=r"(?s)1 of 2 CUTLASS kernels failed.*pingpong_64x128x128.*made-up failure"):
        aot.build_kernels([CutlassParams(), CutlassParams(schedule="pingpong", tile_m=64)])


# --------------------------------------------------------------------------- backend


def test_backend_is_registered():
    assert isinstance(get_backend("cutlass"), CutlassBackend)


P = CutlassParams
PROBLEM = GemmProblem(128, 2112, 7168)


@pytest.mark.parametrize("problem, params, arch, reason", [
    (PROBLEM, P(), get_arch("H20"), None),
    (PROBLEM, P(), dataclasses.replace(H100, compute_capability=(10, 0)), "compute capability 9.0"),
    (GemmProblem(16, 2112, 7160), P(), H100, "multiple of 16"),
    (GemmProblem(16, 2116, 7168), P(), H100, "multiple of 8"),
    (GemmProblem(16, 2112, 7168, out_dtype="float32"), P(), H100, "output dtype"),
    (GemmProblem(16, 2112, 7168, block_n=64), P(), H100, "128x128 weight blocks"),
    (PROBLEM, P(tile_m=64), H100, "not a supported tile"),
    (PROBLEM, P(schedule="pingpong"), H100, "not a supported tile"),
    (PROBLEM, P(tile_n=256), H100, "not a supported tile"),
    (PROBLEM, P(cluster_m=2, cluster_n=2), H100, "cluster 2x2"),
    (PROBLEM, P(stages=1), H100, "stages"),
    (PROBLEM, P(stages=6), H100, None),
    (PROBLEM, P(stages=7), H100, "shared memory"),
    (PROBLEM, P(schedule="pingpong", tile_m=64, stages=8), H100, None),
    (PROBLEM, P(schedule="pingpong", tile_m=64, stages=9), H100, "shared memory"),
    (GemmProblem(3, 2112, 7168), P(sfa_major="mn"), H100, "M % 4"),
    (GemmProblem(4, 2112, 7168), P(sfa_major="mn"), H100, None),
    (PROBLEM, P(decomposition="streamk"), H100, "persistent scheduler runs data-parallel"),
    (PROBLEM, P(schedule="pingpong", tile_m=64, scheduler="streamk", decomposition="streamk"), H100,
     "no stream-K"),
    (PROBLEM, P(scheduler="streamk", decomposition="splitk"), H100, "splits >= 2"),
    (PROBLEM, P(scheduler="streamk", decomposition="streamk", splits=2), H100, "needs decomposition splitk"),
    (GemmProblem(16, 2112, 512), P(scheduler="streamk", decomposition="splitk", splits=8), H100, "exceeds the 4 K"),
    (GemmProblem(4096, 36864, 7168), P(scheduler="streamk", decomposition="splitk", splits=8), H100, "MiB cap"),
    (PROBLEM, P(scheduler="streamk", decomposition="heuristic", splits=2), H100, None),
    (PROBLEM, P(scheduler="streamk", decomposition="data_parallel"), H100, None),
    (PROBLEM, P(scheduler="streamk", decomposition="streamk", reduction="nondeterministic"), H100, None),
    (GemmProblem(1, 576, 7168, out_dtype="float16"), P(), H100, None),
])
def test_check_names_why_a_candidate_cannot_run(problem, params, arch, reason):
    result = CutlassBackend().check(problem, params, arch)
    if reason is None:
        assert result is None
    else:
        assert result is not None and reason in result, result


def test_param_space_is_valid_distinct_and_sensible():
    be = CutlassBackend()
    for n, k in DEEPSEEK_SHAPES:
        for m in M_VALUES:
            problem = GemmProblem(m, n, k)
            space = list(be.param_space(problem, H100))
            assert len(space) == len(set(space)) and 10 <= len(space) <= 80, (problem, len(space))
            for p in space:
                assert be.check(problem, p, H100) is None, (problem, p)
                assert p.reduction == "deterministic"
            kinds = {(p.schedule, p.scheduler, p.decomposition) for p in space}
            assert ("cooperative", "persistent", "data_parallel") in kinds
            assert ("cooperative", "streamk", "streamk") in kinds
            assert (("pingpong", "persistent", "data_parallel") in kinds) == (m <= 256)
            assert any(p.sfa_major == "mn" for p in space) == (m >= 512)
            assert {(p.cluster_m, p.cluster_n) for p in space} == {(1, 1), (2, 1), (1, 2)}


def test_wide_tiles_are_offered_only_from_cutlass_4_3(monkeypatch):
    problem = GemmProblem(4096, 7168, 2048)
    for version, offered in [((4, 2, 0), False), ((4, 3, 0), True), (None, False)]:
        monkeypatch.setattr(toolchain, "cutlass_version_or_none", lambda v=version: v)
        tiles = {p.tile_m for p in CutlassBackend().param_space(problem, H100)}
        assert (256 in tiles) == offered, version
    monkeypatch.setattr(toolchain, "cutlass_version_or_none", lambda: (4, 3, 0))
    assert 256 not in {p.tile_m for p in CutlassBackend().param_space(GemmProblem(64, 7168, 2048), H100)}


def test_nondeterministic_reduction_is_enumerated_only_when_allowed():
    problem = GemmProblem(64, 576, 7168)
    strict = list(CutlassBackend().param_space(problem, H100))
    relaxed = list(CutlassBackend(allow_nondeterministic=True).param_space(problem, H100))
    assert all(p.reduction == "deterministic" for p in strict)
    extra = set(relaxed) - set(strict)
    assert extra and all(p.reduction == "nondeterministic" and p.scheduler == "streamk" for p in extra)


def test_default_params_are_valid_and_follow_the_measurements():
    be = CutlassBackend()
    for n, k in DEEPSEEK_SHAPES:
        for m in M_VALUES:
            problem = GemmProblem(m, n, k)
            assert be.check(problem, be.default_params(problem, H100), H100) is None
    for m in (1, 16, 128):
        assert be.default_params(GemmProblem(m, 576, 7168), H100) == CutlassParams(schedule="pingpong", tile_m=64)
    assert be.default_params(GemmProblem(512, 36864, 7168), H100) == CutlassParams(raster="along_m")
    assert be.default_params(GemmProblem(4096, 36864, 7168), H100) == CutlassParams(raster="along_m", max_swizzle=4)
    assert be.default_params(GemmProblem(1024, 7168, 2304), H100) == CutlassParams(raster="along_m")
    # 136 tiles of 128x128 on 132 SMs: the second wave is nearly empty.
    assert be.default_params(GemmProblem(1024, 2112, 7168), H100).decomposition == "streamk"
    assert be.default_params(GemmProblem(1024, 3072, 1536), H100).decomposition == "data_parallel"


def test_build_refuses_invalid_params_before_compiling(monkeypatch):
    monkeypatch.setenv("GEMM_NVCC", "/nonexistent/nvcc")
    with pytest.raises(UnsupportedProblem, match="no stream-K"):
        CutlassBackend().build(PROBLEM, P(schedule="pingpong", tile_m=64, scheduler="streamk",
                                          decomposition="streamk"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_unavailable_without_cuda():
    assert CutlassBackend().unavailable_reason() == "no CUDA device"
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        CutlassBackend().build(PROBLEM, P())


def test_stage_bytes_mirror_the_header():
    assert backend_module.stage_bytes(P()) == 33408 + 16
    assert backend_module.stage_bytes(P(schedule="pingpong", tile_m=64)) == 24960 + 16


# --------------------------------------------------------------------------- launcher helpers (CPU tensors)


def test_activation_scales_are_passed_in_the_layout_the_kernel_reads():
    a_scale = torch.rand(6, 4)
    assert launcher._activation_scales(a_scale, False).data_ptr() == a_scale.data_ptr()
    mn = launcher._activation_scales(a_scale, True)
    assert mn.shape == (4, 6) and mn.is_contiguous() and torch.equal(mn, a_scale.t())
    m_major = torch.rand(4, 6).t()  # [M, kb] with stride (1, M): already what MN-major reads
    passed = launcher._activation_scales(m_major, True)
    assert passed.data_ptr() == m_major.data_ptr() and passed.is_contiguous()
    assert torch.equal(launcher._activation_scales(m_major, False), m_major)


def test_misaligned_operands_are_copied_for_tma():
    buffer = torch.randn(8, 80).to(torch.float8_e4m3fn)
    aligned = buffer[:, :64]  # row pitch 80 bytes: a multiple of 16
    assert launcher._tma_ready(aligned).data_ptr() == aligned.data_ptr()
    for bad in (buffer[:, 1:65], torch.randn(8, 72).to(torch.float8_e4m3fn)[:, :64]):
        fixed = launcher._tma_ready(bad)
        assert fixed.data_ptr() % 16 == 0 and fixed.stride(0) % 16 == 0
        assert torch.equal(fixed.float(), bad.float())
