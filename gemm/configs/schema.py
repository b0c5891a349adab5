"""The native tuned-config schema: dataclasses, JSON encoding and structural checks.

A native config file holds the tuned choice for one (device, N, K, weight-scale
block) at several M::

    {
      "schema_version": 1,
      "device_name": "NVIDIA_H100_80GB_HBM3",      # normalized: spaces -> underscores
      "arch": "H100",
      "n": 7168, "k": 2304,
      "block_shape": [128, 128],
      "out_dtype": "bfloat16",
      "provenance": {"kind": "measured", "tool_version": "0.1.0", "torch": "2.11.0",
                     "triton": "3.6.0", "cutlass": "4.2.0", "date": "2025-01-01T00:00:00+00:00",
                     "model_version": null},
      "entries": {
        "1":  {"backend": "triton", "params": {...}, "us": 9.8,
               "engine_triton": {...}},            # optional: best plain Triton config seen
        "64": {"backend": "cutlass", "params": {...}, "us": 14.1,
               "provenance": {...}}                # optional: only where it differs from the file's
      }
    }

Entry keys are M values written as decimal strings (JSON object keys), sorted
ascending. This module checks structure and types only; whether ``params``
suit their backend is checked by ``gemm.configs.validation``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from dataclasses import dataclass, field
from typing import Any

from gemm.arch import normalize_device_name

SCHEMA_VERSION = 1
PROVENANCE_KINDS = ("measured", "predicted", "imported")
OUT_DTYPE_NAMES = ("bfloat16", "float16", "float32")

_TOP_KEYS = ("schema_version", "device_name", "arch", "n", "k", "block_shape", "out_dtype", "provenance", "entries")
_PROVENANCE_KEYS = ("kind", "tool_version", "torch", "triton", "cutlass", "date", "model_version")
_ENTRY_KEYS = ("backend", "params", "us", "engine_triton", "provenance")


class ConfigError(ValueError):
    """A config file (or a config object) is unreadable or breaks the schema; the message names file and field."""


class ConfigWarning(UserWarning):
    """A tuned config could not be used as written and something else was used instead."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Provenance:
    """Where a config's numbers come from.

    kind: "measured" (timed on the device), "predicted" (cost model, not run) or
    "imported" (converted from an engine's file). Versions are those of the
    software that produced the numbers (None when unknown or not used); ``date``
    is ISO 8601. ``model_version`` names the cost model of a prediction.
    """

    kind: str
    tool_version: str
    torch: str | None
    triton: str | None
    cutlass: str | None
    date: str
    model_version: str | None = None

    def __post_init__(self) -> None:
        problems = provenance_problems(dataclasses.asdict(self), "provenance")
        if problems:
            raise ConfigError("; ".join(problems))

    def same_origin(self, other: "Provenance") -> bool:
        """Same kind and software versions (the date is the time of the last write, so it is ignored)."""
        def origin(p: "Provenance") -> tuple:
            return (p.kind, p.tool_version, p.torch, p.triton, p.cutlass, p.model_version)

        return origin(self) == origin(other)

    @classmethod
    def current(cls, kind: str, model_version: str | None = None) -> "Provenance":
        """Provenance stamped with this process's gemm/torch/triton/CUTLASS versions and the current UTC time.

        ``cutlass`` is the version of the headers CUTLASS kernels are built with: the ``nvidia-cutlass``
        wheel's version (e.g. ``"4.2.0.0"``), or with ``GEMM_CUTLASS_DIR`` the version its
        ``cutlass/version.h`` declares (e.g. ``"4.5.0"``).
        """
        return cls(kind=kind, tool_version=gemm_version(), torch=_module_version("torch"),
                   triton=_module_version("triton"), cutlass=_cutlass_version(),
                   date=utc_now(), model_version=model_version)


