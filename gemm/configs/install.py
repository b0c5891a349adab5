"""Engine files into the folder an installed engine reads them from, keeping what they replace.

vLLM reads its block-FP8 Triton configs only from ``vllm/model_executor/layers/quantization/utils/configs/``
in its installed package and SGLang only from ``sglang/kernels/ops/gemm/configs/``; neither has a variable
pointing elsewhere (``gemm.configs.engine_targets``). ``engine_config_dir`` finds that folder without
importing the engine (importing one starts far more than a file lookup needs). ``install_config`` exports
a native file (``gemm.configs.export``) and writes it there atomically, first copying the file it replaces
to ``<folder>/.gemm-backups/<UTC time>/`` (the engines look files up by exact name, so the copies are never
read); restoring one is copying it back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from gemm.configs.engine_targets import Engine, engine_named
from gemm.configs.export import engine_export
from gemm.configs.schema import ConfigError, ConfigWarning
from gemm.configs.store import atomic_write_json, describe_ms, load_config_file, naming, read_json

BACKUP_DIR = ".gemm-backups"


class EngineNotFound(ConfigError):
    """The engine's package, or its config folder, is not where it was looked for."""


def _package_dir(engine: Engine, search_paths: Iterable[Path] | None) -> Path:
    if search_paths is None:
        # find_spec of a top-level name locates the package without running it.
        spec = importlib.util.find_spec(engine.package)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise EngineNotFound(f"{engine.title} is not installed for this Python ({sys.executable}); name the "
                                 f"site-packages folder of the Python that runs it with --engine-path DIR")
        return Path(locations[0])
    searched = []
    for root in search_paths:
        root = Path(root).expanduser()
        for candidate in (root / engine.package, root):
            if candidate.name == engine.package and (candidate / "__init__.py").is_file():
                return candidate
        searched.append(str(root))
    raise EngineNotFound(f"no {engine.title} package ({engine.package}/__init__.py) in {', '.join(searched)}; "
                         f"name the site-packages folder holding it")


def engine_config_dir(name: str, search_paths: Iterable[Path] | None = None) -> Path:
    """The folder the installed engine ``name`` ("vllm" or "sglang") reads block-FP8 configs from.

    ``search_paths`` None looks the package up for this Python; else each path is a folder holding the
    package (a site-packages) or the package itself. Raises EngineNotFound naming where it looked.
    """
    engine = engine_named(name)
    package = _package_dir(engine, search_paths)
    folder = package.joinpath(*engine.config_dir)
    if not folder.is_dir():
        raise EngineNotFound(f"found {engine.title} at {package} but not its config folder {folder}; this version "
                             f"keeps them elsewhere ({engine.title} {engine.version} reads "
                             f"{'/'.join(engine.config_dir)})")
    return folder


@dataclass(frozen=True)
class Installed:
    """Where a file went, the copy of the file it replaced (None: there was none, or it was the same)."""

    path: Path
    backup: Path | None
    unchanged: bool = False


def backup_stamp() -> str:
    """The UTC time that names one run's backup folder, e.g. ``20250102T030405Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _copy_atomically(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise naming(exc, dst) from None
        raise


def install_document(document: dict, file_name: str, config_dir: Path, stamp: str) -> Installed:
    """Write ``document`` as ``config_dir/file_name`` (whole or not at all), first copying a different file
    of that name to ``config_dir/.gemm-backups/<stamp>/`` (a copy already there is kept: it is the older
    one). An identical file is left alone."""
    config_dir = Path(config_dir)
    target = config_dir / file_name
    backup = None
    if target.exists():
        try:
            if read_json(target) == document:
                return Installed(target, None, unchanged=True)
        except ConfigError:
            pass  # an unreadable file is replaced like any other, after its copy
        backup = config_dir / BACKUP_DIR / stamp / file_name
        if not backup.exists():
            try:
                backup.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise naming(exc, backup.parent) from None
            _copy_atomically(target, backup)
    atomic_write_json(target, document, indent=4)
    return Installed(target, backup)


def install_config(src: Path, fmt: str, config_dir: Path, stamp: str, stand_ins: bool = False,
                   force: bool = False) -> Installed:
    """Export the native file ``src`` for engine ``fmt`` and install it in ``config_dir`` (``engine_config_dir``).

    As ``gemm.configs.export.export_config``: measured entries only unless ``stand_ins``, and a file with
    stand-ins never replaces the engine's file unless ``force``; warnings (ConfigWarning) for substituted or
    omitted M. Returns where it went and its backup.
    """
    src = Path(src)
    export = engine_export(load_config_file(src), fmt, str(src), stand_ins)
    target = Path(config_dir) / export.file_name
    if export.stand_ins and target.exists() and not force:
        raise ConfigError(f"{target} is the engine's file and this export fills {describe_ms(export.stand_ins)} "
                          f"with stand-ins; it is kept (--force replaces it, keeping a backup)")
    if export.notes:
        warnings.warn(f"exporting {src.name} to {fmt}: " + "; ".join(export.notes), ConfigWarning, stacklevel=2)
    return install_document(export.document, export.file_name, config_dir, stamp)
