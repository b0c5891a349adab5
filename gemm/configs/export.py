"""Engine files (vLLM's or SGLang's format) from native config files.

An engine file is exported from **measurements of the engine's own kernel** and only from them: per M,
the entry of the engine's backend (``vllm_triton`` for vLLM, ``sglang_triton`` for SGLang, written by
``gemm tune --engine``) whose provenance is "measured", mapped key for key. Other entries (our Triton
kernel, CUTLASS, cuBLAS, predicted or imported ones) are no measurement of the engine's kernel: their M
are left out, and the engine runs its nearest exported M there. A file with no such measurement (a GPU
measured only with our own kernels, or only predicted, such as the H20's) is refused, saying so.

``stand_ins=True`` (``gemm export --stand-ins``) fills the M without measurements with stand-ins
instead: the entries' nearest plain Triton configs (``gemm.configs.engines`` says how), or the other
engine's measurement. A stand-in file never replaces an existing file unless ``force``: an engine's
file there is a measured one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from gemm.configs.engine_targets import engine_named, engine_of_backend
from gemm.configs.engines import engine_features_used, engine_value_problems, full_triton_params, triton_to_engine
from gemm.configs.naming import STYLES, config_filename
from gemm.configs.schema import ConfigEntry, ConfigError, ConfigFile, ConfigWarning
from gemm.configs.store import atomic_write_json, describe_ms, load_config_file


class NoEngineMeasurements(ConfigError):
    """A native file holds no entry measured in the engine's kernel, so no engine file comes from it."""


@dataclass(frozen=True)
class EngineExport:
    """The engine document of one native file (ascending M, the six keys), which M came from measurements of
    the engine's kernel and which from stand-ins, and one note per reason an M was substituted or left out."""

    fmt: str
    config: ConfigFile
    document: dict
    measured: tuple[int, ...]
    stand_ins: tuple[int, ...]
    notes: tuple[str, ...]

    @property
    def file_name(self) -> str:
        """The name the engine looks the file up by."""
        c = self.config
        return config_filename(c.n, c.k, c.device_name, c.block_shape, self.fmt)


def _stand_in(m: int, entry: ConfigEntry, title: str, where: str) -> tuple[dict | None, str]:
    """(engine config or None to leave M out, why) for an entry that is no measurement of the engine's kernel."""
    other = engine_of_backend(entry.backend)
    if other is not None:
        return triton_to_engine(_engine_params(entry, where)), f"measured in {other.title}'s kernel, not {title}'s"
    primary = full_triton_params(entry.params, f"{where}.params") if entry.backend == "triton" else None
    if primary is not None and not engine_features_used(primary):
        return triton_to_engine(primary), "our Triton kernel's plain config"
    # Feature names, not values: the reasons group many M into one clause of the file's warning.
    what = (f"triton entry uses {', '.join(used.split('=')[0] for used in engine_features_used(primary))}"
            if primary is not None else f"{entry.backend} entry")
    if entry.engine_triton is not None:
        alternative = full_triton_params(entry.engine_triton, f"{where}.engine_triton")
        used = engine_features_used(alternative)
        if used:
            raise ConfigError(f"{where}.engine_triton must be a plain Triton config (split_k=1, use_tma=false, "
                              f"persistent=false, other non-engine fields at their defaults), "
                              f"but it uses {', '.join(used)}")
        return triton_to_engine(alternative), f"{what}; exported its recorded plain Triton alternative"
    if primary is not None:
        return triton_to_engine(primary), f"{what}; exported the same tile without them"
    return None, f"{what} has no Triton equivalent; left out (the engine uses its nearest exported M)"


def _engine_params(entry: ConfigEntry, where: str) -> dict:
    """The params of an entry of the engines' kernel, checked; ConfigError naming ``where`` if they are not."""
    from gemm.kernels.classic_triton import ClassicParams  # lazily: exporting is a tool-time job

    try:
        return ClassicParams.from_dict(dict(entry.params)).to_dict()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.params: {exc}") from None