@dataclass(frozen=True)
class ConfigEntry:
    """The choice for one tuned M: a backend name, its params (JSON scalars) and the time measured.

    ``us`` is None for predicted or imported entries. ``engine_triton`` is an
    optional plain Triton config (split_k=1, no TMA, not persistent) that
    engines' kernels can run, used by ``export_config``. ``provenance`` is set
    only when this entry's origin differs from its file's (after a merge).
    """

    backend: str
    params: dict
    us: float | None = None
    engine_triton: dict | None = None
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        raw = {"backend": self.backend, "params": self.params, "us": self.us, "engine_triton": self.engine_triton}
        problems = _entry_problems(raw, "entry")
        if self.provenance is not None and not isinstance(self.provenance, Provenance):
            problems.append(f"entry.provenance must be a Provenance or None, got {type(self.provenance).__name__}")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class ConfigFile:
    """Tuned configs of one (device_name, N, K, block_shape); ``entries`` maps M to its choice.

    ``device_name`` is stored normalized (spaces -> underscores, as engines
    spell it); ``block_shape`` is (block_n, block_k) of the weight scales.
    """

    device_name: str
    arch: str
    n: int
    k: int
    block_shape: tuple[int, int]
    out_dtype: str
    provenance: Provenance
    entries: dict[int, ConfigEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.device_name, str):
            object.__setattr__(self, "device_name", normalize_device_name(self.device_name))
        if isinstance(self.block_shape, list):
            object.__setattr__(self, "block_shape", tuple(self.block_shape))
        problems = _header_problems({
            "device_name": self.device_name, "arch": self.arch, "n": self.n, "k": self.k,
            "block_shape": list(self.block_shape) if isinstance(self.block_shape, tuple) else self.block_shape,
            "out_dtype": self.out_dtype,
        })
        if not isinstance(self.provenance, Provenance):
            problems.append(f"provenance must be a Provenance, got {type(self.provenance).__name__}")
        if not isinstance(self.entries, dict):
            problems.append(f"entries must be a dict of M -> ConfigEntry, got {type(self.entries).__name__}")
        else:
            for m, entry in self.entries.items():
                if not _is_int(m) or m < 1:
                    problems.append(f"entries key {m!r} must be a positive int M")
                if not isinstance(entry, ConfigEntry):
                    problems.append(f"entries[{m!r}] must be a ConfigEntry, got {type(entry).__name__}")
            # Keep entries in ascending M so files and engine exports list them in order.
            if not problems:
                object.__setattr__(self, "entries", dict(sorted(self.entries.items())))
        if problems:
            raise ConfigError("; ".join(problems))

    def provenance_of(self, m: int) -> Provenance:
        """The provenance of the entry for ``m``: its own if it has one, else the file's."""
        return self.entries[m].provenance or self.provenance


# --------------------------------------------------------------------------- checks on raw JSON


def _header_problems(raw: dict) -> list[str]:
    problems = []
    for name in ("device_name", "arch"):
        value = raw.get(name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} must be a non-empty string, got {value!r}")
        elif "/" in value or "\\" in value:
            problems.append(f"{name} must not contain path separators, got {value!r}")
    for name in ("n", "k"):
        value = raw.get(name)
        if not _is_int(value) or value < 1:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    block = raw.get("block_shape")
    if not (isinstance(block, list) and len(block) == 2 and all(_is_int(v) and v >= 1 for v in block)):
        problems.append(f"block_shape must be a list of two positive integers [block_n, block_k], got {block!r}")
    out_dtype = raw.get("out_dtype")
    if out_dtype not in OUT_DTYPE_NAMES:
        problems.append(f"out_dtype must be one of {list(OUT_DTYPE_NAMES)}, got {out_dtype!r}")
    return problems


def provenance_problems(raw: Any, where: str) -> list[str]:
    """Problems of a provenance JSON object (``where`` prefixes each message)."""
    if not isinstance(raw, dict):
        return [f"{where} must be an object, got {type(raw).__name__}"]
    problems = [f"{where} has unknown key {key!r}; expected keys {list(_PROVENANCE_KEYS)}"
                for key in raw if key not in _PROVENANCE_KEYS]
    if raw.get("kind") not in PROVENANCE_KINDS:
        problems.append(f"{where}.kind must be one of {list(PROVENANCE_KINDS)}, got {raw.get('kind')!r}")
    if not isinstance(raw.get("tool_version"), str) or not raw.get("tool_version"):
        problems.append(f"{where}.tool_version must be a non-empty string, got {raw.get('tool_version')!r}")
    for name in ("torch", "triton", "cutlass", "model_version"):
        if raw.get(name) is not None and not isinstance(raw.get(name), str):
            problems.append(f"{where}.{name} must be a version string or null, got {raw.get(name)!r}")
    date = raw.get("date")
    if not isinstance(date, str):
        problems.append(f"{where}.date must be an ISO 8601 date string, got {date!r}")
    else:
        try:
            datetime.datetime.fromisoformat(date)
        except ValueError:
            problems.append(f"{where}.date must be an ISO 8601 date (e.g. 2025-01-31T12:00:00+00:00), got {date!r}")
    return problems


def _params_problems(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, dict):
        return [f"{where} must be an object of parameter names to values, got {type(raw).__name__}"]
    problems = []
    for key, value in raw.items():
        if not isinstance(key, str):
            problems.append(f"{where} key {key!r} must be a string")
        elif not _is_json_scalar(value):
            problems.append(f"{where}.{key} must be a number, string, boolean or null, got {value!r}")
    return problems


def _entry_problems(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, dict):
        return [f"{where} must be an object with backend, params and us, got {type(raw).__name__}"]
    problems = [f"{where} has unknown key {key!r}; expected keys {list(_ENTRY_KEYS)}"
                for key in raw if key not in _ENTRY_KEYS]
    backend = raw.get("backend")
    if not isinstance(backend, str) or not backend:
        problems.append(f"{where}.backend must be a backend name such as 'triton', got {backend!r}")
    if "params" not in raw:
        problems.append(f"{where}.params is missing")
    else:
        problems += _params_problems(raw["params"], f"{where}.params")
    us = raw.get("us")
    if us is not None and not (_is_number(us) and math.isfinite(us) and us > 0):
        problems.append(f"{where}.us must be a positive number of microseconds or null, got {us!r}")
    if raw.get("engine_triton") is not None:
        problems += _params_problems(raw["engine_triton"], f"{where}.engine_triton")
    if raw.get("provenance") is not None:
        problems += provenance_problems(raw["provenance"], f"{where}.provenance")
    return problems


