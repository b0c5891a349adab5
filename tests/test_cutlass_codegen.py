"""CPU tests of what the CUTLASS backend generates and offers: params, the C++ source and the ABI it
shares with the launcher, the backend's constraints, search space and defaults (per CUTLASS
release), and the launcher's tensor preparation.

Nothing here needs nvcc or a GPU; building is in test_cutlass_toolchain.py (stand-in compiler)
and test_cutlass_compile.py (real nvcc).
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from gemm.arch import get_arch
from gemm.kernels import get_backend
from gemm.kernels.base import BackendUnavailable, UnsupportedProblem
from gemm.kernels.cutlass import backend as backend_module, codegen, launcher, support
from gemm.kernels.nvcc import toolchain
from gemm.kernels.nvcc.library import tma_ready
from gemm.kernels.cutlass.backend import CutlassBackend
from gemm.kernels.cutlass.config import (DECOMPOSITION_CODES, RASTER_CODES, REDUCTION_CODES, CutlassParams,
                                         KernelConfig)
from gemm.problem import GemmProblem

H100 = get_arch("H100")
DEEPSEEK_SHAPES = [(2112, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304),
                   (576, 7168), (36864, 7168), (7168, 18432)]
M_VALUES = [1, 3, 16, 64, 100, 128, 512, 1024, 4096]
WHEEL_CUTLASS = (4, 2, 0)  # the nvidia-cutlass wheel: ping-pong 64x128 builds, 256x128 spills
NEWER_CUTLASS = (4, 5, 0)  # 256x128 builds without spills, 64-row tiles do not compile


@pytest.fixture(autouse=True)
def installed_cutlass(monkeypatch):
    """Pins the CUTLASS version the backend sees (default: the wheel's), whatever this machine has.

    Returns a function that installs another version (or None: no headers).
    """
    def install(version):
        monkeypatch.setattr(toolchain, "cutlass_version_or_none", lambda: version)
    install(WHEEL_CUTLASS)
    return install


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


def test_kernel_config_names_are_distinct_and_file_safe(installed_cutlass):
    configs = set()
    for version in (WHEEL_CUTLASS, NEWER_CUTLASS):
        installed_cutlass(version)
        configs |= {p.kernel_config(dtype) for n, k in DEEPSEEK_SHAPES for m in M_VALUES
                    for p in CutlassBackend().param_space(GemmProblem(m, n, k), H100)
                    for dtype in ("bfloat16", "float16")}
    assert {c.tile_m for c in configs} == {64, 128, 256}
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


@pytest.mark.parametrize("version", [WHEEL_CUTLASS, NEWER_CUTLASS, None])
def test_param_space_is_valid_distinct_and_sensible(installed_cutlass, version):
    installed_cutlass(version)
    be = CutlassBackend()
    pingpong_builds = version is None or version < (4, 3, 0)
    wide_offered = version is not None and version >= (4, 3, 0)
    for n, k in DEEPSEEK_SHAPES:
        for m in M_VALUES:
            problem = GemmProblem(m, n, k)
            space = list(be.param_space(problem, H100))
            assert len(space) == len(set(space)) and 10 <= len(space) <= 80, (problem, len(space))
            for p in space:
                assert be.check(problem, p, H100) is None, (problem, p)
                assert p.reduction == "deterministic"
            kinds = {(p.schedule, p.tile_m, p.scheduler, p.decomposition) for p in space}
            assert ("cooperative", 128, "persistent", "data_parallel") in kinds
            assert ("cooperative", 128, "streamk", "streamk") in kinds
            assert (("pingpong", 64, "persistent", "data_parallel") in kinds) == (m <= 256 and pingpong_builds)
            wide = {kind for kind in kinds if kind[1] == 256}
            assert bool(wide) == (m >= 512 and wide_offered)
            if wide:
                assert wide == {("cooperative", 256, "persistent", "data_parallel"),
                                ("cooperative", 256, "streamk", "streamk")}
            assert any(p.sfa_major == "mn" for p in space) == (m >= 512)
            assert {(p.cluster_m, p.cluster_n) for p in space} == {(1, 1), (2, 1), (1, 2)}


def test_wide_tiles_are_offered_from_cutlass_4_3_at_m_512_and_up(installed_cutlass):
    for version, offered in [((4, 2, 9), False), ((4, 3, 0), True), (NEWER_CUTLASS, True), (None, False)]:
        installed_cutlass(version)
        tiles = {p.tile_m for p in CutlassBackend().param_space(GemmProblem(4096, 7168, 2048), H100)}
        assert (256 in tiles) == offered, version
    installed_cutlass(NEWER_CUTLASS)
    for m, offered in [(64, False), (256, False), (511, False), (512, True), (8192, True)]:
        tiles = {p.tile_m for p in CutlassBackend().param_space(GemmProblem(m, 7168, 2048), H100)}
        assert (256 in tiles) == offered, m
    # Asked for explicitly, the wide tile stays valid with 4.2 (slow, not wrong), for comparisons.
    installed_cutlass(WHEEL_CUTLASS)
    assert CutlassBackend().check(GemmProblem(4096, 7168, 2048), P(tile_m=256), H100) is None


@pytest.mark.parametrize("version, refused", [(WHEEL_CUTLASS, False), ((4, 3, 0), True), (NEWER_CUTLASS, True),
                                              (None, False)])
def test_narrow_tiles_are_refused_where_cutlass_cannot_compile_them(installed_cutlass, version, refused):
    installed_cutlass(version)
    be = CutlassBackend()
    reason = be.check(PROBLEM, P(schedule="pingpong", tile_m=64), H100)
    if refused:
        assert reason is not None and f"CUTLASS {support.version_string(version)} cannot compile 64-row" in reason
    else:
        assert reason is None
    for m in (1, 16, 128):
        problem = GemmProblem(m, 576, 7168)
        default = be.default_params(problem, H100)
        assert be.check(problem, default, H100) is None
        assert (default.schedule, default.tile_m) == (("cooperative", 128) if refused else ("pingpong", 64))


def test_support_version_ranges(monkeypatch):
    assert support.narrow_tiles_build((4, 2, 1)) and not support.narrow_tiles_build((4, 3, 0))
    assert not support.narrow_tiles_build((5, 0, 0)) and support.narrow_tiles_build(None)
    monkeypatch.setattr(support, "NARROW_TILE_BROKEN_CUTLASS", ((4, 3, 0), (4, 6, 0)))
    assert not support.narrow_tiles_build((4, 5, 9)) and support.narrow_tiles_build((4, 6, 0))
    assert "4.3.0 up to 4.6.0" in support.unbuildable_reason(64, (4, 4, 0))
    assert support.unbuildable_reason(128, (4, 4, 0)) is None and support.unbuildable_reason(256, (4, 4, 0)) is None
    assert support.wide_tile_offered((4, 3, 0)) and not support.wide_tile_offered((4, 2, 0))
    assert not support.wide_tile_offered(None)


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
    assert backend_module.stage_bytes(P(tile_m=256)) == 50304 + 16


@pytest.mark.parametrize("stages, fits", [(2, True), (4, True), (5, False)])
def test_wide_tile_stage_limit(stages, fits):
    """256x128 stages take 50 KB each: 4 fit beside the epilogue (what stages=0 picks with 4.5), 5 do not."""
    reason = CutlassBackend().check(GemmProblem(4096, 7168, 2048), P(tile_m=256, stages=stages), H100)
    assert (reason is None) == fits, reason


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
    assert tma_ready(aligned).data_ptr() == aligned.data_ptr()
    for bad in (buffer[:, 1:65], torch.randn(8, 72).to(torch.float8_e4m3fn)[:, :64]):
        fixed = tma_ready(bad)
        assert fixed.data_ptr() % 16 == 0 and fixed.stride(0) % 16 == 0
        assert torch.equal(fixed.float(), bad.float())
