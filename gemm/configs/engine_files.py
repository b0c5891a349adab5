"""Sets of engine config files (vLLM's or SGLang's ``N=..,K=..,device_name=..`` files) read as data.

What the engines ship for a GPU serves the engine-mode tuner twice: the configs of every file are a
floor of its search space, and one folder of them is the baseline its results are compared with
(``gemm tune --engine vllm --baseline DIR``). ``read_engine_files`` reads such a folder for one device;
``EngineTable.entry_for`` picks an entry the way both engines do: the key nearest to M, the first of
equals in the file's order.

The project carries the files vLLM 0.33.0 and SGLang 0.5.23 ship for the H200 and the DeepSeek-V3
shapes under ``engine_configs/baselines/<engine>-<version>/<device>/`` (``shipped_engine_roots``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gemm.arch import normalize_device_name
from gemm.configs.engines import ENGINE_KEYS, LAUNCH_DEFAULTS, engine_problems
from gemm.configs.naming import parse_config_filename
from gemm.configs.schema import ConfigError
from gemm.configs.store import read_json


@dataclass(frozen=True)
class EngineTable:
    """One engine file: its (M key, config) pairs in file order, each config the six engine keys."""

    path: Path
    n: int
    k: int
    entries: tuple[tuple[int, dict], ...]

    def entry_for(self, m: int) -> tuple[int, dict]:
        """(key, config) an engine runs at batch size ``m``: the key nearest to ``m``, the first of equals."""
        best = None
        for key, config in self.entries:  # engines take min() over the keys in the file's order
            if best is None or abs(key - m) < abs(best[0] - m):
                best = (key, config)
        return best

    def configs(self) -> list[dict]:
        return [config for _, config in self.entries]


def read_engine_file(path: Path) -> EngineTable:
    """One engine file as an ``EngineTable``; ConfigError naming the file for anything engines could not run."""
    path = Path(path)
    parsed = parse_config_filename(path)
    if parsed is None:
        raise ConfigError(f"{path}: not an engine config file name (N=<N>,K=<K>,device_name=<device>,"
                          f"dtype=fp8_w8a8,block_shape=[<bn>,<bk>].json)")
    raw = read_json(path)
    problems, unknown = engine_problems(raw, parsed.block_shape[1])
    problems += [f"M={m}: key(s) {', '.join(keys)} are not the engines' Triton config keys"
                 for m, keys in unknown.items()]
    if problems:
        raise ConfigError(f"{path}: not an engine file the engines' kernel runs as is: " + "; ".join(problems))
    # An absent num_warps / num_stages is Triton's launch default, as in the engine.
    entries = tuple((int(m), {key: config.get(key, LAUNCH_DEFAULTS.get(key)) for key in ENGINE_KEYS})
                    for m, config in raw.items())
    return EngineTable(path, parsed.n, parsed.k, entries)


def read_engine_files(root: Path, device_name: str, block_shape=(128, 128)) -> dict[tuple[int, int], EngineTable]:
    """Every engine file under ``root`` (searched recursively) for ``device_name`` and ``block_shape``, by (N, K).

    Files of other devices or blocks are skipped. Raises ConfigError for a missing ``root``, for a file
    engines' kernel could not run, and for two files of one (N, K) (a vLLM and an SGLang spelling).
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such directory of engine config files")
    device = normalize_device_name(device_name)
    tables: dict[tuple[int, int], EngineTable] = {}
    for path in sorted(root.rglob("*.json")):
        parsed = parse_config_filename(path)
        if parsed is None or parsed.device_name != device or tuple(parsed.block_shape) != tuple(block_shape):
            continue
        if (parsed.n, parsed.k) in tables:
            first = tables[(parsed.n, parsed.k)].path.name
            raise ConfigError(f"{root}: two files for N={parsed.n} K={parsed.k}: {first} and {path.name}; keep one "
                              f"engine's files per folder")
        tables[(parsed.n, parsed.k)] = read_engine_file(path)
    return tables


def shipped_engine_roots() -> list[Path]:
    """The folders of engine files the project carries (``engine_configs/baselines/<engine>-<version>/``)."""
    from gemm import envs

    root = envs.shipped_engine_config_root() / "baselines"
    return sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []


def engine_config_union(roots, device_name: str, block_shape=(128, 128)) -> list[dict]:
    """Every distinct config of the engine files for ``device_name`` under ``roots``, in first-seen order."""
    seen: dict[tuple, dict] = {}
    for root in roots:
        for _, table in sorted(read_engine_files(root, device_name, block_shape).items()):
            for config in table.configs():
                seen.setdefault(tuple(config[key] for key in ENGINE_KEYS), config)
    return list(seen.values())
