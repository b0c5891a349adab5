"""Loading a built Hopper-kernel library and calling it from torch.

A launch takes the stream of ``torch.cuda.current_stream()``, allocates its
output from torch's caching allocator and never synchronizes, so calls can be
captured in CUDA graphs. The activation scales may come in either layout
(``gemm.problem.activation_scale_layout``); nothing is copied for either.

Split-K and stream-K launches (``Sm90Params.splits`` > 1, ``stream_k``) take
their workspace from a cache per device (``splitk_workspace``): int32 counters and fp32 partial tiles,
zeroed when allocated and grown when a launch needs more. The kernels leave
the counters at zero, so nothing is cleared between launches or graph replays.
A function gets its workspace when it is made, so capturing it in a graph
allocates nothing; buffers that were outgrown stay allocated, because graphs
captured earlier hold their addresses. Launches of one device share the
workspace: run split-K launches of a device on one stream at a time (as
engines and the tuner do), never concurrently on two streams.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

import torch

from gemm.kernels.base import GemmFn, LaunchError
from gemm.kernels.nvcc.library import OK, NativeLibrary, check_call, device_index, tma_ready
from gemm.kernels.sm90 import codegen
from gemm.kernels.sm90.params import RASTER_CODES, Sm90Params
from gemm.problem import GemmInputError, GemmProblem, activation_scale_layout


class RunOptions(ctypes.Structure):
    """Mirror of ``gemm_sm90::RunOptions``."""

    _fields_ = [
        ("cluster_m", ctypes.c_int32),
        ("cluster_n", ctypes.c_int32),
        ("raster", ctypes.c_int32),
        ("group", ctypes.c_int32),
        ("max_ctas", ctypes.c_int32),
        ("splits", ctypes.c_int32),
        ("counter_slots", ctypes.c_int64),
        ("counters", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_int64),
        ("stream_k", ctypes.c_int32),
        ("dependent_launch", ctypes.c_int32),
    ]


def run_options(params: Sm90Params, max_ctas: int = 0, workspace: "SplitKWorkspace | None" = None) -> RunOptions:
    """The C struct of ``params``' run-time fields (and, for split-K and stream-K, of ``workspace``)."""
    options = RunOptions(params.cluster_m, params.cluster_n, RASTER_CODES[params.raster], params.group, max_ctas,
                         params.splits)
    options.stream_k = int(params.stream_k)
    options.dependent_launch = int(params.dependent_launch)
    if workspace is not None:
        options.counter_slots = workspace.counters.numel()
        options.counters = workspace.counters.data_ptr()
        options.workspace = workspace.partials.data_ptr()
        options.workspace_bytes = workspace.partials.numel() * workspace.partials.element_size()
    return options


class SplitKWorkspace:
    """The counters (int32) and partial tiles (fp32) of one device's split-K and stream-K launches."""

    def __init__(self, counters: torch.Tensor, partials: torch.Tensor):
        self.counters = counters
        self.partials = partials

    def holds(self, counter_slots: int, partial_bytes: int) -> bool:
        return self.counters.numel() >= counter_slots and self.partials.numel() * 4 >= partial_bytes


_WORKSPACES: dict[int, SplitKWorkspace] = {}
#: Outgrown workspaces: graphs captured with them still launch into them, so they are never freed.
_RETIRED: list[SplitKWorkspace] = []
_WORKSPACE_GUARD = threading.Lock()
#: Smallest allocation (counters, fp32 partial bytes), so small launches do not regrow it one by one.
_MIN_COUNTERS, _MIN_PARTIAL_BYTES = 4096, 16 * 2**20


