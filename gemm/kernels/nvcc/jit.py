"""nvcc builds of generated C++ kernel libraries, cached on disk by content.

A ``BuildSpec`` is one translation unit (``kernel.cu``) plus the headers it
includes by name, for one backend family. It becomes
``<cache_dir>/<family>/<key>/`` holding ``kernel.so``, the exact sources it
was built from, ``build.log`` (nvcc's output, with ptxas register/spill
counts) and ``meta.json``. ``<key>`` hashes the sources, the CUTLASS version,
the nvcc flags and version and the family's ABI version, so changing any of
them rebuilds and nothing stale is ever loaded.

A build happens in a temporary directory beside the cache entry and is
renamed into place (atomic), under a file lock per key, so concurrent
processes and threads build each library once. Building needs no GPU.
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
from typing import Any, Callable, Iterable, Sequence

from gemm import envs
from gemm.kernels.base import CompileError
from gemm.kernels.nvcc.toolchain import NVCC_FLAGS, Toolchain, find_toolchain

LIBRARY_NAME = "kernel.so"
SOURCE_NAME = "kernel.cu"
LOG_NAME = "build.log"
META_NAME = "meta.json"
#: Longest a single nvcc run may take (CUTLASS collectives take about 35-60 s on one core).
COMPILE_TIMEOUT_S = 1800
#: How much of a failing compiler log goes into the exception message.
LOG_TAIL_CHARS = 20000


class NvccError(CompileError):
    """nvcc failed; ``log`` holds its whole output and ``command`` the command line."""

    def __init__(self, message: str, log: str = "", command: Sequence[str] = ()):
        super().__init__(message)
        self.log = log
        self.command = list(command)


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    """One library to build: ``source`` is written as ``kernel.cu`` beside ``headers`` ((file name, text) pairs).

    ``family`` names the cache folder and the messages ("cutlass", "sm90"); ``name`` is a readable
    identifier of the instantiation; ``abi_version`` is the family's C ABI version (part of the key);
    ``meta`` is extra JSON-able information stored in ``meta.json``.
    """

    family: str
    name: str
    source: str
    headers: tuple[tuple[str, str], ...]
    abi_version: int
    meta: tuple[tuple[str, Any], ...] = dataclasses.field(default=(), compare=False)  # not part of identity


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """One built (or found) library."""

    spec: BuildSpec
    path: Path             # the kernel.so
    cached: bool           # True if it was already in the cache
    seconds: float         # compile time (0 when cached)
    registers: int | None  # per thread, from ptxas (None if not reported)
    spill_bytes: int | None  # spill stores + loads in bytes, from ptxas


@dataclasses.dataclass(frozen=True)
class BuildOutcome:
    """Result of one spec in ``build_many``: a BuildResult or the error it raised."""

    spec: BuildSpec
    result: BuildResult | None
    error: Exception | None


def cache_root(family: str) -> Path:
    """``<GEMM_CACHE_DIR or ~/.cache/gemm>/<family>``."""
    return envs.cache_dir() / family


def cache_key(spec: BuildSpec, toolchain: Toolchain, flags: Sequence[str] = NVCC_FLAGS) -> str:
    """Hex digest of everything that decides the built binary."""
    payload = {
        "source": spec.source,
        "cutlass_version": toolchain.cutlass.version_string,
        "nvcc_version": toolchain.nvcc_version,
        "flags": list(flags),
        "abi": spec.abi_version,
    }
    if len(spec.headers) == 1:  # the CUTLASS family's keys predate multi-header specs; keep them stable
        payload["header"] = spec.headers[0][1]
    else:
        payload["headers"] = [list(h) for h in spec.headers]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def ptxas_usage(log: str) -> tuple[int | None, int | None]:
    """(registers, spill bytes) of the kernel from ``-Xptxas=-v`` output (the largest seen)."""
    registers = [int(r) for r in re.findall(r"Used (\d+) registers", log)]
    spills = [int(s) + int(l) for s, l in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)]
    return (max(registers) if registers else None, max(spills) if spills else None)


def _compile(spec: BuildSpec, toolchain: Toolchain, workdir: Path) -> tuple[str, float]:
    (workdir / SOURCE_NAME).write_text(spec.source)
    for name, text in spec.headers:
        (workdir / name).write_text(text)
    command = [toolchain.nvcc, *NVCC_FLAGS, f"-I{workdir}"]
    command += [f"-I{d}" for d in toolchain.cutlass.include_dirs]
    command += ["-shared", "-o", str(workdir / LIBRARY_NAME), str(workdir / SOURCE_NAME)]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NvccError(f"nvcc timed out after {COMPILE_TIMEOUT_S} s building {spec.name}",
                        str(exc.output or ""), command) from exc
    except OSError as exc:
        raise NvccError(f"cannot run {toolchain.nvcc}: {exc}", "", command) from exc
    seconds = time.perf_counter() - start
    log = (result.stdout or "") + (result.stderr or "")
    if result.returncode != 0 or not (workdir / LIBRARY_NAME).is_file():
        tail = log[-LOG_TAIL_CHARS:]
        raise NvccError(
            f"nvcc failed (exit {result.returncode}) building {spec.family} kernel {spec.name} "
            f"against CUTLASS {toolchain.cutlass.version_string} ({toolchain.cutlass.origin}), "
            f"nvcc {toolchain.nvcc_version}.\ncommand: {' '.join(command)}\ncompiler log"
            f"{' (last %d characters)' % LOG_TAIL_CHARS if len(log) > LOG_TAIL_CHARS else ''}:\n{tail}",
            log, command)
    return log, seconds


def _read_result(spec: BuildSpec, entry: Path, cached: bool, seconds: float) -> BuildResult:
    try:
        meta = json.loads((entry / META_NAME).read_text())
    except (OSError, ValueError):
        meta = {}
    return BuildResult(spec, entry / LIBRARY_NAME, cached, seconds, meta.get("registers"), meta.get("spill_bytes"))


def build(spec: BuildSpec, toolchain: Toolchain | None = None) -> BuildResult:
    """The shared library of ``spec``, compiled now unless the cache has it.

    Raises ``BackendUnavailable`` (no nvcc or headers) or ``NvccError`` (a
    ``CompileError`` carrying the compiler log). Needs no GPU.
    """
    toolchain = toolchain or find_toolchain()
    key = cache_key(spec, toolchain)
    root = cache_root(spec.family)
    entry = root / key
    if (entry / LIBRARY_NAME).is_file():
        return _read_result(spec, entry, True, 0.0)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # held while building; another builder waits, then finds it
        if (entry / LIBRARY_NAME).is_file():
            return _read_result(spec, entry, True, 0.0)
        workdir = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        workdir.chmod(0o755)  # mkdtemp makes it private; the cache entry is an ordinary directory
        try:
            log, seconds = _compile(spec, toolchain, workdir)
            registers, spill_bytes = ptxas_usage(log)
            (workdir / LOG_NAME).write_text(log)
            meta = {
                **dict(spec.meta), "name": spec.name, "family": spec.family,
                "cutlass_version": toolchain.cutlass.version_string, "cutlass_origin": toolchain.cutlass.origin,
                "nvcc": toolchain.nvcc, "nvcc_version": toolchain.nvcc_version, "flags": list(NVCC_FLAGS),
                "compile_seconds": round(seconds, 2), "registers": registers, "spill_bytes": spill_bytes,
                "abi_version": spec.abi_version,
            }
            (workdir / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True))
            if entry.exists():  # a stale, incomplete entry (e.g. from a killed process without the lock)
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(workdir, entry)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    return BuildResult(spec, entry / LIBRARY_NAME, False, seconds, registers, spill_bytes)


def build_many(specs: Iterable[BuildSpec], jobs: int | None = None,
               progress: Callable[[BuildOutcome], None] | None = None,
               toolchain: Toolchain | None = None) -> list[BuildOutcome]:
    """Build distinct ``specs`` in parallel (``jobs`` nvcc processes, default ``GEMM_BUILD_JOBS``).

    Never raises for a failing spec: each outcome holds its result or error
    (in input order, duplicates removed). ``progress`` is called from the
    calling thread as each build finishes. Raises ``BackendUnavailable`` once,
    before building, when nvcc or the headers are missing.
    """
    unique = list(dict.fromkeys(specs))
    if not unique:
        return []
    toolchain = toolchain or find_toolchain()
    jobs = max(1, min(jobs or envs.build_jobs(), len(unique)))
    outcomes: dict[BuildSpec, BuildOutcome] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(build, spec, toolchain): spec for spec in unique}
        for future in concurrent.futures.as_completed(futures):
            spec = futures[future]
            try:
                outcome = BuildOutcome(spec, future.result(), None)
            except Exception as exc:  # reported per spec, the others still build
                outcome = BuildOutcome(spec, None, exc)
            outcomes[spec] = outcome
            if progress is not None:
                progress(outcome)
    return [outcomes[spec] for spec in unique]
