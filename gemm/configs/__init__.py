"""Tuned-config files: schema, atomic merged writes, lookup by nearest M, engine export/import, validation.

Native files live in ``<root>/<device_name>/`` (roots, in lookup order: the user config
directory, ``GEMM_CONFIG_DIR`` or ``~/.local/share/gemm/tuned_configs``, then the project's
shipped ``tuned_configs/``), one per (N, K, weight-scale block), named as
vLLM names its block-FP8 configs. See ``gemm.configs.schema`` for the content,
``gemm.configs.engines`` for the vLLM/SGLang formats, ``gemm.configs.export`` and ``gemm.configs.install``
for engine files from measurements of the engines' kernel and their place in an installed engine.

This package is used by the run-time op: it must not import pandas.
"""

from gemm.configs.engines import ENGINE_KEYS, import_config
from gemm.configs.export import NoEngineMeasurements, engine_export, export_config
from gemm.configs.naming import ParsedName, config_filename, config_path, parse_config_filename
from gemm.configs.schema import (
    PROVENANCE_KINDS, SCHEMA_VERSION, ConfigEntry, ConfigError, ConfigFile, ConfigWarning, Provenance,
)
from gemm.configs.store import (
    SOURCE_RANK, KeptEntriesWarning, find_config, find_configs, forget_cached, load_config_file, merge_configs,
    nearest_entry, rank_ms, ranked_entries, write_config,
)
from gemm.configs.validation import validate_config_file

__all__ = [
    "ENGINE_KEYS",
    "PROVENANCE_KINDS",
    "SCHEMA_VERSION",
    "SOURCE_RANK",
    "ConfigEntry",
    "ConfigError",
    "ConfigFile",
    "ConfigWarning",
    "KeptEntriesWarning",
    "NoEngineMeasurements",
    "ParsedName",
    "Provenance",
    "config_filename",
    "config_path",
    "engine_export",
    "export_config",
    "find_config",
    "find_configs",
    "forget_cached",
    "import_config",
    "load_config_file",
    "merge_configs",
    "nearest_entry",
    "parse_config_filename",
    "rank_ms",
    "ranked_entries",
    "validate_config_file",
    "write_config",
]
