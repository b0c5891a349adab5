"""Config files from the choices of ``select``: what ``gemm tune`` writes per finished shape, and what
``gemm select`` derives again from results logs."""

from __future__ import annotations

from pathlib import Path

from gemm.configs import ConfigEntry, ConfigFile, Provenance, write_config
from gemm.configs.schema import utc_now
from gemm.kernels import backend_names
from gemm.tuner.results.log import Fingerprint
from gemm.tuner.results.select import Choice


def write_choices(out_root: Path, device_name: str, arch_name: str, n: int, k: int, choices: dict[int, Choice],
                  out_dtype: str, block_shape: tuple[int, int], provenance: Provenance) -> Path | None:
    """Write (merge) ``choices`` ({M: Choice}) as the config of (N, K); None when no entry is writable.

    Only the op's registered backends can be written: a test's plug-in backend has no place in a config.
    """
    registered = set(backend_names())
    entries = {m: ConfigEntry(c.backend, dict(c.params), round(c.us, 3), c.engine_triton)
               for m, c in choices.items() if c.backend in registered}
    if not entries:
        return None
    config = ConfigFile(device_name, arch_name, n, k, tuple(block_shape), out_dtype, provenance, entries)
    return write_config(out_root, config)


def logged_provenance(fingerprint: Fingerprint) -> Provenance:
    """Provenance "measured" with the software versions a log's header records, dated now."""
    return Provenance("measured", fingerprint.tool_version, fingerprint.torch, fingerprint.triton,
                      fingerprint.cutlass, utc_now())
