"""Export to and import from vLLM's and SGLang's block-FP8 Triton config files.

Both engines read ``{"<M>": {"BLOCK_SIZE_M": .., "BLOCK_SIZE_N": .., "BLOCK_SIZE_K": ..,
"GROUP_SIZE_M": .., "num_warps": .., "num_stages": ..}, ...}``, pick the key
nearest to the batch size and splat that dict into their Triton kernel, so an
exported file holds exactly those keys. The files differ only in name (see
``gemm.configs.naming``).

Export (``gemm.configs.export``) writes entries measured in the engine's own kernel; on request it
fills other M with stand-ins, per tuned M:

1. a Triton entry without split-K, TMA or a persistent schedule maps 1:1
   (block_m -> BLOCK_SIZE_M, block_n -> BLOCK_SIZE_N, block_k -> BLOCK_SIZE_K,
   group_m -> GROUP_SIZE_M, num_warps, num_stages);
2. otherwise the entry's ``engine_triton`` alternative (the best plain Triton
   config the tuner saw at that M), when recorded;
3. otherwise a Triton entry exports its tile with those features dropped
   (same tile, split_k=1, no TMA, not persistent, and any other field of
   ``TritonParams`` outside the six at its default), and a CUTLASS/cuBLAS
   entry is left out, so the engine uses its nearest exported M.

Both directions check the values engines' kernels can run (``engine_value_problems``):
their kernel takes one scale per K tile, so BLOCK_SIZE_K must be a power of two
that divides the scale block (128: 16, 32, 64 or 128); BLOCK_SIZE_M/N are
powers of two from 16 to 256 (``tl.arange`` and ``tl.dot`` need that); num_warps
a power of two up to 32. A file or entry breaking them is a ConfigError naming
the key, the M and what is allowed; nothing is written.

Import maps the keys back (split_k=1, use_tma=False, persistent=False) into a
native file with backend "triton", provenance kind "imported" and no times.
Keys engines' kernels do not take here (e.g. ROCm's ``waves_per_eu``) are
dropped with a warning; a missing ``num_warps``/``num_stages`` takes Triton's
launch default (4 / 3). Imported entries never replace measured ones at the
same M (``force`` does); what was kept is said in one ``KeptEntriesWarning``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from gemm.configs.naming import parse_config_filename
from gemm.configs.schema import (
    ConfigEntry, ConfigError, ConfigFile, ConfigWarning, Provenance, gemm_version, utc_now,
)
from gemm.configs.store import read_json, write_config

ENGINE_KEYS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")
_REQUIRED_ENGINE_KEYS = ENGINE_KEYS[:4]
# Triton's launch defaults on CUDA, which an engine applies when a file omits these keys.
LAUNCH_DEFAULTS = {"num_warps": 4, "num_stages": 3}
_TO_ENGINE = {"block_m": "BLOCK_SIZE_M", "block_n": "BLOCK_SIZE_N", "block_k": "BLOCK_SIZE_K",
              "group_m": "GROUP_SIZE_M", "num_warps": "num_warps", "num_stages": "num_stages"}
# Our kernel's features absent from the engines' kernel, with the values that mean "not used".
PLAIN_TRITON_FEATURES = {"split_k": 1, "use_tma": False, "persistent": False}
# Out dtype recorded for imported files: engine files do not say; models run their GEMMs in bf16.
IMPORTED_OUT_DTYPE = "bfloat16"
#: The tile sizes and warp counts engines' Triton kernel can run (see the module docstring).
ENGINE_TILES = (16, 32, 64, 128, 256)
ENGINE_NUM_WARPS = (1, 2, 4, 8, 16, 32)


def engine_value_problems(cfg: dict, block_k: int, where: str, native: bool = False) -> list[str]:
    """What in one engine config (keys present, positive ints) engines' kernel cannot run, naming ``where``
    (and, for a config exported from a native entry, ``native``, the entry's parameter too)."""
    ours = {engine: name for name, engine in _TO_ENGINE.items()}
    problems = []
    k_tiles = tuple(t for t in ENGINE_TILES if t <= block_k and block_k % t == 0)
    allowed = {"BLOCK_SIZE_M": (ENGINE_TILES, "a power of two from 16 to 256"),
               "BLOCK_SIZE_N": (ENGINE_TILES, "a power of two from 16 to 256"),
               "BLOCK_SIZE_K": (k_tiles, f"a power of two that divides the scale block {block_k} "
                                         f"(the kernel takes one scale per K tile)"),
               "num_warps": (ENGINE_NUM_WARPS, "a power of two up to 32")}
    for key, (values, what) in allowed.items():
        if key in cfg and cfg[key] not in values:
            named = f"{key}={cfg[key]}" + (f" (the entry's {ours[key]})" if native else "")
            problems.append(f"{where}: {named} must be {what}: one of {', '.join(map(str, values))}")
    return problems


def _triton_params_type():
    from gemm.kernels.triton_fp8 import TritonParams  # lazily: exporting is a tool-time job

    return TritonParams


def full_triton_params(params: dict, where: str) -> dict:
    """``params`` completed with TritonParams defaults; ConfigError naming ``where`` if they are not Triton's."""
    try:
        return _triton_params_type().from_dict(dict(params)).to_dict()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _plain_values() -> dict:
    """Every TritonParams field engines have no key for, with the value meaning "feature not used".

    Fields added to TritonParams later count too (at their default), so a new
    kernel feature is never exported silently as if the engine had it.
    """
    defaults = _triton_params_type()().to_dict()
    return {name: PLAIN_TRITON_FEATURES.get(name, value) for name, value in defaults.items() if name not in _TO_ENGINE}


def engine_features_used(params: dict) -> list[str]:
    """``name=value`` of each feature in complete Triton ``params`` that the engines' kernel lacks."""
    return [f"{name}={params[name]}" for name, plain in _plain_values().items() if params.get(name, plain) != plain]


def is_plain_triton(backend: str, params: dict) -> bool:
    """A Triton config the engines' kernel can run as is: every feature it lacks (split-K, TMA,
    persistent schedule, K unrolling, ...) at its "not used" value, as the exporters judge it."""
    if backend != "triton":
        return False
    return not engine_features_used(_triton_params_type().from_dict(dict(params)).to_dict())


def triton_to_engine(params: dict) -> dict:
    """Engine keys of complete Triton params (features the engine lacks are ignored by the caller's choice)."""
    return {engine: int(params[ours]) for ours, engine in _TO_ENGINE.items()}


def engine_params(engine: dict) -> dict:
    """The six params fields (``block_m`` ... ``num_stages``) of an engine config, Triton's launch defaults
    for an absent num_warps / num_stages: the params of the engines' kernel (``ClassicParams``)."""
    values = {**LAUNCH_DEFAULTS, **{key: engine[key] for key in ENGINE_KEYS if key in engine}}
    return {ours: int(values[theirs]) for ours, theirs in _TO_ENGINE.items()}


def engine_to_triton(engine: dict) -> dict:
    """Triton params of an engine config (with Triton's launch defaults for absent num_warps/num_stages)."""
    params = engine_params(engine)
    params.update(PLAIN_TRITON_FEATURES)
    return params


# --------------------------------------------------------------------------- import / checks


def engine_problems(raw: Any, block_k: int = 128) -> tuple[list[str], dict[str, list[str]]]:
    """(problems, unknown keys per M) of a parsed engine document whose weight-scale block is ``block_k`` deep.

    Problems: not an object of decimal M keys, a config that is not an object,
    a missing BLOCK_SIZE_M/N/K or GROUP_SIZE_M, a value that is not a positive
    integer, a value engines' kernel cannot run (``engine_value_problems``).
    Keys outside the engines' six are reported separately.
    """
    if not isinstance(raw, dict) or not raw:
        return [f"an engine file must be a non-empty JSON object mapping M to a config, got {raw!r:.60}"], {}
    problems, unknown = [], {}
    for key, cfg in raw.items():
        where = f"[{key!r}]"
        if not (key.isdigit() and int(key) >= 1):
            problems.append(f"key {key!r} must be a positive integer batch size M, e.g. \"64\"")
        if not isinstance(cfg, dict):
            problems.append(f"{where} must be an object of Triton config keys, got {type(cfg).__name__}")
            continue
        problems += [f"{where} lacks {name}" for name in _REQUIRED_ENGINE_KEYS if name not in cfg]
        not_counts = [f"{where}.{name} must be a positive integer, got {cfg[name]!r}" for name in ENGINE_KEYS
                      if name in cfg and (not isinstance(cfg[name], int) or isinstance(cfg[name], bool)
                                          or cfg[name] < 1)]
        problems += not_counts or engine_value_problems(cfg, block_k, f"M={key}")
        extra = sorted(name for name in cfg if name not in ENGINE_KEYS)
        if extra:
            unknown[key] = extra
    return problems, unknown


def _arch_name(device_name: str) -> str:
    from gemm.arch import get_arch

    try:
        return get_arch(device_name).name
    except KeyError:
        return device_name


def import_config(src: Path, dst_root: Path, arch: str | None = None, force: bool = False) -> Path:
    """Convert a vLLM/SGLang file (format told by its name) into a native file under ``dst_root``.

    Entries become backend "triton" with the engine's tile (split_k=1, no TMA,
    not persistent) and ``us`` null; provenance kind "imported". ``arch``
    defaults to the known GPU of the file's device name (else the name itself).
    The result is merged into an existing native file like any ``write_config``:
    imported entries replace imported or predicted ones at the same M but never
    measured ones, unless ``force`` (a ``KeptEntriesWarning`` says what was kept).
    Raises ConfigError naming the key and the M for a value engines' kernel
    cannot run (``engine_value_problems``), writing nothing. Returns its path.
    """
    src = Path(src)
    parsed = parse_config_filename(src)
    if parsed is None:
        raise ConfigError(f"{src}: not an engine config file name; expected "
                          f"N=<N>,K=<K>,device_name=<device>,dtype=fp8_w8a8,block_shape=[<bn>,<bk>].json "
                          f"(vLLM) or block_shape=[<bn>, <bk>] (SGLang)")
    raw = read_json(src)
    if isinstance(raw, dict) and "schema_version" in raw:
        raise ConfigError(f"{src}: already a native config file; nothing to import")
    problems, unknown = engine_problems(raw, parsed.block_shape[1])
    if problems:
        raise ConfigError(f"{src}: not a valid {parsed.style} config: " + "; ".join(problems))
    if unknown:
        listed = "; ".join(f"M={m}: {', '.join(keys)}" for m, keys in unknown.items())
        warnings.warn(f"importing {src.name}: dropped keys our kernel does not take ({listed})",
                      ConfigWarning, stacklevel=2)
    provenance = Provenance(kind="imported", tool_version=gemm_version(), torch=None, triton=None,
                            cutlass=None, date=utc_now())
    config = ConfigFile(
        device_name=parsed.device_name, arch=arch or _arch_name(parsed.device_name), n=parsed.n, k=parsed.k,
        block_shape=parsed.block_shape, out_dtype=IMPORTED_OUT_DTYPE, provenance=provenance,
        entries={int(m): ConfigEntry("triton", engine_to_triton(cfg), None) for m, cfg in raw.items()})
    return write_config(Path(dst_root), config, force)
