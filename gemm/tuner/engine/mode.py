"""What an engine sweep adds to an ordinary one: its engine, a floor of configs, and a baseline.

An engine sweep times the engine's kernel (backend ``vllm_triton`` or ``sglang_triton``) over the
engine's key space (``gemm.kernels.engine_triton``), pruned by the cost model but never below the
**floor**: every config the engines ship for the GPU (the union of the files the project carries under
``engine_configs/baselines/`` and of the baseline folder, for that device) is kept at every point.
With a **baseline** (an engine's files for the GPU, e.g. those the engine ships), each point also times
the baseline's entry for it (the entry the engine would run at that M, pinned: always timed carefully),
so the two are compared in one run (``gemm.tuner.engine.compare``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gemm.configs.engine_files import EngineTable, engine_config_union, read_engine_files, shipped_engine_roots
from gemm.configs.engine_targets import engine_named
from gemm.configs.engines import engine_params
from gemm.problem import GemmProblem


@dataclass(frozen=True)
class Baseline:
    """An engine's files for one device (``tables``, one per (N, K)), read from ``root``; ``label`` names them."""

    label: str
    root: str
    tables: tuple[EngineTable, ...]

    def table(self, n: int, k: int) -> EngineTable | None:
        return next((t for t in self.tables if (t.n, t.k) == (n, k)), None)

    def entry(self, n: int, k: int, m: int) -> tuple[int, dict] | None:
        """(key, engine config) the engine runs at (N, K, M) with these files; None without a file for (N, K)."""
        table = self.table(n, k)
        return None if table is None else table.entry_for(m)


def read_baseline(root: Path, device_name: str, block_shape=(128, 128)) -> Baseline:
    """The engine files for ``device_name`` under ``root``; ValueError when there are none (ConfigError, a
    ValueError, for an unreadable one)."""
    tables = read_engine_files(root, device_name, block_shape)
    if not tables:
        raise ValueError(f"--baseline {root}: no engine config files for {device_name} with block_shape "
                         f"[{block_shape[0]},{block_shape[1]}] (N=..,K=..,device_name={device_name},... .json)")
    return Baseline(Path(root).name, str(root), tuple(tables[key] for key in sorted(tables)))


@dataclass(frozen=True)
class EngineMode:
    """An engine sweep's additions: ``engine`` ("vllm" or "sglang"), the ``floor`` (engine configs, the six
    keys, kept at every point), the folders it came from, and the optional ``baseline``."""

    engine: str
    floor: tuple[dict, ...]
    floor_sources: tuple[str, ...]
    baseline: Baseline | None = None
    backend: str = ""  # the backend reference that runs the engine's kernel; "" for the engine's own

    def __post_init__(self) -> None:
        if not self.backend:
            object.__setattr__(self, "backend", engine_named(self.engine).backend)

    def floor_params(self) -> tuple[dict, ...]:
        """The floor as params of the engines' kernel (``ClassicParams`` fields)."""
        return tuple(engine_params(config) for config in self.floor)

    def pinned_params(self, problem: GemmProblem) -> tuple[dict, ...]:
        """The baseline's entry at ``problem`` as params (none without a baseline file for its shape)."""
        found = self.baseline.entry(problem.n, problem.k, problem.m) if self.baseline is not None else None
        return () if found is None else (engine_params(found[1]),)

    def hashed(self) -> dict:
        """What the space hash records of the mode (the kept candidates themselves are hashed too)."""
        return {"engine": self.engine, "floor": len(self.floor),
                "baseline": None if self.baseline is None else self.baseline.label}

    def describe(self, device_name: str) -> str:
        """One line for the plan: the floor and the baseline."""
        sources = ", ".join(self.floor_sources) or "none"
        text = (f"{engine_named(self.engine).title}'s kernel ({self.backend}); floor: {len(self.floor)} "
                f"configs the engines ship for {device_name} ({sources})")
        if self.baseline is not None:
            text += f"; baseline {self.baseline.label} ({len(self.baseline.tables)} files) timed at every point"
        return text


def engine_mode(engine: str, device_name: str, block_shape=(128, 128), baseline_dir: Path | None = None,
                floor_roots: list[Path] | None = None) -> EngineMode:
    """The mode of an ``engine`` sweep on ``device_name``: the floor from ``floor_roots`` (default: the engine
    files the project carries) and the baseline folder; the baseline from ``baseline_dir`` (None: none).

    ValueError (or ConfigError) for an unknown engine, a baseline folder without files for the device, or
    an engine file the engines' kernel could not run.
    """
    engine_named(engine)
    baseline = read_baseline(baseline_dir, device_name, block_shape) if baseline_dir is not None else None
    roots = list(shipped_engine_roots() if floor_roots is None else floor_roots)
    if baseline_dir is not None:
        roots.append(Path(baseline_dir))
    sources = [Path(root).name for root in roots if read_engine_files(root, device_name, block_shape)]
    floor = engine_config_union(roots, device_name, block_shape)
    return EngineMode(engine, tuple(floor), tuple(dict.fromkeys(sources)), baseline)
