"""Fake backends and timers for testing the tuner without a GPU.

A ``FakeParams.behaviour`` decides what its kernel does: compute the right
answer, fail to compile or launch, return a wrong result, hang, crash its
process, break "the CUDA context", or raise an unexpected error. Right answers
come from the fp32 reference, rounded to the output dtype. ``FakeTimer``
reports each kernel's ``FakeParams.us`` as its time, so selection outcomes
are known in advance.

Workers import this module by name (``"fake_backends:MixedBackend"``), so the
tests directory must be on ``sys.path`` (pytest's rootdir insertion does it;
subprocesses get it through PYTHONPATH).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import torch

from gemm.kernels.base import Backend, CompileError, KernelParams, LaunchError
from gemm.kernels.classic_triton import ClassicParams
from gemm.kernels.engine_triton import EngineTritonBackend
from gemm.reference import reference_matmul
from gemm.tuner.timing import Timing

BEHAVIOURS = ("ok", "compile_fail", "launch_fail", "wrong", "bad_row", "nan", "hang", "crash", "cuda_error",
              "unexpected")


#: Params whose "oom_once" kernel has already run out of memory in this process.
_OOM_RAISED: dict = {}


@dataclasses.dataclass(frozen=True)
class FakeParams(KernelParams):
    behaviour: str = "ok"
    us: float = 10.0
    variant: int = 0


def _correct(problem, a, b, a_scale, b_scale) -> torch.Tensor:
    block = (problem.block_n, problem.block_k)
    return reference_matmul(a, b, a_scale, b_scale, block).to(problem.torch_out_dtype)


class FakeBackend(Backend):
    """Runs on the CPU; ``PARAMS`` lists its candidates; behaviour "invalid" is rejected by ``check``."""

    name = "fake"
    params_type = FakeParams
    PARAMS: tuple[FakeParams, ...] = (FakeParams(),)
    CALL_DELAY_S = 0.0

    def unavailable_reason(self, device=None):
        return None

    def param_space(self, problem, arch):
        return list(self.PARAMS)

    def check(self, problem, params, arch):
        if params.behaviour == "invalid":
            return "the fake constraint rejects behaviour 'invalid'"
        return None

    def default_params(self, problem, arch):
        return self.PARAMS[0]

    def build(self, problem, params):
        if params.behaviour == "compile_fail":
            raise CompileError("fake compiler: error: expected ';'")
        delay = self.CALL_DELAY_S

        def run(a, b, a_scale, b_scale):
            if delay:
                time.sleep(delay)
            behaviour = params.behaviour
            if behaviour == "launch_fail":
                raise LaunchError("fake launch: too many resources requested")
            if behaviour == "hang":
                time.sleep(3600)
            if behaviour == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
            if behaviour == "cuda_error":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            if behaviour == "unexpected":
                raise KeyError("a bug in the fake kernel")
            if behaviour == "oom" or (behaviour == "oom_once" and not _OOM_RAISED.get(params)):
                _OOM_RAISED[params] = True
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
            if behaviour == "oom_wrapped":  # a backend that re-raises torch's error as its own
                raise LaunchError("fake_scaled_mm: CUDA out of memory. Tried to allocate 72.00 MiB")
            out = _correct(problem, a, b, a_scale, b_scale)
            if behaviour == "wrong":
                return out * 1.5
            if behaviour == "bad_row":
                out = out.clone()
                out[-1] = 0
            if behaviour == "nan":
                out = out.clone()
                out[0, 0] = float("nan")
            return out

        run.fake_us = params.us
        return run


class MixedBackend(FakeBackend):
    """One candidate per behaviour that ends a sweep-safe way (no "unexpected")."""

    PARAMS = tuple(FakeParams(behaviour=b, us=5.0 + i) for i, b in enumerate(BEHAVIOURS) if b != "unexpected") + (
        FakeParams(behaviour="invalid"),)


class GoodBackend(FakeBackend):
    """Five correct candidates of known speed: variant 2 is fastest (1 us), then 0, 3, 1, 4."""

    PARAMS = tuple(FakeParams("ok", us, variant) for variant, us in enumerate((2.0, 4.0, 1.0, 3.0, 5.0)))


class SlowGoodBackend(GoodBackend):
    """GoodBackend whose calls take a while, so a sweep can be killed midway."""

    CALL_DELAY_S = 0.02


class UnexpectedBackend(FakeBackend):
    PARAMS = (FakeParams("ok", 1.0), FakeParams("unexpected", 2.0))


class OutOfMemoryBackend(FakeBackend):
    """Candidates that run out of GPU memory once (then run), always, and always behind a LaunchError."""

    PARAMS = (FakeParams("oom_once", 1.0), FakeParams("oom", 2.0), FakeParams("oom_wrapped", 3.0))


class FakeTimer:
    """Reports the kernel's ``fake_us`` (exactly, so outcomes are predictable) and one call's output."""

    DELAY_S = 0.0

    def __init__(self, l2_bytes: int = 0) -> None:
        del l2_bytes

    def measure(self, fn, inputs, reps):
        if self.DELAY_S:
            time.sleep(self.DELAY_S)
        return Timing(float(fn.fake_us), 0.0, reps, fn(*inputs))


class SlowFakeTimer(FakeTimer):
    DELAY_S = 0.1


class SafeMixedBackend(FakeBackend):
    """Failures that cannot take a process down, for in-process runs: one candidate each."""

    PARAMS = tuple(FakeParams(behaviour=b, us=5.0 + i)
                   for i, b in enumerate(("ok", "compile_fail", "launch_fail", "wrong", "nan", "invalid")))


class FakeHangBackend(FakeBackend):
    """A correct candidate and one that hangs (only for worker pools, which can kill it)."""

    PARAMS = (FakeParams("ok", 2.0), FakeParams("hang", 1.0))


class FakeEngineBackend(EngineTritonBackend):
    """The engines' kernel's params and equivalent spellings (``canonical``), with a three-config space and
    known times: ``ENGINE_TIMES[(m, block_m, block_n)]`` (else 10 us), results from the reference."""

    name = "fake_engine"
    launch = "vllm"
    SPACE = (ClassicParams(16, 32, 128, 1, 4, 2), ClassicParams(16, 64, 128, 1, 4, 2),
             ClassicParams(32, 64, 128, 8, 4, 3))
    # At M=16 the baseline's entry (32x64) is 1% faster than 16x32, a tie that selection resolves towards the
    # config chosen at M=1: the comparison must then put the baseline's entry back.
    ENGINE_TIMES = {(1, 16, 32): 5.0, (1, 16, 64): 6.0,
                    (16, 16, 32): 5.0, (16, 32, 64): 4.95, (16, 16, 64): 7.0,
                    (64, 16, 32): 9.0, (64, 16, 64): 8.0, (64, 32, 64): 12.0, (64, 32, 32): 20.0}

    def unavailable_reason(self, device=None):
        return None

    def param_space(self, problem, arch):
        return [self.canonical(problem, p) for p in self.SPACE]

    def build(self, problem, params):
        def run(a, b, a_scale, b_scale):
            return _correct(problem, a, b, a_scale, b_scale)

        run.fake_us = self.ENGINE_TIMES.get((problem.m, params.block_m, params.block_n), 10.0)
        return run
