"""Choosing the backend and params the op runs for a problem on a device.

Order:

1. The device's tuned configs for (N, K, block shape): the file
   ``<root>/<device_name>/N=..,K=..,device_name=..,dtype=fp8_w8a8,block_shape=[..].json``
   of each root of ``gemm.envs.config_roots()``: the user config directory
   (``GEMM_CONFIG_DIR``, else ``~/.local/share/gemm/tuned_configs``), then the
   configs shipped with gemm (``device_name`` is torch's name with spaces
   replaced by underscores, as engines spell it). Their entries are pooled per
   tuned M, the user directory's winning where both have one, and the entry at
   the tuned M nearest to the problem's M is used (ties: the smaller tuned M; see
   ``gemm.configs.nearest_entry``). When that entry cannot run here (unknown or
   unavailable backend, params its backend rejects, or its ``check`` refuses the
   problem, e.g. a cuBLAS entry at an M cuBLAS cannot do), the next-nearest
   entry is tried, and so on.
2. Without a usable tuned entry, the cost model's predicted choice
   (``gemm.untuned``): every modelled backend available here ranked at the
   nearest M of ``gemm.tuner.model.choice.PREDICTION_M_GRID``, computed once per
   shape and M bucket, the same choice ``gemm predict`` writes.
3. The Triton backend's documented heuristic (``TritonBackend.default_params``)
   when there is no prediction: the model was never fitted on this GPU, its
   coefficients cannot be read, or it failed; and in ``kernel_for`` when the
   predicted kernel cannot be built here.

Each reason to leave the tuned path is reported once per process as a
``gemm.configs.ConfigWarning``: no file for (device, N, K, block) (with what
runs instead and how to tune the shape); a corrupt or mismatched file (never an
exception); an entry skipped (per file, M and reason); a cost model that failed.
Under ``TRITON_INTERPRET=1`` with CPU tensors, configs are looked up under the
device name ``"CPU_interpreter"``, so a CPU run can tune, write and dispatch.
``kernel_for`` caches the built kernel of each choice per problem and device
(what the op calls); ``clear_caches`` resets that, the config cache, the
predicted rankings and the warnings already given.
"""

from __future__ import annotations

import functools
import threading
import warnings
from pathlib import Path

import torch

from gemm import envs, untuned
from gemm.arch import ArchSpec, detect_arch, interpreter_arch
from gemm.configs import ConfigError, ConfigWarning, config_path, find_configs, forget_cached, rank_ms
from gemm.configs.schema import ConfigEntry
from gemm.kernels import get_backend
from gemm.kernels.base import Backend, BackendError, GemmFn, KernelParams
from gemm.problem import GemmInputError, GemmProblem

INTERPRETER_DEVICE_NAME = interpreter_arch().config_device_name  # "CPU_interpreter"

_WARNED: set[tuple] = set()
_WARNED_LOCK = threading.Lock()


def _warn_once(key: tuple, message: str | None) -> bool:
    """Warn ``message`` unless ``key`` was warned before (None: only mark ``key`` as said); True if warned now."""
    with _WARNED_LOCK:
        if key in _WARNED:
            return False
        _WARNED.add(key)
    if message is None:
        return False
    warnings.warn(message, ConfigWarning, stacklevel=3)
    return True


@functools.lru_cache(maxsize=16)
def arch_for_device(device_type: str, device_index: int | None) -> ArchSpec:
    """The ArchSpec of a CUDA device, or the interpreter stand-in for CPU tensors under TRITON_INTERPRET=1."""
    if device_type == "cuda":
        return detect_arch(device_index)
    if device_type == "cpu" and envs.triton_interpret():
        return interpreter_arch()
    raise GemmInputError(
        f"inputs are on {device_type}; the op runs on CUDA devices, or on the CPU only under TRITON_INTERPRET=1")


def heuristic_choice(problem: GemmProblem, arch: ArchSpec) -> tuple[Backend, KernelParams]:
    """The Triton backend with its documented untuned params for ``problem``."""
    backend = get_backend("triton")
    return backend, backend.default_params(problem, arch)


