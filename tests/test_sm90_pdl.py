"""CPU tests of the Hopper kernel's programmatic dependent launch (``Sm90Params.dependent_launch``): the
run-time field, the launcher's options, the C header's layout and launch code. Nothing here needs a GPU;
the GPU tests are ``tests/gpu/test_sm90_pdl_gpu.py``."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest

from gemm.arch import get_arch
from gemm.kernels.sm90 import codegen, launcher
from gemm.kernels.sm90.backend import Sm90Backend
from gemm.kernels.sm90.params import Sm90Params
from gemm.problem import GemmProblem

H200 = get_arch("H200")


def test_dependent_launch_is_a_run_time_field():
    p = Sm90Params(block_m=64, block_n=96, dependent_launch=True)
    assert p.short().endswith(",pdl") and ",pdl" not in Sm90Params().short()
    assert Sm90Params.from_dict(p.to_dict()) == p and p.to_dict()["dependent_launch"] is True
    assert Sm90Params.from_dict({"block_m": 64}).dependent_launch is False  # entries written before it
    assert dataclasses.replace(p, dependent_launch=False).kernel_config() == p.kernel_config()
    with pytest.raises(ValueError, match=r"Sm90Params.dependent_launch must be true/false, got 1"):
        Sm90Params(dependent_launch=1)


def test_run_options_carry_the_dependent_launch():
    assert ctypes.sizeof(launcher.RunOptions) == 64 and launcher.RunOptions.dependent_launch.offset == 60
    assert launcher.run_options(Sm90Params(dependent_launch=True)).dependent_launch == 1
    assert launcher.run_options(Sm90Params()).dependent_launch == 0


def test_header_launches_dependently_and_waits_before_reading():
    headers = dict(codegen.headers())
    host, kernel = headers["fp8_gemm.cuh"], headers["fp8_gemm_kernel.cuh"]
    assert "offsetof(RunOptions, dependent_launch) == 60" in host
    assert "cudaLaunchAttributeProgrammaticStreamSerialization" in host
    # the wait comes before the producer's first load, and both instructions only in a dependent launch
    assert kernel.index("griddepcontrol.wait") < kernel.index("SM90_TMA_LOAD_2D::copy")
    assert "if (args.dependent_launch) asm volatile(\"griddepcontrol.wait;\"" in kernel
    assert "if (args.dependent_launch && threadIdx.x == 0) asm volatile(\"griddepcontrol.launch_dependents;\"" in kernel
    assert codegen.ABI_VERSION >= 5


def test_space_and_default_leave_it_off():
    backend = Sm90Backend()
    for m, n, k in [(1, 2112, 7168), (1024, 512, 7168), (4096, 7168, 7168)]:
        problem = GemmProblem(m, n, k)
        assert not any(p.dependent_launch for p in backend.param_space(problem, H200))
        assert not backend.default_params(problem, H200).dependent_launch
        assert backend.check(problem, Sm90Params(dependent_launch=True), H200) is None