def splitk_workspace(device_index: int, counter_slots: int, partial_bytes: int) -> SplitKWorkspace:
    """The workspace of ``device_index``, grown (to at least twice its size) when it holds too little.

    Allocating while the current stream captures a CUDA graph is a LaunchError: the zeroing would become
    part of the graph and the memory the graph's; functions made by ``make_gemm_fn`` allocate when made.
    """
    with _WORKSPACE_GUARD:
        current = _WORKSPACES.get(device_index)
        if current is not None and current.holds(counter_slots, partial_bytes):
            return current
        with torch.cuda.device(device_index):
            if torch.cuda.is_current_stream_capturing():
                raise LaunchError("the split-K workspace would have to grow during CUDA graph capture; "
                                  "call the kernel once before capturing it")
            slots = max(counter_slots, _MIN_COUNTERS, 2 * current.counters.numel() if current else 0)
            floats = max(-(-partial_bytes // 4), _MIN_PARTIAL_BYTES // 4,
                         2 * current.partials.numel() if current else 0)
            device = torch.device("cuda", device_index)
            grown = SplitKWorkspace(torch.zeros(slots, dtype=torch.int32, device=device),
                                    torch.zeros(floats, dtype=torch.float32, device=device))
        if current is not None:
            _RETIRED.append(current)
        _WORKSPACES[device_index] = grown
        return grown


class Sm90Library(NativeLibrary):
    """One loaded instantiation of ``fp8_gemm.cuh``."""

    symbol_prefix = codegen.SYMBOL_PREFIX
    abi_version = codegen.ABI_VERSION
    title = "Hopper kernel library"

    def bind(self) -> None:
        self._run_options_bytes = self.function("run_options_bytes", ctypes.c_int, [])
        self._swap_ab = self.function("swap_ab", ctypes.c_int, [])
        self._streamk_plan = self.function(
            "streamk_plan", ctypes.c_int,
            [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(RunOptions),
             ctypes.POINTER(ctypes.c_int64)])
        self._streamk_unit = self.function(
            "streamk_unit", ctypes.c_int,
            [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)])
        self._workspace_sizes = self.function(
            "workspace_sizes", ctypes.c_int,
            [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(RunOptions), ctypes.POINTER(ctypes.c_int64),
             ctypes.POINTER(ctypes.c_int64)])
        self._run = self.function(
            "run", ctypes.c_int,
            [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
             ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.POINTER(RunOptions),
             ctypes.c_void_p])

    @property
    def run_options_bytes(self) -> int:
        """``sizeof(RunOptions)`` in the library (``ctypes.sizeof(RunOptions)`` must match)."""
        return self._run_options_bytes()

    @property
    def swap_ab(self) -> bool:
        """True for a swap-AB build (its ``run`` takes the same A, B, D; the MMA computes D^T = B A^T)."""
        return bool(self._swap_ab())

    def workspace_sizes(self, m: int, n: int, k: int, options: RunOptions) -> tuple[int, int]:
        """(int32 counters, bytes of fp32 partials) a launch of ``options`` needs; (0, 0) without split-K."""
        slots, partial = ctypes.c_int64(0), ctypes.c_int64(0)
        status = self._workspace_sizes(m, n, k, ctypes.byref(options), ctypes.byref(slots), ctypes.byref(partial))
        if status != OK:
            self.raise_for(status, "workspace_sizes")
        return slots.value, partial.value

    def streamk_plan(self, m: int, n: int, k: int, resident_clusters: int, options: RunOptions) -> dict[str, int]:
        """The C++ stream-K plan of (m, n, k) on ``resident_clusters`` (capped by ``options.max_ctas``): clusters,
        dp_tiles, sk_tiles, units_per_cluster, counter_slots, partial_bytes, span_base. No GPU needed."""
        out = (ctypes.c_int64 * 7)()
        status = self._streamk_plan(m, n, k, resident_clusters, ctypes.byref(options), out)
        if status != OK:
            self.raise_for(status, "streamk_plan")
        names = ("clusters", "dp_tiles", "sk_tiles", "units_per_cluster", "counter_slots", "partial_bytes",
                 "span_base")
        return dict(zip(names, out))

    def streamk_unit(self, tiles: int, k_blocks: int, resident_clusters: int, u: int) -> tuple[int, ...] | None:
        """Unit ``u`` of the C++ stream-K schedule: (tile, kb_begin, kb_end, role, first contributor, stream-K
        tile), or None past its cluster's units."""
        out = (ctypes.c_int * 6)()
        if not self._streamk_unit(tiles, k_blocks, resident_clusters, u, out):
            return None
        return tuple(out)

    def run(self, a: int, b: int, d: int, sfa: int, sfb: int, m: int, n: int, k: int, lda: int,
            sfa_mn_major: bool, sfa_ld: int, options: RunOptions, stream: int) -> None:
        status = self._run(a, b, d, sfa, sfb, m, n, k, lda, int(sfa_mn_major), sfa_ld, ctypes.byref(options),
                           stream)
        if status != OK:
            self.raise_for(status, "run")


