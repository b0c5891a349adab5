"""CPU tests of the Hopper kernel backend ("sm90"): params, constraints with reasons, the space, the
default, the generated source and the shared JIT (with a stand-in compiler). Nothing here needs a GPU;
the real nvcc build is ``test_sm90_compile_only`` (marked ``nvcc``)."""

from __future__ import annotations

import ctypes
import dataclasses
import math
import re

import pytest
import torch

from gemm.arch import get_arch
from gemm.kernels import backend_names, default_backend_names, get_backend
from gemm.kernels.base import BackendUnavailable
from gemm.kernels.nvcc import jit, toolchain
from gemm.kernels.sm90 import codegen, launcher
from gemm.kernels.sm90.backend import SEARCH_BLOCK_NS, Sm90Backend, estimated_cost
from gemm.kernels.sm90.params import (MAX_ACCUMULATORS_PER_THREAD, SM90_SMEM_BYTES, KernelConfig, Sm90Params,
                                      accumulators_per_thread, overlap_fits, shared_memory_bytes, stages_that_fit)
from gemm.problem import GemmProblem

H200 = get_arch("H200")
RAGGED = [(1, 576, 7168), (3, 2112, 7168), (17, 512, 256), (100, 2112, 512), (128, 7168, 2304), (1024, 4608, 7168),
          (8192, 36864, 7168)]


def test_registered_but_tuned_on_request():
    assert "sm90" in backend_names() and "sm90" not in default_backend_names()
    assert isinstance(get_backend("sm90"), Sm90Backend)


@pytest.mark.parametrize("values,pattern", [
    (dict(block_m=96), r"Sm90Params.block_m must be one of \[64, 128, 256\]"),
    (dict(block_n=24), r"block_n must be a multiple of 16 in \[16, 256\], got 24"),
    (dict(block_n=272), r"block_n must be a multiple of 16"),
    (dict(stages=1), r"stages must be 0 \(as many as fit\) or in \[2, 8\]"),
    (dict(cluster_m=2, cluster_n=2), r"cluster 2x2 is not one of"),
    (dict(raster="diagonal"), r"raster must be one of"),
    (dict(group=0), r"group must be an integer >= 1"),
    (dict(overlap=1), r"overlap must be true/false"),
])
def test_params_domain_errors_name_the_field(values, pattern):
    with pytest.raises(ValueError, match=pattern):
        Sm90Params(**values)


def test_params_round_trip_and_kernel_config():
    p = Sm90Params(block_m=128, block_n=112, overlap=True, cluster_m=2, raster="along_n", group=4)
    assert Sm90Params.from_dict(p.to_dict()) == p
    config = p.kernel_config("bfloat16")
    assert config == KernelConfig(128, 112, stages_that_fit(128, 112), True, "bfloat16")
    assert config.name == f"sm90_128x112x128_s{config.stages}_ov_bf16"
    # run-time fields share one build
    assert dataclasses.replace(p, cluster_m=1, raster="along_m", group=1).kernel_config() == config
    with pytest.raises(ValueError, match="unknown Sm90Params parameter"):
        Sm90Params.from_dict({"tile_m": 128})


@pytest.mark.parametrize("block_m,block_n,stages", [(128, 128, 5), (64, 128, 8), (128, 192, 4), (256, 96, 3),
                                                     (128, 112, 6), (64, 208, 5)])
def test_stage_counts_match_the_builds(block_m, block_n, stages):
    # The counts the kernel's static_assert accepted with nvcc (and the smem the kernel asks for).
    assert stages_that_fit(block_m, block_n) == stages
    assert shared_memory_bytes(block_m, block_n, stages) <= SM90_SMEM_BYTES
    assert stages == 8 or shared_memory_bytes(block_m, block_n, stages + 1) > SM90_SMEM_BYTES


def test_register_budget_matches_ptxas():
    # 208 fp32 accumulators per consumer thread built without spills, 224 spilled (nvcc 13.0).
    assert accumulators_per_thread(128, 208) == 208 and accumulators_per_thread(64, 224) == 224
    assert accumulators_per_thread(256, 96) == 192 and accumulators_per_thread(256, 112) == 224
    assert overlap_fits(128, 128) and not overlap_fits(128, 144) and overlap_fits(256, 64)
    assert accumulators_per_thread(128, 128, overlap=True) == 192


