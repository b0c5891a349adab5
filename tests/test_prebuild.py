"""Building the C++ kernels of a sweep's candidates ahead of it: every backend nvcc compiles, each library once."""

from __future__ import annotations

import pytest

import gemm.kernels.cutlass.aot as cutlass_aot
import gemm.kernels.sm90.aot as sm90_aot
from gemm.arch import get_arch
from gemm.kernels.base import CompileError
from gemm.kernels.prebuild import prebuild
from gemm.kernels.sm90.params import Sm90Params
from gemm.tuner.presets import LayerShape
from gemm.tuner.search.plan import SweepPlan, SweepSettings
from gemm.tuner.search.prebuild import needs_prebuild, prebuild_kernels
from gemm.tuner.search.space import resolve_backend


def _plan(backends) -> SweepPlan:
    settings = SweepSettings(shapes=(LayerShape("q_a", 2112, 7168),), m_grid=(16, 1024), backends=backends,
                             timer="gemm.tuner.timing:CudaGraphTimer")
    return SweepPlan.build(settings, get_arch("H200"))


@pytest.fixture
def builders(monkeypatch):
    """The two ahead-of-time builders replaced by recorders of what they were asked to build."""
    calls: dict[str, list] = {}

    def recorder(name):
        def build_kernels(params, progress=None, out_dtype="bfloat16"):
            calls[name] = (list(params), out_dtype)
            return list(params)
        return build_kernels

    monkeypatch.setattr(cutlass_aot, "build_kernels", recorder("cutlass"))
    monkeypatch.setattr(sm90_aot, "build_kernels", recorder("sm90"))
    return calls


def test_a_plan_prebuilds_the_kernels_of_every_compiled_backend_it_sweeps(builders):
    plan = _plan(("cutlass", "sm90", "cublas"))
    assert needs_prebuild(plan)
    lines = []
    prebuild_kernels(plan, lines.append)
    assert set(builders) == {"cutlass", "sm90"}
    for name in ("cutlass", "sm90"):
        backend = resolve_backend(name)
        expected = {backend.params_from_dict(c.params) for spaces in plan.spaces.values() for s in spaces
                    if s.backend == name for c in s.candidates}
        asked, out_dtype = builders[name]
        assert expected and set(asked) == expected and len(asked) == len(expected) and out_dtype == "bfloat16"
    # split-K candidates of the few-tile point are among the Hopper kernel's, sharing libraries with the rest
    sm90_params = builders["sm90"][0]
    assert any(p.splits > 1 for p in sm90_params)
    assert len({p.kernel_config("bfloat16") for p in sm90_params}) < len(sm90_params)
    assert any("'sm90' kernels ready" in line for line in lines) and any("CUTLASS kernels ready" in line
                                                                         for line in lines)


def test_a_plan_without_compiled_backends_builds_nothing(builders):
    plan = _plan(("cublas",))
    assert not needs_prebuild(plan)
    prebuild_kernels(plan, lambda line: None)
    assert builders == {}


def test_prebuild_reports_failures_instead_of_raising(monkeypatch):
    def failing(params, progress=None, out_dtype="bfloat16"):
        raise CompileError("1 of 1 Hopper kernels failed to build:\n--- log")

    monkeypatch.setattr(sm90_aot, "build_kernels", failing)
    lines = []
    prebuild("sm90", [Sm90Params()], "bfloat16", lines.append)
    assert lines[-1].startswith("gemm: some 'sm90' kernels could not be built (1 of 1 Hopper kernels failed")
    prebuild("cublas", [Sm90Params()], "bfloat16", lines.append)  # not compiled: nothing to do
    prebuild("sm90", [], "bfloat16", lines.append)
    assert len(lines) == 2


def test_sm90_build_kernels_builds_each_library_once(monkeypatch):
    built = []
    monkeypatch.setattr(sm90_aot.jit, "build_many", lambda specs, jobs=None, progress=None: built.extend(specs) or [])
    sm90_aot.build_kernels([Sm90Params(), Sm90Params(cluster_m=2), Sm90Params(splits=3),
                            Sm90Params(block_n=96)], out_dtype="float16")
    assert len(built) == 2 and all("fp16" in spec.name or "f16" in spec.name for spec in built)