def native_problems(raw: Any) -> list[str]:
    """Every structural problem of a parsed native config JSON document ([] when it is valid)."""
    if not isinstance(raw, dict):
        return [f"the document must be a JSON object, got {type(raw).__name__}"]
    version = raw.get("schema_version")
    if not _is_int(version):
        return [f"schema_version must be an integer (this gemm writes {SCHEMA_VERSION}), got {version!r}"]
    if version > SCHEMA_VERSION:
        return [f"schema_version {version} is newer than this gemm understands ({SCHEMA_VERSION}); upgrade gemm"]
    if version < 1:
        return [f"schema_version must be >= 1, got {version}"]
    problems = [f"unknown top-level key {key!r}; expected keys {list(_TOP_KEYS)}"
                for key in raw if key not in _TOP_KEYS]
    problems += [f"{key} is missing" for key in _TOP_KEYS if key not in raw]
    problems += _header_problems(raw)
    if "provenance" in raw:
        problems += provenance_problems(raw["provenance"], "provenance")
    entries = raw.get("entries")
    if "entries" in raw and not isinstance(entries, dict):
        problems.append(f"entries must be an object mapping M (as a string) to an entry, got {type(entries).__name__}")
    elif isinstance(entries, dict):
        if not entries:
            problems.append("entries is empty; a config file needs at least one tuned M")
        for key, entry in entries.items():
            if not (key.isdigit() and int(key) >= 1 and str(int(key)) == key):
                problems.append(f"entries key {key!r} must be a positive integer M written in decimal, e.g. \"64\"")
            problems += _entry_problems(entry, f"entries[{key!r}]")
    return problems


# --------------------------------------------------------------------------- encoding


def provenance_to_json(provenance: Provenance) -> dict:
    return dataclasses.asdict(provenance)


def entry_to_json(entry: ConfigEntry) -> dict:
    out: dict[str, Any] = {"backend": entry.backend, "params": dict(entry.params), "us": entry.us}
    if entry.engine_triton is not None:
        out["engine_triton"] = dict(entry.engine_triton)
    if entry.provenance is not None:
        out["provenance"] = provenance_to_json(entry.provenance)
    return out


def config_to_json(config: ConfigFile) -> dict:
    """The JSON document of ``config`` (entries in ascending M)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "device_name": config.device_name,
        "arch": config.arch,
        "n": config.n,
        "k": config.k,
        "block_shape": list(config.block_shape),
        "out_dtype": config.out_dtype,
        "provenance": provenance_to_json(config.provenance),
        "entries": {str(m): entry_to_json(e) for m, e in sorted(config.entries.items())},
    }


def config_from_json(raw: Any, source: str) -> ConfigFile:
    """Parse a native config document; ConfigError listing every problem, prefixed with ``source``."""
    problems = native_problems(raw)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    entries = {}
    for key, e in raw["entries"].items():
        entries[int(key)] = ConfigEntry(
            backend=e["backend"], params=dict(e["params"]), us=float(e["us"]) if e.get("us") is not None else None,
            engine_triton=dict(e["engine_triton"]) if e.get("engine_triton") is not None else None,
            provenance=Provenance(**e["provenance"]) if e.get("provenance") is not None else None)
    return ConfigFile(device_name=raw["device_name"], arch=raw["arch"], n=raw["n"], k=raw["k"],
                      block_shape=tuple(raw["block_shape"]), out_dtype=raw["out_dtype"],
                      provenance=Provenance(**raw["provenance"]), entries=entries)


# --------------------------------------------------------------------------- versions


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def gemm_version() -> str:
    # Imported lazily: gemm/__init__ imports the op, which imports this package.
    import gemm

    return getattr(gemm, "__version__", "unknown")


def _module_version(name: str) -> str | None:
    try:
        module = __import__(name)
    except ImportError:
        return None
    return str(getattr(module, "__version__", None) or "") or None


def _cutlass_version() -> str | None:
    """Version of the CUTLASS headers the JIT builds with (see ``Provenance.current``); None if there are none."""
    from gemm import envs

    if envs.cutlass_dir() is None:
        return _distribution_version("nvidia-cutlass")
    # A user-named tree decides what gets built, whatever wheel is installed beside it.
    from gemm.kernels.base import BackendUnavailable
    from gemm.kernels.nvcc.toolchain import find_cutlass

    try:
        return find_cutlass().version_string
    except BackendUnavailable:
        return None


def _distribution_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
