"""What every kernel backend provides, and the errors the tuner turns into statuses.

A backend turns a ``GemmProblem`` plus a typed, frozen params dataclass into a
callable ``fn(a, b, a_scale, b_scale) -> out`` (shapes and dtypes as in
``gemm.problem``). The tuner enumerates ``param_space``, filters with
``check`` (a rejection reason instead of an exception), builds, verifies
and times; the op calls ``build`` with the params of a tuned config.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar, Iterable

import torch

from gemm.arch import ArchSpec
from gemm.problem import GemmProblem

GemmFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class BackendError(RuntimeError):
    """Base of the errors a backend raises on purpose."""


class UnsupportedProblem(BackendError):
    """The params cannot run this problem (the tuner's INVALID)."""


class CompileError(BackendError):
    """Building the kernel failed (COMPILE_FAILED); the message carries the compiler log."""


class LaunchError(BackendError):
    """The kernel was built but refused to launch or failed while running (LAUNCH_FAILED)."""


class BackendUnavailable(BackendError):
    """The backend cannot run on this machine (no GPU, no nvcc, no headers...)."""


@dataclasses.dataclass(frozen=True)
class KernelParams:
    """Base of every backend's params: a frozen dataclass of JSON scalars."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build params from a config entry; unknown keys and bad values are errors naming the key."""
        if not isinstance(values, dict):
            raise ValueError(f"{cls.__name__} params must be a JSON object, got {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} parameter(s) {unknown}; expected a subset of {sorted(fields)}")
        kwargs = {}
        for name, value in values.items():
            expected = type(getattr(cls(), name)) if _has_default(fields[name]) else None
            if expected is bool and not isinstance(value, bool):
                raise ValueError(f"{cls.__name__}.{name} must be true/false, got {value!r}")
            if expected is int and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{cls.__name__}.{name} must be an integer, got {value!r}")
            if expected is str and not isinstance(value, str):
                raise ValueError(f"{cls.__name__}.{name} must be a string, got {value!r}")
            kwargs[name] = value
        return cls(**kwargs)

    def short(self) -> str:
        """Compact one-line description for tables and logs."""
        return ",".join(f"{k}={v}" for k, v in self.to_dict().items())


def require_choice(owner: str, name: str, value, choices) -> None:
    """ValueError naming ``owner.name`` unless ``value`` is one of ``choices`` (a bool never counts as 0/1)."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {list(choices)}, got {value!r}")


def require_int(owner: str, name: str, value, minimum: int) -> None:
    """ValueError naming ``owner.name`` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


def _has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


class Backend(abc.ABC):
    """A family of kernels for the block-scaled FP8 GEMM."""

    name: ClassVar[str]
    params_type: ClassVar[type[KernelParams]]

    @abc.abstractmethod
    def unavailable_reason(self, device: torch.device | None = None) -> str | None:
        """None when the backend can run on ``device`` (default: current CUDA device), else why not."""

    def available(self, device: torch.device | None = None) -> bool:
        return self.unavailable_reason(device) is None

    @abc.abstractmethod
    def param_space(self, problem: GemmProblem, arch: ArchSpec) -> Iterable[KernelParams]:
        """Every candidate worth considering for ``problem`` on ``arch`` (before ``check``)."""

    @abc.abstractmethod
    def check(self, problem: GemmProblem, params: KernelParams, arch: ArchSpec) -> str | None:
        """None if ``params`` can run ``problem`` on ``arch``, else the reason it cannot."""

    @abc.abstractmethod
    def default_params(self, problem: GemmProblem, arch: ArchSpec) -> KernelParams:
        """A reasonable untuned choice (documented heuristic)."""

    @abc.abstractmethod
    def build(self, problem: GemmProblem, params: KernelParams) -> GemmFn:
        """A callable computing the GEMM for inputs of ``problem``'s shape.

        Raises UnsupportedProblem, CompileError or LaunchError (nothing else on purpose).
        """

    def params_from_dict(self, values: dict[str, Any]) -> KernelParams:
        return self.params_type.from_dict(values)

    def canonical(self, problem: GemmProblem, params: KernelParams) -> KernelParams:
        """The one spelling of ``params`` among those that run identically on ``problem`` (the tuner times
        one of them); ``params`` itself unless the backend knows such equivalences."""
        return params
