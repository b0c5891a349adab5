"""Reading, merging, writing and looking up native config files.

Writers never overwrite each other: ``write_config`` takes an exclusive
``fcntl.flock`` on a sidecar lock file (``.<file name>.lock`` beside the
config), re-reads what is on disk, merges (the new entries win per M), writes a
temp file in the same directory and ``os.replace``s it over the config. A crash
at any point leaves either the old file or the new one, never a mix. Locks are
advisory and need a local file system or one with working ``flock`` (NFS v4
does; some network mounts do not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

from gemm import envs
from gemm.configs.naming import config_path, parse_config_filename
from gemm.configs.schema import (
    ConfigEntry, ConfigError, ConfigFile, ConfigWarning, config_from_json, config_to_json,
)


def looks_like_engine_file(raw: Any) -> bool:
    """True for a vLLM/SGLang document: an object whose keys are all decimal batch sizes."""
    return isinstance(raw, dict) and bool(raw) and all(isinstance(key, str) and key.isdigit() for key in raw)


def read_json(path: Path) -> Any:
    """Parse a JSON file; ConfigError naming the file for a missing, unreadable or malformed one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def name_mismatches(path: Path, config: ConfigFile) -> list[str]:
    """Where a config file's name (if it is a config file name) disagrees with its content."""
    parsed = parse_config_filename(path)
    if parsed is None:
        return []
    problems = []
    for field, named, held in (("n", parsed.n, config.n), ("k", parsed.k, config.k),
                               ("device_name", parsed.device_name, config.device_name),
                               ("block_shape", parsed.block_shape, tuple(config.block_shape))):
        if named != held:
            problems.append(f"the file name says {field}={list(named) if isinstance(named, tuple) else named} "
                            f"but the content has {field}={list(held) if isinstance(held, tuple) else held}")
    return problems


def load_config_file(path) -> ConfigFile:
    """Read a native config file.

    Raises ConfigError naming the file and every offending field: missing or
    malformed file, schema violations, a name that disagrees with the content,
    or an engine (vLLM/SGLang) file, which must be converted with
    ``import_config`` first.
    """
    path = Path(path)
    raw = read_json(path)
    if looks_like_engine_file(raw):
        raise ConfigError(f"{path}: this is a vLLM/SGLang engine file (its keys are batch sizes), not a native "
                          f"config; convert it with `gemm import` (gemm.configs.import_config)")
    config = config_from_json(raw, str(path))
    mismatches = name_mismatches(path, config)
    if mismatches:
        raise ConfigError(f"{path}: " + "; ".join(mismatches))
    return config


# --------------------------------------------------------------------------- merge + atomic write


#: Which origin of an entry wins a merge at one M: a measurement beats an import beats a prediction.
SOURCE_RANK = {"predicted": 0, "imported": 1, "measured": 2}


def merge_configs(old: ConfigFile, new: ConfigFile, force: bool = False) -> ConfigFile:
    """``old``'s entries updated with ``new``'s, under ``new``'s header and provenance (see ``merge_report``)."""
    return merge_report(old, new, force)[0]


def merge_report(old: ConfigFile, new: ConfigFile, force: bool = False) -> tuple[ConfigFile, dict[int, str]]:
    """(merged config, {M: kind} of ``old``'s entries kept over ``new``'s at the same M).

    Per M, ``new``'s entry replaces ``old``'s unless ``old``'s comes from a better source (measured beats
    imported beats predicted, ``SOURCE_RANK``); ``force`` lets ``new`` win everywhere. M only one side has
    are kept. An entry whose origin (kind and versions) differs from the merged file's keeps its own
    provenance, so an imported or predicted entry never passes as measured.
    Raises ConfigError when the two describe different problems or devices.
    """
    differing = [f"{name} {getattr(old, name)!r} vs {getattr(new, name)!r}"
                 for name in ("device_name", "arch", "n", "k", "block_shape", "out_dtype")
                 if getattr(old, name) != getattr(new, name)]
    if differing:
        raise ConfigError("cannot merge configs of different problems or devices: " + ", ".join(differing))

    def relabel(entry: ConfigEntry, file_provenance) -> ConfigEntry:
        origin = entry.provenance or file_provenance
        return dataclasses.replace(entry, provenance=None if origin.same_origin(new.provenance) else origin)

    new_rank = SOURCE_RANK[new.provenance.kind]
    kept = {m: old.provenance_of(m).kind for m in old.entries
            if m in new.entries and not force and SOURCE_RANK[old.provenance_of(m).kind] > new_rank}
    merged = {m: relabel(e, old.provenance) for m, e in old.entries.items() if m not in new.entries or m in kept}
    merged.update({m: relabel(e, new.provenance) for m, e in new.entries.items() if m not in kept})
    return dataclasses.replace(new, entries=dict(sorted(merged.items()))), kept


