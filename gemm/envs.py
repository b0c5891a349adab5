"""Every environment variable the package reads, in one place.

Other modules call these functions instead of touching ``os.environ`` so the
set of knobs stays discoverable and documented.

| variable | meaning | default |
|---|---|---|
| ``GEMM_CONFIG_DIR`` | the user config directory (holding ``<device_name>/`` folders): where ``gemm tune``, ``gemm predict`` and ``gemm import`` write by default, read by the op before the shipped configs | ``$XDG_DATA_HOME/gemm/tuned_configs`` or ``~/.local/share/gemm/tuned_configs`` |
| ``GEMM_CACHE_DIR`` | where JIT-built CUTLASS kernels are cached | ``$XDG_CACHE_HOME/gemm`` or ``~/.cache/gemm`` |
| ``GEMM_CUTLASS_DIR`` | a CUTLASS source tree (holding ``include/``) to build against instead of the ``nvidia-cutlass`` wheel's headers | unset |
| ``GEMM_NVCC`` | the nvcc executable | ``$CUDA_HOME/bin/nvcc`` or ``nvcc`` on ``PATH`` |
| ``GEMM_BUILD_JOBS`` | parallel nvcc processes (a positive integer) | number of CPUs |
| ``GEMM_CHECK_SCALES`` | ``1``: the op checks that its scales are finite (one ``isfinite`` reduction per call, skipped while compiling or capturing a CUDA graph) | ``0`` |
| ``XDG_DATA_HOME`` | base of the default user config directory and user data (read, not owned) | ``~/.local/share`` |
| ``TRITON_INTERPRET`` | run Triton kernels in the CPU interpreter (read, not owned; ``--interpret`` sets it) | unset |
| ``CUDA_VISIBLE_DEVICES`` | the GPUs a process sees (not owned; a per-GPU tuning worker pins itself with it) | unset |

The shipped configs (``gemm/tuned_configs``) are only ever read: nothing the package does by default
writes into the installed package. ``check_environment`` checks every variable's value up front
(the command line calls it before any command), raising ``EnvError`` naming the variable.

Two variables are also written here, for processes the package starts itself:
``use_triton_interpreter`` and ``pin_cuda_devices``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parent


class EnvError(ValueError):
    """An environment variable holds a value the package cannot use; the message names it and what is expected."""


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


def shipped_config_root() -> Path:
    """The ``tuned_configs/`` directory shipped with the project (read, never written by default).

    ``gemm/tuned_configs`` links to the repository's top-level ``tuned_configs/``
    in a checkout and is a real copy inside an installed wheel.
    """
    return _PACKAGE_ROOT / "tuned_configs"


def shipped_engine_config_root() -> Path:
    """The ``engine_configs/`` directory shipped with the project: engine-format files (the engines' own, as
    baselines, and the project's measured ones), read only. Linked from ``gemm/engine_configs`` like
    ``tuned_configs``."""
    return _PACKAGE_ROOT / "engine_configs"


def user_config_root() -> Path:
    """The user config directory: ``GEMM_CONFIG_DIR``, else ``$XDG_DATA_HOME/gemm/tuned_configs``, else
    ``~/.local/share/gemm/tuned_configs``. Commands write here by default; the op reads it first."""
    override = _get("GEMM_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    xdg = _get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "gemm" / "tuned_configs"


def config_root() -> Path:
    """Where configs are written by default: the user config directory (``user_config_root``)."""
    return user_config_root()


def config_roots() -> tuple[Path, ...]:
    """Where the op looks for configs, in order: the user config directory, then the shipped configs."""
    roots = []
    for root in (user_config_root(), shipped_config_root()):
        if not any(_same_path(root, seen) for seen in roots):
            roots.append(root)
    return tuple(roots)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/gemm`` or ``~/.local/share/gemm``: where other per-user outputs (a refitted cost
    model) go by default."""
    xdg = _get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "gemm"


def engine_config_root(engine: str) -> Path:
    """Where ``gemm tune --engine ENGINE`` writes by default: ``<user data dir>/engine_configs/<engine>`` (its
    native files, measured in the engine's kernel, under ``<device_name>/``; apart from the user config
    directory, which the op reads)."""
    return user_data_dir() / "engine_configs" / engine


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
    """How many nvcc processes may run at once; EnvError for a ``GEMM_BUILD_JOBS`` that is not a positive int."""
    value = _get("GEMM_BUILD_JOBS")
    if value:
        try:
            jobs = int(value)
        except ValueError:
            jobs = 0
        if jobs < 1:
            raise EnvError(f"GEMM_BUILD_JOBS must be a positive integer (parallel nvcc processes), got {value!r}")
        return jobs
    return max(1, os.cpu_count() or 1)


_FLAG_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                "off": False}


def check_scales() -> bool:
    """True when the op checks that its scales are finite (``GEMM_CHECK_SCALES=1``); EnvError for a value
    that is not a yes/no flag."""
    value = _get("GEMM_CHECK_SCALES")
    if value is None:
        return False
    try:
        return _FLAG_VALUES[value.strip().lower()]
    except KeyError:
        raise EnvError(f"GEMM_CHECK_SCALES must be 1 or 0 (also true/false, yes/no, on/off), got {value!r}") from None


def _not_a_file(name: str) -> None:
    value = _get(name)
    if value and Path(value).expanduser().exists() and not Path(value).expanduser().is_dir():
        raise EnvError(f"{name}={value} is a file; it must name a directory (made if missing)")


def check_environment() -> None:
    """Check every variable this package owns; EnvError naming the first bad one and what it must be."""
    _not_a_file("GEMM_CONFIG_DIR")
    _not_a_file("GEMM_CACHE_DIR")
    cutlass = _get("GEMM_CUTLASS_DIR")
    if cutlass and not Path(cutlass).expanduser().is_dir():
        raise EnvError(f"GEMM_CUTLASS_DIR={cutlass} is not a directory; it must name a CUTLASS source tree "
                       f"(the folder holding include/), or be unset to use the nvidia-cutlass wheel")
    nvcc = _get("GEMM_NVCC")
    if nvcc and not (shutil.which(nvcc) if os.sep not in nvcc else os.access(Path(nvcc).expanduser(), os.X_OK)):
        raise EnvError(f"GEMM_NVCC={nvcc} is not an executable nvcc; name the nvcc binary (or unset it to use "
                       f"$CUDA_HOME/bin/nvcc or nvcc on PATH)")
    build_jobs()
    check_scales()
