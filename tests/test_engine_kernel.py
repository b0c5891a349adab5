"""The engines' Triton kernel (``vllm_triton``, ``sglang_triton``): its key space against the files engines ship,
and (under TRITON_INTERPRET=1) its results against the reference with configs taken from those files."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
import torch

from gemm.arch import get_arch
from gemm.configs.engine_files import read_engine_file
from gemm.kernels import get_backend
from gemm.kernels.base import UnsupportedProblem
from gemm.kernels.classic_triton import ClassicParams, engine_launch
from gemm.kernels.engine_triton import ENGINE_SPACE
from gemm.problem import GemmProblem
from gemm.quant import per_token_group_quant_fp8, random_problem_inputs
from gemm.reference import reference_matmul, relative_error
from interpreter_support import requires_interpreter

DATA = Path(__file__).parent / "data" / "engine_files"
SHIPPED_FILES = sorted(DATA.rglob("*.json"))
BACKENDS = ("vllm_triton", "sglang_triton")
interpreted = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="CPU interpreter tests")


def params_of(config: dict) -> ClassicParams:
    return ClassicParams(config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"], config["BLOCK_SIZE_K"],
                         config["GROUP_SIZE_M"], config["num_warps"], config["num_stages"])


def shipped_configs():
    for path in SHIPPED_FILES:
        table = read_engine_file(path)
        for m, config in table.entries:
            yield table, m, config


def test_the_test_data_holds_what_engines_ship():
    assert len(SHIPPED_FILES) >= 5
    configs = [config for _, _, config in shipped_configs()]
    assert {c["BLOCK_SIZE_K"] for c in configs} == {64, 128}
    assert {c["num_warps"] for c in configs} == {4, 8}
    assert max(c["BLOCK_SIZE_M"] for c in configs) == 256


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_key_space_covers_every_shipped_config(backend_name):
    backend = get_backend(backend_name)
    space = set(itertools.product(*ENGINE_SPACE.values()))
    for table, m, config in shipped_configs():
        params = params_of(config)
        assert tuple(params.to_dict().values()) in space, (table.path.name, m, config)
        device = table.path.name.split("device_name=")[1].split(",")[0]
        arch = get_arch(device)
        problem = GemmProblem(m, table.n, table.k)
        assert backend.check(problem, params, arch) is None, (table.path.name, m, config)
        proposed = {p for p in backend.param_space(problem, arch)}
        assert backend.canonical(problem, params) in proposed, (table.path.name, m, config)


def test_canonical_groups_only_where_the_launch_is_the_same():
    backend = get_backend("vllm_triton")
    p = ClassicParams(64, 64, 128, 16, 4, 3)
    # M=100 gives 2 tile rows: every group >= 2 orders tiles alike, spelled as the largest group.
    assert backend.canonical(GemmProblem(100, 512, 512), p).group_m == 64
    assert backend.canonical(GemmProblem(100, 512, 512), ClassicParams(64, 64, 128, 1, 4, 3)).group_m == 1
    # 32 tile rows: a group of 16 splits them; it is its own config.
    assert backend.canonical(GemmProblem(2048, 512, 512), p).group_m == 16
    # More tile rows than the space's largest group: nothing is renamed.
    assert backend.canonical(GemmProblem(8192, 512, 512), ClassicParams(64, 64, 128, 128, 4, 3)).group_m == 128
    problem = GemmProblem(1, 2112, 7168)
    space = list(backend.param_space(problem, get_arch("H200")))
    assert {q.group_m for q in space} == {64}  # at M = 1 every group is the same launch
    assert len(set(space)) == len(space) // len(ENGINE_SPACE["group_m"])


def test_check_names_what_the_engines_kernel_cannot_run():
    backend, arch = get_backend("sglang_triton"), get_arch("H200")
    problem = GemmProblem(16, 512, 512)
    assert "shared memory" in backend.check(problem, ClassicParams(256, 256, 128, 8, 8, 5), arch)
    assert "scale block" in backend.check(problem, ClassicParams(64, 64, 256, 8, 4, 3), arch)
    assert "powers of two" in backend.check(problem, ClassicParams(48, 64, 128, 8, 4, 3), arch)
    with pytest.raises(UnsupportedProblem, match="num_warps"):
        backend.build(problem, ClassicParams(64, 64, 128, 8, 3, 3))
    assert backend.default_params(problem, arch) == ClassicParams(64, 128, 128, 32, 4, 3)
    assert get_backend("vllm_triton").default_params(problem, arch).num_stages == 2


def data_file(*parts: str) -> Path:
    """The one test-data file whose name holds every part."""
    (path,) = [p for p in SHIPPED_FILES if all(part in p.name for part in parts)]
    return path


def shipped(m: int, *parts: str) -> ClassicParams:
    return params_of(dict(read_engine_file(data_file(*parts)).entries)[m])


# Shapes small enough to interpret, configs as shipped: ragged M and N, K not a multiple of the tile,
# a partial last group of tile rows, BLOCK_SIZE_K = 64 (two steps per scale column).
CASES = [
    (1, 192, 256, shipped(1, "N=7168,K=2048,device_name=NVIDIA_H200", "[128,128]")),
    (40, 200, 384, ClassicParams(16, 64, 128, 2, 4, 3)),
    (33, 160, 320, shipped(128, "N=24576,K=1536")),
    (70, 256, 512, shipped(48, "N=7168,K=128,device_name=NVIDIA_H20")),
    (130, 96, 256, shipped(1024, "N=2112,K=7168,device_name=NVIDIA_H100")),
]


@interpreted
@requires_interpreter
@pytest.mark.parametrize("launch", ["vllm", "sglang"])
@pytest.mark.parametrize("m,n,k,params", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}-{c[3].short()}" for c in CASES])
def test_kernel_matches_reference(m, n, k, params, launch):
    a, b, sa, sb = random_problem_inputs(m, n, k, seed=m + n + k)
    fn = get_backend(f"{launch}_triton").build(GemmProblem(m, n, k), params)
    out = fn(a, b, sa, sb)
    assert out.shape == (m, n) and out.dtype == torch.bfloat16
    assert relative_error(out, reference_matmul(a, b, sa, sb)) < 1e-2


@interpreted
@requires_interpreter
def test_kernel_takes_scales_in_the_strides_given_and_other_output_dtypes():
    torch.manual_seed(3)
    x = torch.randn(20, 384)
    a, sa_mn = per_token_group_quant_fp8(x, 128, scale_layout="mn_major")
    _, b, _, sb = random_problem_inputs(20, 128, 384, seed=5)
    assert sa_mn.stride(0) == 1
    ref = reference_matmul(a, b, sa_mn.contiguous(), sb)
    for launch in ("vllm", "sglang"):
        out = engine_launch(a, b, sa_mn, sb, ClassicParams(16, 64, 64, 8, 4, 2), launch, torch.float32)
        assert out.dtype == torch.float32 and relative_error(out, ref) < 1e-2


def test_launch_names_are_checked():
    with pytest.raises(ValueError, match="launch"):
        engine_launch(*random_problem_inputs(1, 128, 128), ClassicParams(), "trt")


def test_the_engine_files_parse_with_their_keys_in_order():
    path = data_file("N=7168,K=2048,device_name=NVIDIA_H200", "[128, 128]")
    keys = [int(k) for k in json.loads(path.read_text())]
    assert [m for m, _ in read_engine_file(path).entries] == keys


def test_the_carried_baselines_are_the_engines_h200_files_of_the_deepseek_shapes():
    from gemm.configs import validate_config_file
    from gemm.configs.engine_files import read_engine_files, shipped_engine_roots
    from gemm.tuner.presets import preset_shapes

    deepseek = {(s.n, s.k) for tp in (1, 4, 8) for s in preset_shapes(f"deepseek-v3-tp{tp}")}
    roots = {root.name: root for root in shipped_engine_roots()}
    assert sorted(roots) == ["sglang-0.5.23", "vllm-0.33.0"]
    for name, count in (("vllm-0.33.0", 15), ("sglang-0.5.23", 12)):
        tables = read_engine_files(roots[name], "NVIDIA_H200")
        assert len(tables) == count and set(tables) <= deepseek
        for table in tables.values():
            assert validate_config_file(table.path) == []
            assert ("[128, 128]" in table.path.name) == name.startswith("sglang")