def describe_ms(ms) -> str:
    """``M=1,2,4`` for a few M values, ``18 M (1..4096)`` for many."""
    ms = sorted(ms)
    return f"M={','.join(map(str, ms))}" if len(ms) <= 4 else f"{len(ms)} M ({ms[0]}..{ms[-1]})"


class KeptEntriesWarning(ConfigWarning):
    """A write kept existing entries from a better source over the new ones at the same M."""


def kept_message(path: Path, kept: dict[int, str], new_kind: str) -> str:
    """One line saying which existing entries a write of ``new_kind`` entries kept, and how to replace them."""
    by_kind: dict[str, list[int]] = {}
    for m, kind in sorted(kept.items()):
        by_kind.setdefault(kind, []).append(m)
    listed = "; ".join(f"{len(ms)} {kind} entr{'y' if len(ms) == 1 else 'ies'} ({describe_ms(ms)})"
                       for kind, ms in by_kind.items())
    return (f"{path.name}: kept {listed} over the {new_kind} ones (measured beats imported beats predicted); "
            f"force=True (--force) replaces them")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``.<name>.lock`` beside ``path`` (kept: removing it would race other lockers)."""
    lock_path = Path(path).with_name(f".{Path(path).name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name when it has none (a failed write names no file), so that the
    one line the command line makes of it says where."""
    if exc.filename is not None:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write_json(path: Path, document: Any, indent: int = 2) -> None:
    """Write ``document`` as JSON to ``path`` via a temp file in the same directory and ``os.replace``.

    Readers see the old file or the complete new one; on any failure the temp
    file is removed and the old file is untouched (an OSError names ``path``).
    """
    def write(handle) -> None:
        json.dump(document, handle, indent=indent)
        handle.write("\n")

    _atomic_write(Path(path), write)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all, as ``atomic_write_json`` does."""
    _atomic_write(Path(path), lambda handle: handle.write(text))


def _atomic_write(path: Path, write) -> None:
    """``write(handle)`` into a temp file beside ``path``, then ``os.replace`` it over ``path``; a replaced
    file keeps its permissions, a new one is readable by all."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); configs are meant to be shared like the file they replace.
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise naming(exc, path) from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not every file system allows this
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_config(root: Path, config: ConfigFile, force: bool = False) -> Path:
    """Write ``config`` to ``root/<device_name>/<file name>``, merged with what is already there.

    Atomic, and safe against concurrent writers (processes or machines sharing
    the directory with working flock): each holds the file's lock while it
    reads, merges and replaces it, so every writer's M entries survive; the
    newest write wins for an M written twice, unless the entry there comes from
    a better source (``merge_report``; ``force`` replaces it anyway), which is
    kept and reported in one ``KeptEntriesWarning``. Raises ConfigError, leaving
    the file alone, when the existing file is corrupt or describes another
    problem. Returns the path written.
    """
    if not isinstance(config, ConfigFile):
        raise TypeError(f"config must be a ConfigFile, got {type(config).__name__}")
    path = config_path(Path(root), config.device_name, config.n, config.k, config.block_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        merged, kept = config, {}
        if path.exists():
            try:
                merged, kept = merge_report(load_config_file(path), config, force)
            except ConfigError as exc:
                raise ConfigError(f"refusing to overwrite {path}: {exc}. Fix or move the file away first") from None
        atomic_write_json(path, config_to_json(merged))
    forget_cached(path)
    if kept:
        warnings.warn(kept_message(path, kept, config.provenance.kind), KeptEntriesWarning, stacklevel=2)
    return path


# --------------------------------------------------------------------------- lookup


_CACHE: dict[str, ConfigFile | None | ConfigError] = {}
_CACHE_LOCK = threading.Lock()


def forget_cached(path: Path | None = None) -> None:
    """Drop ``find_config``'s cached result for ``path`` (every result when None)."""
    with _CACHE_LOCK:
        if path is None:
            _CACHE.clear()
        else:
            _CACHE.pop(str(path), None)


def find_config(device_name: str, n: int, k: int, block_shape=(128, 128), root: Path | None = None) -> ConfigFile | None:
    """The native config of (device, N, K, block shape) under ``root`` (default: the user config directory,
    ``gemm.envs.config_root()``; ``find_configs`` looks in every root the op reads).

    Returns None when there is no file. Results, including errors, are cached
    per path until ``forget_cached``/``gemm.dispatch.clear_caches`` (or a
    ``write_config`` of that file in this process). Raises ConfigError for a
    corrupt or mismatched file.
    """
    path = config_path(Path(root) if root is not None else envs.config_root(), device_name, n, k, block_shape)
    key = str(path)
    with _CACHE_LOCK:
        if key in _CACHE:
            cached = _CACHE[key]
            if isinstance(cached, ConfigError):
                raise cached
            return cached
    try:
        result: ConfigFile | None | ConfigError = load_config_file(path) if path.is_file() else None
    except ConfigError as exc:
        result = exc
    with _CACHE_LOCK:
        _CACHE[key] = result
    if isinstance(result, ConfigError):
        raise result
    return result


def rank_ms(tuned_ms, m: int) -> list[int]:
    """The tuned M values, nearest to ``m`` first (ties: the smaller tuned M first)."""
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m must be a positive int, got {m!r}")
    return sorted(tuned_ms, key=lambda tuned: (abs(tuned - m), tuned))


def ranked_entries(config: ConfigFile, m: int) -> list[tuple[int, ConfigEntry]]:
    """Every entry of ``config``, nearest tuned M to ``m`` first (ties: the smaller tuned M first)."""
    return [(tuned, config.entries[tuned]) for tuned in rank_ms(config.entries, m)]


def nearest_entry(config: ConfigFile, m: int) -> tuple[int, ConfigEntry]:
    """(tuned M, entry) nearest to ``m``.

    Nearest means the smallest ``|tuned M - m|``; on a tie the smaller tuned M
    wins, which is also what vLLM and SGLang pick from their ascending files
    (``min`` over the keys keeps the first of equals). Raises ConfigError for a
    config without entries.
    """
    ranked = ranked_entries(config, m)
    if not ranked:
        raise ConfigError(f"config for N={config.n} K={config.k} on {config.device_name} has no entries")
    return ranked[0]


def find_configs(device_name: str, n: int, k: int, block_shape=(128, 128),
                 roots: tuple[Path, ...] | None = None) -> list[tuple[Path, ConfigFile | ConfigError]]:
    """(path, config) of each root holding a config of (device, N, K, block shape), in lookup order
    (default ``gemm.envs.config_roots()``: the user config directory, then the shipped configs); a file
    that cannot be used comes as its ConfigError instead of a config. Cached like ``find_config``."""
    found: list[tuple[Path, ConfigFile | ConfigError]] = []
    for root in roots if roots is not None else envs.config_roots():
        path = config_path(Path(root), device_name, n, k, block_shape)
        try:
            config = find_config(device_name, n, k, block_shape, root)
        except ConfigError as exc:
            found.append((path, exc))
            continue
        if config is not None:
            found.append((path, config))
    return found