def test_check_gives_a_reason_for_every_rejection():
    backend = Sm90Backend()
    ok = GemmProblem(1024, 4608, 7168)
    assert backend.check(ok, Sm90Params(), H200) is None
    cases = [
        (GemmProblem(64, 4608, 7160), Sm90Params(), "K=7160 must be a multiple of 16"),
        (GemmProblem(64, 4604, 7168), Sm90Params(), "N=4604 must be a multiple of 8"),
        (GemmProblem(64, 4608, 7168, 64, 64), Sm90Params(), "only 128x128 weight blocks"),
        (GemmProblem(64, 4608, 7168, out_dtype="float32"), Sm90Params(), "output dtype float32"),
        (ok, Sm90Params(block_n=256, overlap=False), "needs 256 fp32 accumulators"),
        (ok, Sm90Params(block_n=144, overlap=True), "with overlap needs 216"),
        (ok, Sm90Params(block_m=256, block_n=128, overlap=False), "needs 256 fp32 accumulators"),
        (GemmProblem(100, 4608, 7168), Sm90Params(cluster_m=2), "2x1 cluster shares B between two M tiles"),
        (GemmProblem(1024, 128, 7168), Sm90Params(cluster_n=2), "1x2 cluster shares A between two N tiles"),
        (ok, Sm90Params(stages=8), "8 stages of a 128x128 tile need"),
        (ok, "not params", "expected Sm90Params"),
    ]
    for problem, params, pattern in cases:
        reason = backend.check(problem, params, H200)
        assert reason is not None and pattern in reason, (problem, params, reason)
    ampere = dataclasses.replace(H200, name="A100", compute_capability=(8, 0))
    assert "compute capability 9.0" in backend.check(ok, Sm90Params(), ampere)


@pytest.mark.parametrize("m,n,k", RAGGED)
def test_space_and_default_are_valid(m, n, k):
    backend = Sm90Backend()
    problem = GemmProblem(m, n, k)
    space = list(backend.param_space(problem, H200))
    assert space and len(space) == len(set(space))
    reasons = [backend.check(problem, p, H200) for p in space]
    assert all(r is None or "cluster" in r for r in reasons), reasons
    assert sum(r is None for r in reasons) >= len(SEARCH_BLOCK_NS)
    default = backend.default_params(problem, H200)
    assert backend.check(problem, default, H200) is None
    if m <= 32:
        assert default.block_m == 64


def test_default_fills_the_waves_better_than_power_of_two_tiles():
    problem = GemmProblem(1024, 7168, 7168)  # 128x128: 448 tiles = 3.4 waves on 132 SMs
    default = Sm90Backend().default_params(problem, H200)
    chosen = estimated_cost(problem, default.block_m, default.block_n, H200.num_sms)
    assert chosen < estimated_cost(problem, 128, 128, H200.num_sms)
    assert default.block_n % 16 == 0 and default.block_n not in (64, 128, 256)


def test_one_build_per_tile_for_a_whole_sweep():
    """Compile cost: M, N and K are run-time, so the builds of a sweep are the distinct tiles it tries."""
    backend = Sm90Backend()
    configs = set()
    for n, k in [(2112, 7168), (4608, 7168), (7168, 2048), (512, 7168), (36864, 7168)]:
        for m in (1, 16, 64, 128, 512, 1024, 4096, 8192):
            for p in backend.param_space(GemmProblem(m, n, k), H200):
                configs.add(p.kernel_config())
    assert len(configs) == len({(c.block_m, c.block_n, c.swap_ab) for c in configs}) <= 40


def test_generated_source_names_the_instantiation_and_its_wgmma():
    config = KernelConfig(128, 112, 6, False, "float16")
    source = codegen.render_source(config)
    assert "gemm_sm90::Gemm<128, 112, 6, false, __half," in source
    assert "MMA_64x112x32_F32E4M3E4M3_SS_TN" in source
    assert f'"{config.name}"' in source and f"return {codegen.ABI_VERSION};" in source
    spec = codegen.build_spec(config)
    assert spec.family == "sm90" and [name for name, _ in spec.headers] == list(codegen.HEADER_NAMES)
    with pytest.raises(ValueError, match="sm90 KernelConfig"):
        codegen.render_source("sm90_128x112")


