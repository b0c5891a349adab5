"""Loading an nvcc-built kernel library with ctypes, and what every launch from torch needs.

Every C++ backend's library exports, with its own symbol prefix:
``int abi_version()``, ``const char* config_name()``, ``const char* last_error()``,
``int prepare()`` (per-device setup, once, outside graph capture),
``int shared_memory_bytes()`` and ``int stages()``; its other functions are
bound by the backend. Every ``int`` result of an operation is a status code:
0 ok, 1 unsupported (the build cannot run this problem: ``UnsupportedProblem``),
anything else ``LaunchError``.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import ClassVar

import torch

from gemm.kernels.base import LaunchError, UnsupportedProblem
from gemm.problem import GemmInputError, GemmProblem

OK, UNSUPPORTED, BAD_ARGUMENT, CUDA_ERROR, INTERNAL = 0, 1, 2, 3, 4
STATUS_NAMES = {UNSUPPORTED: "unsupported", BAD_ARGUMENT: "bad argument", CUDA_ERROR: "CUDA error",
                INTERNAL: "internal error"}


class NativeLibrary:
    """One loaded library; subclasses set the class constants and bind their own functions in ``bind``."""

    symbol_prefix: ClassVar[str]
    abi_version: ClassVar[int]
    title: ClassVar[str]  # e.g. "CUTLASS kernel library", for messages

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise LaunchError(f"cannot load {self.title} {self.path}: {exc}") from exc
        try:
            self._abi_version = self.function("abi_version", ctypes.c_int, [])
            self._config_name = self.function("config_name", ctypes.c_char_p, [])
            self._last_error = self.function("last_error", ctypes.c_char_p, [])
            self._prepare = self.function("prepare", ctypes.c_int, [])
            self._smem = self.function("shared_memory_bytes", ctypes.c_int, [])
            self._stages = self.function("stages", ctypes.c_int, [])
            self.bind()
        except AttributeError as exc:
            raise LaunchError(f"{self.path} is not a {self.title} of this version: {exc}") from exc
        version = self._abi_version()
        if version != self.abi_version:
            raise LaunchError(f"{self.path} has ABI version {version}, expected {self.abi_version}; rebuild it")
        self.config_name = self._config_name().decode()
        self._prepared: set[int] = set()
        self._guard = threading.Lock()

    def function(self, name: str, restype, argtypes: list):
        """The exported ``<prefix><name>`` with its ctypes signature (AttributeError if missing)."""
        fn = getattr(self._lib, self.symbol_prefix + name)
        fn.restype = restype
        fn.argtypes = argtypes
        return fn

    def bind(self) -> None:
        """Bind the backend's own functions (called from ``__init__``)."""

    def last_error(self) -> str:
        message = self._last_error()
        return message.decode(errors="replace") if message else ""

    def raise_for(self, status: int, what: str) -> None:
        """Turn a non-zero status into UnsupportedProblem or LaunchError, with the library's message."""
        message = f"{self.config_name}: {what} failed ({STATUS_NAMES.get(status, status)}): {self.last_error()}"
        if status == UNSUPPORTED:
            raise UnsupportedProblem(message)
        raise LaunchError(message)

    @property
    def shared_memory_bytes(self) -> int:
        return self._smem()

    @property
    def stages(self) -> int:
        return self._stages()

    def prepare(self, device_index: int) -> None:
        """Per-device setup (shared-memory opt-in, SM count) once, outside any graph capture."""
        with self._guard:
            if device_index in self._prepared:
                return
            with torch.cuda.device(device_index):
                status = self._prepare()
            if status != OK:
                self.raise_for(status, "prepare")
            self._prepared.add(device_index)


def tma_ready(t: torch.Tensor) -> torch.Tensor:
    """``t`` if its base is 16-byte aligned and its row pitch a multiple of 16 bytes, else a contiguous copy."""
    if t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0 and t.stride(1) == 1:
        return t
    copy = t.contiguous()
    if copy.data_ptr() % 16:
        copy = copy.clone()
    return copy


def device_index(device: torch.device | int | str | None, what: str = "these kernels") -> int:
    """The CUDA device index of ``device`` (default: the current device); UnsupportedProblem for a CPU device."""
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise UnsupportedProblem(f"{what} run on CUDA devices, got {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


def check_call(problem: GemmProblem, a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor,
               b_scale: torch.Tensor) -> None:
    """GemmInputError unless the tensors have ``problem``'s shapes and b, b_scale are contiguous (what a
    kernel built for ``problem`` can be called with; the op has validated everything else)."""
    shapes = ((problem.m, problem.k), (problem.n, problem.k), (problem.m, problem.k_blocks),
              (problem.n_blocks, problem.k_blocks))
    got = (tuple(a.shape), tuple(b.shape), tuple(a_scale.shape), tuple(b_scale.shape))
    if got != shapes:
        raise GemmInputError(
            f"this kernel was built for a {list(shapes[0])}, b {list(shapes[1])}, a_scale {list(shapes[2])}, "
            f"b_scale {list(shapes[3])}; got {', '.join(str(list(g)) for g in got)}")
    if not b.is_contiguous():
        raise GemmInputError(f"b must be contiguous (row-major [N, K]), got strides {b.stride()}")
    if not b_scale.is_contiguous():
        raise GemmInputError(f"b_scale must be contiguous (row-major), got strides {b_scale.stride()}")