def _is_measurement(config: ConfigFile, m: int, backend: str) -> bool:
    entry = config.entries[m]
    return entry.backend == backend and config.provenance_of(m).kind == "measured" and entry.us is not None


def engine_export(config: ConfigFile, fmt: str, source: str = "config", stand_ins: bool = False) -> EngineExport:
    """The ``fmt`` ("vllm" or "sglang") document of ``config`` (see the module docstring).

    Raises NoEngineMeasurements when no entry was measured in the engine's kernel and ``stand_ins`` is
    off; ConfigError when nothing is exportable, or when an exported config is one engines' kernel cannot
    run (naming the M, the key and what is allowed).
    """
    if fmt not in STYLES:
        raise ValueError(f"fmt must be one of {list(STYLES)}, got {fmt!r}")
    engine = engine_named(fmt)
    document, measured, substituted, reasons, problems = {}, [], [], {}, []
    for m, entry in sorted(config.entries.items()):
        if _is_measurement(config, m, engine.backend):
            exported, reason = triton_to_engine(_engine_params(entry, f"{source}: entries[{str(m)!r}]")), None
            measured.append(m)
        elif stand_ins:
            exported, reason = _stand_in(m, entry, engine.title, f"{source}: entries[{str(m)!r}]")
        else:
            kind = config.provenance_of(m).kind
            exported, reason = None, (f"{kind} {entry.backend} entry, no measurement of {engine.title}'s kernel; "
                                      f"left out (the engine uses its nearest exported M)")
        if reason:
            reasons.setdefault(reason, []).append(m)
        if exported is not None:
            problems += engine_value_problems(exported, config.block_shape[1], f"M={m}", native=True)
            document[str(m)] = exported
            if m not in measured:
                substituted.append(m)
    if problems:
        raise ConfigError(f"{source}: the engines' kernel cannot run what would be exported: " + "; ".join(problems))
    notes = tuple(f"{describe_ms(ms)}: {reason}" for reason, ms in reasons.items())
    if not measured and not stand_ins:
        held = sorted({f"{config.provenance_of(m).kind} {e.backend}" for m, e in config.entries.items()})
        raise NoEngineMeasurements(
            f"{source}: no entry was measured in {engine.title}'s kernel for N={config.n} K={config.k} on "
            f"{config.device_name} (it holds {', '.join(held)} entries); measure them there with "
            f"`gemm tune --engine {fmt}`, or pass --stand-ins to export the nearest plain configs of our Triton "
            f"kernel instead")
    if not document:
        raise ConfigError(f"{source}: no entry can be expressed as the engines' Triton config: " + "; ".join(notes))
    return EngineExport(fmt, config, document, tuple(measured), tuple(substituted), notes)


def export_config(src: Path, fmt: str, dst_dir: Path, stand_ins: bool = False, force: bool = False) -> Path:
    """Write the vLLM (``fmt="vllm"``) or SGLang (``"sglang"``) file of the native config ``src`` into ``dst_dir``.

    The file is named as that engine looks it up and holds only its Triton config keys, from measurements of
    its kernel (``stand_ins``: see the module docstring). Warns (ConfigWarning) once listing substituted or
    omitted M. Raises NoEngineMeasurements / ConfigError (see ``engine_export``), and ConfigError when a file
    with stand-ins would replace an existing file without ``force``. Returns the written path.
    """
    src = Path(src)
    export = engine_export(load_config_file(src), fmt, str(src), stand_ins)
    dst_dir = Path(dst_dir)
    path = dst_dir / export.file_name
    if export.stand_ins and path.exists() and not force:
        raise ConfigError(f"{path} exists and this export fills {describe_ms(export.stand_ins)} with stand-ins; "
                          f"the engine file there is kept (--force replaces it)")
    if export.notes:
        warnings.warn(f"exporting {src.name} to {fmt}: " + "; ".join(export.notes), ConfigWarning, stacklevel=2)
    dst_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, export.document, indent=4)
    return path
