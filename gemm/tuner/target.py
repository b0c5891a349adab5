"""Where a sweep measures: the device, its spec and name, its timer, and the backends that can run there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from gemm.arch import ArchSpec
from gemm.tuner.settings import SetupError
from gemm.tuner.timing import DEFAULT_CPU_TIMER, DEFAULT_GPU_TIMER, timer_class


@dataclass(frozen=True)
class Target:
    """Where the sweep runs: the device's spec, its config-file name, the tensors' device, the timer."""

    arch: ArchSpec
    device_name: str
    device: str
    timer: str


def timer_for(timer: str | None, gpu: bool) -> str:
    """``timer`` when one is named, else the default of a GPU (CUDA graphs) or of the CPU interpreter.

    A named timer is resolved now, so a bad one is a SetupError before any work starts.
    """
    if timer:
        try:
            timer_class(timer)
        except ValueError as exc:
            raise SetupError(f"--timer: {exc}") from None
        return timer
    return DEFAULT_GPU_TIMER if gpu else DEFAULT_CPU_TIMER


def interpreter_target(timer: str | None = None) -> Target:
    """The CPU interpreter's stand-in device (``--interpret``)."""
    from gemm.arch import interpreter_arch

    arch = interpreter_arch()
    return Target(arch, arch.config_device_name, "cpu", timer_for(timer, gpu=False))


def local_target(interpret: bool, timer: str | None = None) -> Target:
    """This machine's first GPU, or with ``interpret`` the interpreter; SetupError when there is no GPU."""
    if interpret:
        return interpreter_target(timer)
    import torch

    from gemm.arch import detect_arch

    if not torch.cuda.is_available():
        raise SetupError(
            "no CUDA GPU is visible on this machine, so there is nothing to tune.\n"
            "  - run `gemm tune` on a machine with an NVIDIA Hopper GPU (H100/H200/H800/H20), or\n"
            "  - run `gemm tune --interpret` for a tiny sweep on the CPU through the Triton interpreter "
            "(it checks the tool, its numbers say nothing about a GPU).")
    arch = detect_arch()
    return Target(arch, arch.config_device_name, "cuda", timer_for(timer, gpu=True))


def usable_of(wanted: Iterable[str], requested: bool, reason_of: Callable[[str], str | None],
              say: Callable[[str], None], device: str | None = None) -> tuple[str, ...]:
    """The backends of ``wanted`` that can run (``reason_of(ref)`` None), on this machine or the cluster's
    ``device``. One that cannot is a SetupError when ``requested``, else skipped with a note to ``say``."""
    where = f"on the cluster's {device}" if device else "here"
    usable = []
    for ref in wanted:
        reason = reason_of(ref)
        if reason is None:
            usable.append(ref)
        elif requested:
            raise SetupError(f"--backends: {ref!r} cannot run {where}: {reason}")
        else:
            say(f"gemm tune: skipping backend {ref!r}{f' on {device}' if device else ''}: {reason}")
    if not usable:
        raise SetupError(f"no usable backend {where if device else 'on this machine'}")
    return tuple(usable)


def usable_backends(requested: tuple[str, ...] | None, interpret: bool,
                    say: Callable[[str], None]) -> tuple[str, ...]:
    """Backends to sweep here: the ``requested`` ones (each must be usable), else every usable registered one
    (only Triton under the interpreter). Skipped backends are reported through ``say``."""
    from gemm.kernels import default_backend_names
    from gemm.tuner.search.space import resolve_backend

    def reason_of(ref: str) -> str | None:
        try:
            return resolve_backend(ref).unavailable_reason()
        except (ImportError, ValueError) as exc:
            return str(exc)

    wanted = requested or (("triton",) if interpret else tuple(default_backend_names()))
    return usable_of(wanted, bool(requested), reason_of, say)
