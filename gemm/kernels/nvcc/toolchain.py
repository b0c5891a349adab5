"""Finding the compiler and the CuTe/CUTLASS headers the C++ backends build with.

Shared by every backend compiled with nvcc (``gemm.kernels.cutlass`` and ``gemm.kernels.sm90``).

* nvcc: ``gemm.envs.nvcc_path()`` (``GEMM_NVCC`` or ``$CUDA_HOME/bin/nvcc``), else ``nvcc`` on ``PATH``.
* CUTLASS: the tree named by ``GEMM_CUTLASS_DIR`` (its ``include/`` and
  ``tools/util/include/``), else the headers shipped inside the
  ``nvidia-cutlass`` wheel (``cutlass_library/source/...``), located without
  importing the package.

The CUTLASS version comes from ``cutlass/version.h`` and decides which tiles
the CUTLASS backend offers. Anything missing raises ``BackendUnavailable`` saying
what to install or set.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

from gemm import envs
from gemm.kernels.base import BackendUnavailable

#: nvcc flags every kernel library is built with. ``-DNDEBUG`` matters for speed: without it
#: ptxas serializes the wgmma instructions (warning C7510) and the kernel runs ~1.3x slower.
NVCC_FLAGS = (
    "-gencode=arch=compute_90a,code=sm_90a",
    "-std=c++17",
    "-O3",
    "--expt-relaxed-constexpr",
    "-DNDEBUG",
    "-Xcompiler=-fPIC,-fvisibility=hidden",
    "-Xptxas=-v",  # register and spill counts go to the build log
)


@dataclasses.dataclass(frozen=True)
class CutlassHeaders:
    """Include directories of one CUTLASS installation and its version (major, minor, patch)."""

    include_dirs: tuple[Path, ...]
    version: tuple[int, int, int]
    origin: str  # where they were found, for messages

    @property
    def version_string(self) -> str:
        return ".".join(str(v) for v in self.version)


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """The compiler and headers of a build; everything in it is part of the cache key."""

    nvcc: str
    nvcc_version: str
    cutlass: CutlassHeaders


def find_nvcc() -> str:
    """Path of the nvcc executable; BackendUnavailable when there is none."""
    explicit = envs.nvcc_path()
    if explicit:
        if Path(explicit).is_file() or shutil.which(explicit):
            return explicit
        raise BackendUnavailable(f"nvcc not found at {explicit!r} (from GEMM_NVCC or CUDA_HOME)")
    found = shutil.which("nvcc")
    if found is None:
        raise BackendUnavailable(
            "nvcc not found: install the CUDA toolkit (12.8 or newer), put nvcc on PATH, or set GEMM_NVCC")
    return found


@functools.lru_cache(maxsize=8)
def nvcc_version(nvcc: str) -> str:
    """``"13.0.88"`` from ``nvcc --version``; BackendUnavailable if it does not run."""
    try:
        result = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"cannot run {nvcc} --version: {exc}") from exc
    match = re.search(r"\bV(\d+\.\d+\.\d+)", result.stdout) or re.search(r"release (\d+\.\d+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise BackendUnavailable(f"{nvcc} --version did not report a version: {result.stdout}{result.stderr}")
    return match.group(1)


def read_cutlass_version(include_dir: Path) -> tuple[int, int, int]:
    """(major, minor, patch) from ``<include_dir>/cutlass/version.h``."""
    header = Path(include_dir) / "cutlass" / "version.h"
    try:
        text = header.read_text()
    except OSError as exc:
        raise BackendUnavailable(f"cannot read the CUTLASS version from {header}: {exc}") from exc
    parts = []
    for name in ("MAJOR", "MINOR", "PATCH"):
        match = re.search(rf"#define\s+CUTLASS_{name}\s+(\d+)", text)
        if match is None:
            raise BackendUnavailable(f"{header} does not define CUTLASS_{name}")
        parts.append(int(match.group(1)))
    return tuple(parts)


def _headers_from_tree(root: Path, origin: str) -> CutlassHeaders:
    root = root.expanduser()
    if (root / "cutlass" / "version.h").is_file():  # the include directory itself
        include = root
        util = root.parent / "tools" / "util" / "include"
    else:
        include = root / "include"
        util = root / "tools" / "util" / "include"
    if not (include / "cutlass" / "version.h").is_file():
        raise BackendUnavailable(f"no CUTLASS headers in {root} ({origin}): expected include/cutlass/version.h")
    if not (util / "cutlass" / "util").is_dir():
        raise BackendUnavailable(f"no CUTLASS util headers in {util} ({origin}): expected tools/util/include/")
    return CutlassHeaders((include, util), read_cutlass_version(include), origin)


def find_cutlass() -> CutlassHeaders:
    """The CUTLASS headers to build against; BackendUnavailable when none are installed."""
    override = envs.cutlass_dir()
    if override is not None:
        return _headers_from_tree(override, "GEMM_CUTLASS_DIR")
    spec = importlib.util.find_spec("cutlass_library")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(
            "CUTLASS headers not found: install the nvidia-cutlass wheel (pip install nvidia-cutlass) "
            "or set GEMM_CUTLASS_DIR to a CUTLASS source tree (scripts/fetch_cutlass_headers.py extracts "
            "one from a wheel that bundles newer headers)")
    package = Path(next(iter(spec.submodule_search_locations)))
    return _headers_from_tree(package / "source", "nvidia-cutlass wheel")


def find_toolchain() -> Toolchain:
    """nvcc, its version and the CUTLASS headers; BackendUnavailable naming whatever is missing."""
    nvcc = find_nvcc()
    return Toolchain(nvcc, nvcc_version(nvcc), find_cutlass())


def cutlass_version_or_none() -> tuple[int, int, int] | None:
    """The CUTLASS version if headers are installed, else None (for choosing candidate tiles)."""
    try:
        return find_cutlass().version
    except BackendUnavailable:
        return None
