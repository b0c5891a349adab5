"""Every environment variable the package reads, in one place.

Other modules call these functions instead of touching ``os.environ`` so the
set of knobs stays discoverable and documented.

| variable | meaning | default |
|---|---|---|
| ``GEMM_CONFIG_DIR`` | directory of tuned config files (holding ``<device_name>/`` folders) | the shipped ``tuned_configs/`` (``gemm/tuned_configs``) |
| ``GEMM_CACHE_DIR`` | where JIT-built CUTLASS kernels are cached | ``$XDG_CACHE_HOME/gemm`` or ``~/.cache/gemm`` |
| ``GEMM_CUTLASS_DIR`` | a CUTLASS source tree (holding ``include/``) to build against instead of the ``nvidia-cutlass`` wheel's headers | unset |
| ``GEMM_NVCC`` | the nvcc executable | ``$CUDA_HOME/bin/nvcc`` or ``nvcc`` on ``PATH`` |
| ``GEMM_BUILD_JOBS`` | parallel nvcc processes | number of CPUs |
| ``TRITON_INTERPRET`` | run Triton kernels in the CPU interpreter (read, not owned; ``--interpret`` sets it) | unset |
| ``CUDA_VISIBLE_DEVICES`` | the GPUs a process sees (not owned; a per-GPU tuning worker pins itself with it) | unset |

Two variables are also written here, for processes the package starts itself:
``use_triton_interpreter`` and ``pin_cuda_devices``.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parent


def _get(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def triton_interpret() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return _get("TRITON_INTERPRET") in ("1", "true", "True", "yes")


def interpreter_variables() -> dict[str, str]:
    """The variables that put a process's Triton kernels in the CPU interpreter (for processes started elsewhere,
    e.g. Ray tasks)."""
    return {"TRITON_INTERPRET": "1"}


def use_triton_interpreter() -> None:
    """Run this process's Triton kernels in the CPU interpreter.

    Triton picks interpreter or compiler when a kernel is defined: call this before anything imports one.
    """
    os.environ.update(interpreter_variables())


def pin_cuda_devices(visible: str) -> None:
    """Let this process (and the processes it starts) see only the GPUs ``visible`` names (indices or UUIDs).

    Call it before anything in the process touches CUDA.
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = visible


def default_config_root() -> Path:
    """The ``tuned_configs/`` directory shipped with the project.

    ``gemm/tuned_configs`` links to the repository's top-level ``tuned_configs/``
    in a checkout and is a real copy inside an installed wheel.
    """
    return _PACKAGE_ROOT / "tuned_configs"


def config_root() -> Path:
    """Directory holding ``<device_name>/`` folders of tuned configs."""
    override = _get("GEMM_CONFIG_DIR")
    return Path(override).expanduser() if override else default_config_root()


def cache_dir() -> Path:
    """Root of on-disk caches (JIT-built kernels)."""
    override = _get("GEMM_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = _get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gemm"


def cutlass_dir() -> Path | None:
    """A user-named CUTLASS tree, or None to use the ``nvidia-cutlass`` wheel."""
    override = _get("GEMM_CUTLASS_DIR")
    return Path(override).expanduser() if override else None


def nvcc_path() -> str | None:
    """Explicit nvcc path: ``GEMM_NVCC``, else ``$CUDA_HOME/bin/nvcc`` if it exists, else None."""
    explicit = _get("GEMM_NVCC")
    if explicit:
        return explicit
    cuda_home = _get("CUDA_HOME") or _get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return None


def build_jobs() -> int:
    """How many nvcc processes may run at once."""
    value = _get("GEMM_BUILD_JOBS")
    if value:
        try:
            jobs = int(value)
        except ValueError:
            raise ValueError(f"GEMM_BUILD_JOBS must be a positive integer, got {value!r}") from None
        if jobs < 1:
            raise ValueError(f"GEMM_BUILD_JOBS must be a positive integer, got {value!r}")
        return jobs
    return max(1, os.cpu_count() or 1)
