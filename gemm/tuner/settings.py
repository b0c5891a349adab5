"""What ``gemm tune`` is asked to do, as one frozen value: the command line builds it, the tuner reads it.

``TuneSettings`` says what to sweep (shapes, M grid, backends), how hard to
look (pruning, finalists, ties), where the results go (config root, log,
resume) and how to run (workers, timeouts, time limit, seed, and ``gpus`` /
``ray`` for a sweep spread over several GPUs). The sweep itself gets the
device-specific ``SweepSettings`` derived from it, once the device's timer
and usable backends are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gemm.tuner.presets import LayerShape
from gemm.tuner.results.select import DEFAULT_TIE_FRACTION
from gemm.tuner.search.plan import SweepSettings
from gemm.tuner.search.runner import Timeouts
from gemm.tuner.search.space import PruneSettings


def _at_least(value, low: float, strict: bool) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (value > low if strict else value >= low))


def _is_count(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


class SetupError(ValueError):
    """A tune cannot start as asked (no GPU, an unusable backend, a bad value); the message says what to do."""


@dataclass(frozen=True)
class TuneSettings:
    """Everything one ``gemm tune`` run needs to know.

    ``backends`` None means every backend usable on the device. ``keep`` None
    times every verified candidate carefully (an exhaustive search, with
    ``prune.budget`` None). ``timer`` None picks the device's default timer.
    ``log_path`` None names the log after the device and the search space
    under ``out_root/logs/``. ``workers`` None sizes the evaluation pool to the
    host (0: evaluate in the sweeping process). ``gpus`` (``"all"``, a count or
    a list) spreads the sweep over this machine's GPUs; ``ray`` (an address,
    ``""`` for Ray's default) over a Ray cluster, where ``gpus`` caps the tasks
    at a time. ``engine`` ("vllm" or "sglang") makes it an engine sweep (``gemm.tuner.engine``): the
    engine's kernel alone, with the engine files of the device as a floor and ``baseline``, a folder of
    an engine's files, timed beside it at every point.
    """

    shapes: tuple[LayerShape, ...]
    m_grid: tuple[int, ...]
    out_root: Path
    backends: tuple[str, ...] | None = None
    out_dtype: str = "bfloat16"
    prune: PruneSettings = PruneSettings()
    keep: int | None = 4
    screen_margin: float = 0.25
    tie: float = DEFAULT_TIE_FRACTION
    interpret: bool = False
    timer: str | None = None
    log_path: Path | None = None
    resume: bool = False
    workers: int | None = None
    timeouts: Timeouts = Timeouts()
    time_limit_s: float | None = None
    seed: int = 0
    prebuild: bool = True
    gpus: str | None = None
    ray: str | None = None
    engine: str | None = None
    baseline: Path | None = None

    def __post_init__(self) -> None:
        problems = []
        for name, strict in (("tie", False), ("screen_margin", False), ("time_limit_s", True)):
            value = getattr(self, name)
            if value is not None and not _at_least(value, 0, strict):
                problems.append(f"{name} must be a finite number {'>' if strict else '>='} 0, got {value!r}")
        if not self.shapes:
            problems.append("shapes must hold at least one shape")
        if not self.m_grid or not all(_is_count(m, 1) for m in self.m_grid):
            problems.append(f"m_grid must hold positive integers, got {self.m_grid!r}")
        for name, low in (("keep", 1), ("workers", 0)):
            value = getattr(self, name)
            if value is not None and not _is_count(value, low):
                problems.append(f"{name} must be an integer >= {low} or None, got {value!r}")
        if self.backends is not None and (not self.backends or not all(self.backends)):
            problems.append(f"backends must be None (every usable one) or non-empty names, got {self.backends!r}")
        problems += self._engine_problems()
        if problems:
            raise SetupError("; ".join(problems))

    def _engine_problems(self) -> list[str]:
        from gemm.configs.engine_targets import ENGINES

        if self.engine is None:
            return ["baseline needs an engine sweep (engine='vllm' or 'sglang')"] if self.baseline else []
        if self.engine not in ENGINES:
            return [f"engine must be one of {list(ENGINES)} or None, got {self.engine!r}"]
        own = ENGINES[self.engine].backend
        if self.backends is not None and self.backends != (own,):
            return [f"an engine sweep times the engine's kernel only: backends must be None or ({own!r},), "
                    f"got {self.backends!r}"]
        return []

    @property
    def engine_backends(self) -> tuple[str, ...] | None:
        """The backends to sweep as asked: the engine's kernel alone in an engine sweep, else ``backends``."""
        if self.engine is None:
            return self.backends
        from gemm.configs.engine_targets import engine_named

        return (engine_named(self.engine).backend,)

    @property
    def distributed(self) -> bool:
        """True when the sweep is spread over several GPU workers (``gpus`` or ``ray``)."""
        return self.gpus is not None or self.ray is not None

    def sweep_settings(self, timer: str, backends: tuple[str, ...], device_name: str | None = None) -> SweepSettings:
        """The sweep of one device with ``timer`` and its usable ``backends`` (ValueError for a bad value).

        An engine sweep reads its floor and baseline for ``device_name`` here (``gemm.tuner.engine.mode``;
        ValueError for a baseline folder without files for the device). The interpreter's sweep times few
        repetitions: it checks the tool, its times mean nothing.
        """
        mode = None
        if self.engine is not None:
            from gemm.tuner.engine.mode import engine_mode

            if device_name is None:
                raise ValueError("an engine sweep needs the device name its files are for")
            mode = engine_mode(self.engine, device_name, baseline_dir=self.baseline)
        return SweepSettings(
            shapes=tuple(self.shapes), m_grid=tuple(self.m_grid), backends=tuple(backends), timer=timer,
            out_dtype=self.out_dtype, prune=self.prune, keep=self.keep, screen_margin=self.screen_margin,
            screen_reps=2 if self.interpret else 5, final_reps=3 if self.interpret else 50,
            interpret=self.interpret, engine=mode)
