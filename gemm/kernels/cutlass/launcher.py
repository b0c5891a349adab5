"""Loading a built CUTLASS library with ctypes and calling it from torch.

The library's C ABI is described in ``codegen``. A launch takes the stream
of ``torch.cuda.current_stream()``, allocates its output and workspace from
torch's caching allocator and never synchronizes, so calls can be captured
in CUDA graphs. Failures reported by the library become ``UnsupportedProblem``
(the instantiation cannot run this problem) or ``LaunchError``.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

import torch

from gemm.kernels.base import GemmFn, LaunchError, UnsupportedProblem
from gemm.kernels.cutlass import codegen
from gemm.kernels.cutlass.config import DECOMPOSITION_CODES, RASTER_CODES, REDUCTION_CODES, CutlassParams
from gemm.problem import GemmInputError, GemmProblem

# StatusCode of blockwise_gemm.h.
OK, UNSUPPORTED, BAD_ARGUMENT, CUDA_ERROR, INTERNAL = 0, 1, 2, 3, 4
_STATUS_NAMES = {UNSUPPORTED: "unsupported", BAD_ARGUMENT: "bad argument", CUDA_ERROR: "CUDA error",
                 INTERNAL: "internal error"}

#: Largest workspace a launch may ask for (split-K with many splits can want hundreds of MB).
MAX_WORKSPACE_BYTES = 256 * 2**20


class RuntimeOptions(ctypes.Structure):
    """Mirror of ``gemm_cutlass::RuntimeOptions``."""

    _fields_ = [
        ("decomposition", ctypes.c_int32),
        ("splits", ctypes.c_int32),
        ("raster", ctypes.c_int32),
        ("max_swizzle", ctypes.c_int32),
        ("reduction", ctypes.c_int32),
    ]


def runtime_options(params: CutlassParams) -> RuntimeOptions:
    """The C struct of ``params``' run-time fields."""
    return RuntimeOptions(DECOMPOSITION_CODES[params.decomposition], params.splits, RASTER_CODES[params.raster],
                          params.max_swizzle, REDUCTION_CODES[params.reduction])