def test_cache_keys_differ_per_instantiation(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMM_NVCC", "/bin/true")  # the key needs a version, not a compiler
    monkeypatch.setattr(toolchain, "nvcc_version", lambda nvcc: "13.0.88")
    try:
        tc = toolchain.find_toolchain()
    except BackendUnavailable as exc:
        pytest.skip(f"no CUTLASS headers: {exc}")
    keys = {jit.cache_key(codegen.build_spec(c), tc) for c in
            (KernelConfig(128, 128, 5), KernelConfig(128, 128, 4), KernelConfig(128, 128, 5, False),
             KernelConfig(128, 112, 5), KernelConfig(128, 128, 5, True, "float16"))}
    assert len(keys) == 5


def test_run_options_mirror_the_params():
    options = launcher.run_options(Sm90Params(cluster_m=2, raster="along_n", group=3, splits=4), max_ctas=66)
    assert (options.cluster_m, options.cluster_n, options.raster, options.group, options.max_ctas) == (2, 1, 1, 3, 66)
    assert (options.splits, options.counter_slots, options.counters, options.workspace) == (4, 0, None, None)
    assert ctypes.sizeof(launcher.RunOptions) == 64  # the header's static_assert


def test_struct_and_constants_agree_with_the_header():
    header = "".join(text for _, text in codegen.headers())
    fields = re.search(r"struct RunOptions \{(.*?)\};", header, re.S).group(1)
    declared = re.findall(r"^\s*(int32_t|int64_t|int32_t\*|void\*) (\w+);", fields, re.M)
    ctypes_of = {"int32_t": ctypes.c_int32, "int64_t": ctypes.c_int64, "int32_t*": ctypes.c_void_p,
                 "void*": ctypes.c_void_p}
    assert [(name, ctypes_of[kind]) for kind, name in declared] == list(launcher.RunOptions._fields_)
    assert f"sizeof(RunOptions) == {ctypes.sizeof(launcher.RunOptions)}" in header
    for name, _ in launcher.RunOptions._fields_[6:]:
        offset = getattr(launcher.RunOptions, name).offset
        assert f"offsetof(RunOptions, {name}) == {offset}" in header, name
    assert "kSmemLaunchBytes <= 232448" in header and SM90_SMEM_BYTES == 232448
    assert str(MAX_ACCUMULATORS_PER_THREAD) == "208"


@pytest.mark.nvcc
def test_sm90_compile_only(tmp_path, monkeypatch):
    """A real nvcc build of two instantiations: no spills, the C ABI loads without a GPU, and the
    library reports the stage count and shared memory the Python side computed."""
    monkeypatch.setenv("GEMM_CACHE_DIR", str(tmp_path / "cache"))
    try:
        tc = toolchain.find_toolchain()
    except BackendUnavailable as exc:
        pytest.skip(f"the sm90 compile test needs nvcc and the CUTLASS headers: {exc}")
    for config in (KernelConfig(128, 112, stages_that_fit(128, 112), False), KernelConfig(64, 128, 8, True)):
        built = jit.build(codegen.build_spec(config), tc)
        assert not built.cached and built.spill_bytes == 0, built
        log = (built.path.parent / jit.LOG_NAME).read_text()
        assert "C7510" not in log and "C7514" not in log, "ptxas serialized the wgmma instructions"
        library = launcher.Sm90Library(built.path)
        assert library.config_name == config.name and not library.swap_ab
        assert library.stages == config.stages
        assert library.shared_memory_bytes == config.shared_memory_bytes
        if not torch.cuda.is_available():
            with pytest.raises(Exception, match="cudaGetDevice|CUDA"):
                library.prepare(0)
    assert math.isfinite(built.seconds)


def test_for_tile_takes_overlap_where_the_registers_allow():
    assert Sm90Params.for_tile(128, 128).overlap and not Sm90Params.for_tile(128, 144).overlap
    assert not Sm90Params.for_tile(128, 128, overlap=False).overlap
    assert Sm90Params.for_tile(64, 96, cluster_n=2, group=3) == Sm90Params(64, 96, overlap=True, cluster_n=2, group=3)


def test_default_takes_no_cluster():
    """2x1 clusters measured slower than 1x1 on the H200 (docs/sm90.md): the untuned default does not use them."""
    backend = Sm90Backend()
    for m, n, k in ((4096, 7168, 7168), (8192, 7168, 18432), (1024, 4608, 7168), (64, 2112, 7168)):
        default = backend.default_params(GemmProblem(m, n, k), H200)
        assert (default.cluster_m, default.cluster_n) == (1, 1), default