@functools.lru_cache(maxsize=None)
def load_library(path: Path) -> Sm90Library:
    """The library at ``path``, loaded once per process."""
    return Sm90Library(Path(path))


def make_gemm_fn(library: Sm90Library, problem: GemmProblem, params: Sm90Params,
                 device: torch.device | int | None = None) -> GemmFn:
    """A callable ``fn(a, b, a_scale, b_scale, out=None) -> out`` running ``library`` for ``problem``.

    Inputs (on one CUDA device): a [M, K] e4m3 with unit stride along K and a row
    pitch that is a multiple of 16 bytes (else it is copied); b [N, K] e4m3
    contiguous; a_scale [M, ceil(K/128)] fp32 row-major or MN-major (see
    ``gemm.problem.activation_scale_layout``); b_scale [ceil(N/128), ceil(K/128)] fp32 contiguous. Output
    [M, N] of the problem's dtype, contiguous (allocated, or ``out`` when given). Prepares the kernel on ``device``
    (default: the current CUDA device) and, for split-K and stream-K, takes that device's
    workspace (``splitk_workspace``) now, so a graph capture allocates nothing.
    """
    m, n, k = problem.m, problem.n, problem.k
    if library.run_options_bytes != ctypes.sizeof(RunOptions):
        raise LaunchError(f"{library.path}: RunOptions is {library.run_options_bytes} bytes in the library, "
                          f"{ctypes.sizeof(RunOptions)} in the launcher; rebuild it")
    if library.swap_ab != params.swap_ab:
        raise LaunchError(f"{library.path}: a {'swap-AB' if library.swap_ab else 'non-swap'} library for params "
                          f"with swap_ab={params.swap_ab}")
    index = device_index(device, "Hopper kernels")
    library.prepare(index)
    out_dtype = problem.torch_out_dtype
    options_by_device: dict[int, RunOptions] = {}

    def options_for(index_: int) -> RunOptions:
        options = options_by_device.get(index_)
        if options is None:
            with torch.cuda.device(index_):  # stream-K's sizes depend on that device's SM count (the grid)
                sizes = library.workspace_sizes(m, n, k, run_options(params))
            workspace = splitk_workspace(index_, *sizes) if params.splits > 1 or params.stream_k else None
            options = options_by_device[index_] = run_options(params, workspace=workspace)
        return options

    options_for(index)

    def run(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
            out: torch.Tensor | None = None) -> torch.Tensor:
        check_call(problem, a, b, a_scale, b_scale)
        layout, sfa_ld = activation_scale_layout(a_scale)
        mn_major = layout == "mn_major"
        a = tma_ready(a)
        b = tma_ready(b)
        if out is None:
            out = torch.empty((m, n), dtype=out_dtype, device=a.device)
        elif (tuple(out.shape) != (m, n) or out.dtype != out_dtype or out.device != a.device
              or not out.is_contiguous() or out.data_ptr() % 16):
            raise GemmInputError(f"out must be a contiguous, 16-byte aligned [{m}, {n}] {out_dtype} tensor on "
                                 f"{a.device}, got {list(out.shape)} {out.dtype} on {out.device}")
        stream = torch.cuda.current_stream(a.device).cuda_stream
        options = options_for(a.device.index)
        args = (a.data_ptr(), b.data_ptr(), out.data_ptr(), a_scale.data_ptr(), b_scale.data_ptr(), m, n, k,
                a.stride(0), mn_major, sfa_ld, options, stream)
        if a.device.index != torch.cuda.current_device():
            with torch.cuda.device(a.device):
                library.run(*args)
        else:
            library.run(*args)
        return out

    return run