def _entry_choice(entry: ConfigEntry, problem: GemmProblem, arch: ArchSpec,
                  device: torch.device | None) -> tuple[tuple[Backend, KernelParams] | None, str | None]:
    """((backend, params), None) if ``entry`` can run ``problem`` here, else (None, why not)."""
    try:
        backend = get_backend(entry.backend)
    except ValueError as exc:
        return None, str(exc)
    except ImportError as exc:
        return None, f"backend {entry.backend!r} cannot be loaded: {exc}"
    unavailable = backend.unavailable_reason(device)
    if unavailable is not None:
        return None, f"backend {entry.backend!r} is unavailable: {unavailable}"
    try:
        params = backend.params_from_dict(entry.params)
    except (TypeError, ValueError) as exc:
        return None, f"bad {entry.backend} params: {exc}"
    rejected = backend.check(problem, params, arch)
    if rejected is not None:
        return None, f"{entry.backend} params {params.short()} rejected: {rejected}"
    return (backend, params), None


def _pooled_entries(found) -> dict[int, tuple[ConfigEntry, Path]]:
    """Every usable file's entries by tuned M, the first root's entry winning where several have one."""
    pooled: dict[int, tuple[ConfigEntry, Path]] = {}
    for path, config in found:
        if not isinstance(config, ConfigError):
            for tuned_m, entry in config.entries.items():
                pooled.setdefault(tuned_m, (entry, path))
    return pooled


def _missing_message(problem: GemmProblem, device_name: str, block: tuple[int, int], roots) -> str:
    looked = [config_path(root, device_name, problem.n, problem.k, block) for root in roots]
    files = [str(root) for root in roots if root.exists() and not root.is_dir()]
    return (f"no tuned config for N={problem.n} K={problem.k} block_shape={list(block)} on {device_name}: "
            f"looked for {' and '.join(map(str, looked)) or 'nothing (no config directories)'}"
            + (f" ({', '.join(files)} is a file, not a config directory)" if files else ""))


def _untuned_message(why: str, problem: GemmProblem, device_name: str, outcome: untuned.PredictedChoice) -> str:
    """The one warning per shape that leaves the tuned path: why, what runs instead, how to tune the shape."""
    if outcome.choice is not None:
        instead = f"Running {outcome.note} instead (how close it comes to tuned: docs/model.md)"
    else:
        instead = f"Using the Triton heuristic ({outcome.note})"
    return (f"{why}. {instead}; tune this shape on this GPU with `gemm tune --shape {problem.n},{problem.k}`, "
            f"or point GEMM_CONFIG_DIR at a directory holding {device_name}/ configs")


def _tuned(problem: GemmProblem, arch: ArchSpec, device: torch.device | None,
           roots: tuple[Path, ...]) -> tuple[tuple[Backend, KernelParams] | None, str | None]:
    """(choice, None) from the tuned configs, else (None, why there is none) where that is still to be said, or
    (None, None) when every file found was unusable and has said so."""
    device_name = arch.config_device_name
    block = (problem.block_n, problem.block_k)
    found = find_configs(device_name, problem.n, problem.k, block, roots)
    for path, config in found:
        if isinstance(config, ConfigError):
            _warn_once(("corrupt", str(path)),
                       f"ignoring a tuned config that cannot be used: {config}. Using the other tuned configs "
                       f"or the untuned choice (cost-model prediction, else the Triton heuristic); check the file "
                       f"with `gemm validate {path}`")
    if not found:
        return None, _missing_message(problem, device_name, block, roots)
    pooled = _pooled_entries(found)
    if not pooled:
        return None, None  # every file found is unusable, and each has said so
    for tuned_m in rank_ms(pooled, problem.m):
        entry, path = pooled[tuned_m]
        choice, reason = _entry_choice(entry, problem, arch, device)
        if choice is not None:
            return choice, None
        # Once per entry, not per M: an entry that needs M % 4 == 0 would otherwise warn for every ragged M.
        _warn_once(("entry", str(path), tuned_m),
                   f"tuned config {path}: the entry for M={tuned_m} ({entry.backend}) cannot run {problem} here: "
                   f"{reason}; trying the next-nearest tuned M (not repeated for this entry)")
    paths = ", ".join(sorted({str(path) for _, path in pooled.values()}))
    return None, f"tuned config {paths}: no entry can run on this device (first seen for {problem})"