class KernelLibrary:
    """One loaded instantiation; thin typed wrappers over its exported functions."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise LaunchError(f"cannot load CUTLASS kernel library {self.path}: {exc}") from exc
        lib, p = self._lib, codegen.SYMBOL_PREFIX
        try:
            self._abi_version = getattr(lib, p + "abi_version")
            self._config_name = getattr(lib, p + "config_name")
            self._last_error = getattr(lib, p + "last_error")
            self._prepare = getattr(lib, p + "prepare")
            self._workspace_size = getattr(lib, p + "workspace_size")
            self._can_implement = getattr(lib, p + "can_implement")
            self._run = getattr(lib, p + "run")
            self._smem = getattr(lib, p + "shared_memory_bytes")
            self._stages = getattr(lib, p + "stages")
        except AttributeError as exc:
            raise LaunchError(f"{self.path} is not a CUTLASS kernel library of this version: {exc}") from exc
        self._abi_version.restype = ctypes.c_int
        self._config_name.restype = ctypes.c_char_p
        self._last_error.restype = ctypes.c_char_p
        for fn in (self._prepare, self._smem, self._stages):
            fn.restype = ctypes.c_int
            fn.argtypes = []
        options = ctypes.POINTER(RuntimeOptions)
        self._workspace_size.restype = ctypes.c_int
        self._workspace_size.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, options,
                                         ctypes.POINTER(ctypes.c_size_t)]
        self._can_implement.restype = ctypes.c_int
        self._can_implement.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, options]
        self._run.restype = ctypes.c_int
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p,
                              ctypes.c_size_t, ctypes.c_void_p, options]
        version = self._abi_version()
        if version != codegen.ABI_VERSION:
            raise LaunchError(f"{self.path} has ABI version {version}, expected {codegen.ABI_VERSION}; rebuild it")
        self.config_name = self._config_name().decode()
        self._prepared: set[int] = set()
        self._guard = threading.Lock()

    def last_error(self) -> str:
        message = self._last_error()
        return message.decode(errors="replace") if message else ""

    def _raise_for(self, status: int, what: str) -> None:
        message = f"{self.config_name}: {what} failed ({_STATUS_NAMES.get(status, status)}): {self.last_error()}"
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
        """Per-device setup (shared-memory opt-in) once, outside any graph capture."""
        with self._guard:
            if device_index in self._prepared:
                return
            with torch.cuda.device(device_index):
                status = self._prepare()
            if status != OK:
                self._raise_for(status, "prepare")
            self._prepared.add(device_index)

    def workspace_size(self, m: int, n: int, k: int, lda: int, options: RuntimeOptions) -> int:
        size = ctypes.c_size_t(0)
        status = self._workspace_size(m, n, k, lda, ctypes.byref(options), ctypes.byref(size))
        if status != OK:
            self._raise_for(status, "workspace_size")
        return size.value

    def can_implement(self, m: int, n: int, k: int, lda: int, options: RuntimeOptions) -> None:
        """Raises UnsupportedProblem (with CUTLASS's reason) when the problem cannot run."""
        status = self._can_implement(m, n, k, lda, ctypes.byref(options))
        if status != OK:
            self._raise_for(status, "can_implement")

    def run(self, a: int, b: int, d: int, sfa: int, sfb: int, m: int, n: int, k: int, lda: int,
            workspace: int, workspace_bytes: int, stream: int, options: RuntimeOptions) -> None:
        status = self._run(a, b, d, sfa, sfb, m, n, k, lda, workspace, workspace_bytes, stream,
                           ctypes.byref(options))
        if status != OK:
            self._raise_for(status, "run")


@functools.lru_cache(maxsize=None)
def load_library(path: Path) -> KernelLibrary:
    """The library at ``path``, loaded once per process."""
    return KernelLibrary(Path(path))


def _activation_scales(a_scale: torch.Tensor, mn_major: bool) -> torch.Tensor:
    """``a_scale`` [M, kb] as the kernel reads it: row-major [M, kb] (K-major) or row-major [kb, M] (MN-major).

    Accepts either layout of the [M, kb] tensor and copies only when needed.
    """
    if not mn_major:
        return a_scale if a_scale.is_contiguous() else a_scale.contiguous()
    transposed = a_scale.t()
    return transposed if transposed.is_contiguous() else transposed.contiguous()


def _tma_ready(t: torch.Tensor) -> torch.Tensor:
    """``t`` if its base is 16-byte aligned and its row pitch a multiple of 16 bytes, else a contiguous copy."""
    if t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0 and t.stride(1) == 1:
        return t
    copy = t.contiguous()
    if copy.data_ptr() % 16:
        copy = copy.clone()
    return copy


def _device_index(device: torch.device | int | str | None) -> int:
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise UnsupportedProblem(f"CUTLASS kernels run on CUDA devices, got {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


def make_gemm_fn(library: KernelLibrary, problem: GemmProblem, params: CutlassParams,
                 device: torch.device | int | None = None,
                 max_workspace_bytes: int = MAX_WORKSPACE_BYTES) -> GemmFn:
    """A callable ``fn(a, b, a_scale, b_scale) -> out`` running ``library`` for ``problem``.

    Inputs (on one CUDA device): a [M, K] e4m3 with unit stride along K; b [N, K]
    e4m3 contiguous; a_scale [M, ceil(K/128)] fp32, row-major (or M-major: the
    ``.t()`` of a contiguous [ceil(K/128), M] tensor); b_scale
    [ceil(N/128), ceil(K/128)] fp32 contiguous. Output [M, N] of the problem's
    dtype. A's row pitch and base must be 16-byte aligned, else it is copied.

    Checks the problem with the library now (UnsupportedProblem if CUTLASS
    refuses it or its workspace exceeds ``max_workspace_bytes``), and prepares
    the kernel on ``device`` (default: the current CUDA device).
    """
    m, n, k = problem.m, problem.n, problem.k
    options = runtime_options(params)
    device_index = _device_index(device)
    with torch.cuda.device(device_index):
        library.can_implement(m, n, k, k, options)
        workspace_bytes = library.workspace_size(m, n, k, k, options)
    if workspace_bytes > max_workspace_bytes:
        raise UnsupportedProblem(f"{params.short()} needs {workspace_bytes / 2**20:.0f} MiB of workspace for "
                                 f"{problem}, more than the {max_workspace_bytes / 2**20:.0f} MiB allowed")
    library.prepare(device_index)
    out_dtype = problem.torch_out_dtype
    mn_major = params.sfa_major == "mn"
    a_shape, b_shape = (m, k), (n, k)
    sa_shape, sb_shape = (m, problem.k_blocks), (problem.n_blocks, problem.k_blocks)

    def run(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor) -> torch.Tensor:
        if a.shape != a_shape or b.shape != b_shape or a_scale.shape != sa_shape or b_scale.shape != sb_shape:
            raise GemmInputError(
                f"this kernel was built for a {list(a_shape)}, b {list(b_shape)}, a_scale {list(sa_shape)}, "
                f"b_scale {list(sb_shape)}; got {list(a.shape)}, {list(b.shape)}, {list(a_scale.shape)}, "
                f"{list(b_scale.shape)}")
        if not b_scale.is_contiguous():
            raise GemmInputError(f"b_scale must be contiguous (row-major), got strides {b_scale.stride()}")
        if not b.is_contiguous():
            raise GemmInputError(f"b must be contiguous (row-major [N, K]), got strides {b.stride()}")
        a = _tma_ready(a)
        b = _tma_ready(b)
        sa = _activation_scales(a_scale, mn_major)
        out = torch.empty((m, n), dtype=out_dtype, device=a.device)
        workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=a.device) if workspace_bytes else None
        stream = torch.cuda.current_stream(a.device).cuda_stream
        args = (a.data_ptr(), b.data_ptr(), out.data_ptr(), sa.data_ptr(), b_scale.data_ptr(), m, n, k,
                a.stride(0), workspace.data_ptr() if workspace is not None else None, workspace_bytes, stream,
                options)
        if a.device.index != torch.cuda.current_device():
            with torch.cuda.device(a.device):
                library.run(*args)
        else:
            library.run(*args)
        return out

    return run
