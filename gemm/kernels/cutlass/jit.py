"""nvcc builds of CUTLASS instantiations, cached on disk by content.

Each ``KernelConfig`` becomes ``<cache_dir>/cutlass/<key>/`` holding
``kernel.so``, the exact sources it was built from (``kernel.cu`` and the
header), ``build.log`` (nvcc's output, with ptxas register/spill counts) and
``meta.json``. ``<key>`` hashes the generated source, the header, the
CUTLASS version, the nvcc flags and the nvcc version, so changing any of them
rebuilds and nothing stale is ever loaded.

A build happens in a temporary directory beside the cache entry and is
renamed into place (atomic), under a file lock per key, so concurrent
processes and threads build each kernel once. Building needs no GPU.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from gemm import envs
from gemm.kernels.base import CompileError
from gemm.kernels.cutlass import codegen, support
from gemm.kernels.cutlass.config import KernelConfig
from gemm.kernels.cutlass.toolchain import NVCC_FLAGS, Toolchain, find_toolchain

LIBRARY_NAME = "kernel.so"
SOURCE_NAME = "kernel.cu"
LOG_NAME = "build.log"
META_NAME = "meta.json"
#: Longest a single nvcc run may take (about 35-60 s is typical on one core).
COMPILE_TIMEOUT_S = 1800
#: How much of a failing compiler log goes into the exception message.
LOG_TAIL_CHARS = 20000


class NvccError(CompileError):
    """nvcc failed; ``log`` holds its whole output and ``command`` the command line."""

    def __init__(self, message: str, log: str = "", command: Sequence[str] = ()):
        super().__init__(message)
        self.log = log
        self.command = list(command)


class UnbuildableConfig(CompileError):
    """The headers are a CUTLASS release known not to compile this instantiation (see ``support``);
    raised before running nvcc."""


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """One built (or found) library."""

    config: KernelConfig
    path: Path             # the kernel.so
    cached: bool           # True if it was already in the cache
    seconds: float         # compile time (0 when cached)
    registers: int | None  # per thread, from ptxas (None if not reported)
    spill_bytes: int | None  # spill stores + loads in bytes, from ptxas


def cache_root() -> Path:
    """``<GEMM_CACHE_DIR or ~/.cache/gemm>/cutlass``."""
    return envs.cache_dir() / "cutlass"


def cache_key(source: str, header: str, toolchain: Toolchain, flags: Sequence[str] = NVCC_FLAGS) -> str:
    """Hex digest of everything that decides the built binary."""
    payload = json.dumps({
        "source": source,
        "header": header,
        "cutlass_version": toolchain.cutlass.version_string,
        "nvcc_version": toolchain.nvcc_version,
        "flags": list(flags),
        "abi": codegen.ABI_VERSION,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _ptxas_usage(log: str) -> tuple[int | None, int | None]:
    """(registers, spill bytes) of the GEMM kernel from ``-Xptxas=-v`` output (the largest seen)."""
    registers = [int(r) for r in re.findall(r"Used (\d+) registers", log)]
    spills = [int(s) + int(l) for s, l in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)]
    return (max(registers) if registers else None, max(spills) if spills else None)


def _compile(config: KernelConfig, toolchain: Toolchain, source: str, header: str, workdir: Path) -> tuple[str, float]:
    (workdir / SOURCE_NAME).write_text(source)
    (workdir / codegen.HEADER_NAME).write_text(header)
    command = [toolchain.nvcc, *NVCC_FLAGS, f"-I{workdir}"]
    command += [f"-I{d}" for d in toolchain.cutlass.include_dirs]
    command += ["-shared", "-o", str(workdir / LIBRARY_NAME), str(workdir / SOURCE_NAME)]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NvccError(f"nvcc timed out after {COMPILE_TIMEOUT_S} s building {config.name}",
                        str(exc.output or ""), command) from exc
    except OSError as exc:
        raise NvccError(f"cannot run {toolchain.nvcc}: {exc}", "", command) from exc
    seconds = time.perf_counter() - start
    log = (result.stdout or "") + (result.stderr or "")
    if result.returncode != 0 or not (workdir / LIBRARY_NAME).is_file():
        tail = log[-LOG_TAIL_CHARS:]
        raise NvccError(
            f"nvcc failed (exit {result.returncode}) building CUTLASS kernel {config.name} "
            f"against CUTLASS {toolchain.cutlass.version_string} ({toolchain.cutlass.origin}), "
            f"nvcc {toolchain.nvcc_version}.\ncommand: {' '.join(command)}\ncompiler log"
            f"{' (last %d characters)' % LOG_TAIL_CHARS if len(log) > LOG_TAIL_CHARS else ''}:\n{tail}",
            log, command)
    return log, seconds


def _read_result(config: KernelConfig, entry: Path, cached: bool, seconds: float) -> BuildResult:
    try:
        meta = json.loads((entry / META_NAME).read_text())
    except (OSError, ValueError):
        meta = {}
    return BuildResult(config, entry / LIBRARY_NAME, cached, seconds, meta.get("registers"), meta.get("spill_bytes"))


def build(config: KernelConfig, toolchain: Toolchain | None = None) -> BuildResult:
    """The shared library of ``config``, compiled now unless the cache has it.

    Raises ``BackendUnavailable`` (no nvcc or headers), ``UnbuildableConfig``
    (the CUTLASS release is known to refuse it; nvcc is not run) or
    ``NvccError`` (a ``CompileError`` carrying the compiler log). Needs no GPU.
    """
    toolchain = toolchain or find_toolchain()
    refusal = support.unbuildable_reason(config.tile_m, toolchain.cutlass.version)
    if refusal:
        raise UnbuildableConfig(f"{config.name}: {refusal}")
    source = codegen.render_source(config)
    header = codegen.header_text()
    key = cache_key(source, header, toolchain)
    root = cache_root()
    entry = root / key
    if (entry / LIBRARY_NAME).is_file():
        return _read_result(config, entry, True, 0.0)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # held while building; another builder waits, then finds it
        if (entry / LIBRARY_NAME).is_file():
            return _read_result(config, entry, True, 0.0)
        workdir = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        workdir.chmod(0o755)  # mkdtemp makes it private; the cache entry is an ordinary directory
        try:
            log, seconds = _compile(config, toolchain, source, header, workdir)
            registers, spill_bytes = _ptxas_usage(log)
            (workdir / LOG_NAME).write_text(log)
            meta = {
                "config": dataclasses.asdict(config), "name": config.name,
                "cutlass_version": toolchain.cutlass.version_string, "cutlass_origin": toolchain.cutlass.origin,
                "nvcc": toolchain.nvcc, "nvcc_version": toolchain.nvcc_version, "flags": list(NVCC_FLAGS),
                "compile_seconds": round(seconds, 2), "registers": registers, "spill_bytes": spill_bytes,
                "abi_version": codegen.ABI_VERSION,
            }
            (workdir / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True))
            if entry.exists():  # a stale, incomplete entry (e.g. from a killed process without the lock)
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(workdir, entry)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    return BuildResult(config, entry / LIBRARY_NAME, False, seconds, registers, spill_bytes)


@dataclasses.dataclass(frozen=True)
class BuildOutcome:
    """Result of one config in ``build_many``: a BuildResult or the error it raised."""

    config: KernelConfig
    result: BuildResult | None
    error: Exception | None


def build_many(configs: Iterable[KernelConfig], jobs: int | None = None,
               progress: Callable[[BuildOutcome], None] | None = None) -> list[BuildOutcome]:
    """Build distinct ``configs`` in parallel (``jobs`` nvcc processes, default ``GEMM_BUILD_JOBS``).

    Never raises for a failing config: each outcome holds its result or
    error (in input order, duplicates removed). ``progress`` is called from
    the calling thread as each build finishes.
    """
    unique = list(dict.fromkeys(configs))
    if not unique:
        return []
    toolchain = find_toolchain()  # fail once, early, when nvcc or headers are missing
    jobs = max(1, min(jobs or envs.build_jobs(), len(unique)))
    outcomes: dict[KernelConfig, BuildOutcome] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(build, config, toolchain): config for config in unique}
        for future in concurrent.futures.as_completed(futures):
            config = futures[future]
            try:
                outcome = BuildOutcome(config, future.result(), None)
            except Exception as exc:  # reported per config, the others still build
                outcome = BuildOutcome(config, None, exc)
            outcomes[config] = outcome
            if progress is not None:
                progress(outcome)
    return [outcomes[config] for config in unique]