def _roots(roots) -> tuple[Path, ...]:
    return tuple(Path(root) for root in roots) if roots is not None else envs.config_roots()


def tuned_choice(problem: GemmProblem, arch: ArchSpec, device: torch.device | None = None,
                 root: Path | None = None) -> tuple[Backend, KernelParams] | None:
    """(backend, params) from the tuned configs of ``arch``'s device for ``problem`` (under ``root`` alone when
    given, else every root of ``gemm.envs.config_roots()``), or None; unusable files and entries are warned
    once, the absence of a config is not (``choose`` says what runs instead)."""
    return _tuned(problem, arch, device, _roots(None if root is None else (root,)))[0]


def _choose(problem: GemmProblem, device_type: str, device_index: int | None,
            roots=None) -> tuple[Backend, KernelParams, bool]:
    """``choose``'s (backend, params) and whether they are the cost model's prediction."""
    arch = arch_for_device(device_type, device_index)
    device = torch.device(device_type, device_index) if device_type == "cuda" else None
    chosen, why = _tuned(problem, arch, device, _roots(roots))
    if chosen is not None:
        return (*chosen, False)
    outcome = untuned.predicted_choice(problem, arch, device)
    shape = (arch.config_device_name, problem.n, problem.k, problem.block_n, problem.block_k)
    said = why is not None and _warn_once(("untuned",) + shape,
                                          _untuned_message(why, problem, arch.config_device_name, outcome))
    if outcome.failed:  # said once per shape, also when the model fails at a later M bucket only
        _warn_once(("model-failed",) + shape, None if said else
                   f"{outcome.note}; using the Triton heuristic for {problem} (not repeated for this shape)")
    if outcome.choice is not None:
        return (*outcome.choice, True)
    return (*heuristic_choice(problem, arch), False)


def choose(problem: GemmProblem, device_type: str, device_index: int | None,
           roots=None) -> tuple[Backend, KernelParams]:
    """(backend, params) to run ``problem`` on the given device: tuned config, else the cost model's predicted
    choice, else the heuristic (see the module docstring).

    ``roots``: the config directories to look in, in order (default ``gemm.envs.config_roots()``); an empty
    sequence looks in none, which is how a benchmark times the untuned path of shapes that are tuned.
    """
    backend, params, _ = _choose(problem, device_type, device_index, roots)
    return backend, params


@functools.lru_cache(maxsize=4096)
def kernel_for(problem: GemmProblem, device_type: str, device_index: int | None) -> GemmFn:
    """The built kernel ``choose`` picks for ``problem`` on the device, built once per problem and device.

    A predicted choice that fails to build (a CUTLASS kernel nvcc cannot compile here, say) is replaced by
    the Triton heuristic, with one warning per shape: nothing verified it, so it must not fail the call. A
    tuned entry that fails to build raises, as it did when it was tuned.
    """
    backend, params, predicted = _choose(problem, device_type, device_index)
    if not predicted:
        return backend.build(problem, params)
    try:
        return backend.build(problem, params)
    except BackendError as exc:
        arch = arch_for_device(device_type, device_index)
        _warn_once(("predicted-build", arch.config_device_name, problem.n, problem.k),
                   f"the predicted choice for {problem} ({backend.name} {params.short()}) cannot be built here: "
                   f"{type(exc).__name__}: {str(exc)[:300]}; using the Triton heuristic (not repeated for this "
                   f"shape)")
        heuristic, heuristic_params = heuristic_choice(problem, arch)
        return heuristic.build(problem, heuristic_params)


def clear_caches() -> None:
    """Forget cached configs, predicted rankings, kernels chosen for the op and warnings given (e.g. after
    writing new configs)."""
    forget_cached()
    untuned.clear_cache()
    with _WARNED_LOCK:
        _WARNED.clear()
    kernel_for.cache_clear()
