"""What ``gemm tune`` is asked to do, as one frozen value: the command line builds it, the tuner reads it.

``TuneSettings`` says what to sweep (shapes, M grid, backends), how hard to
look (pruning, finalists, ties), where the results go (config root, log,
resume) and how to run (workers, timeouts, time limit, seed, and ``gpus`` /
``ray`` for a sweep spread over several GPUs). The sweep itself gets the
device-specific ``SweepSettings`` derived from it, once the device's timer
and usable backends are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gemm.tuner.presets import LayerShape
from gemm.tuner.results.select import DEFAULT_TIE_FRACTION
from gemm.tuner.search.plan import SweepSettings
from gemm.tuner.search.runner import Timeouts
from gemm.tuner.search.space import PruneSettings


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
    at a time.
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

    @property
    def distributed(self) -> bool:
        """True when the sweep is spread over several GPU workers (``gpus`` or ``ray``)."""
        return self.gpus is not None or self.ray is not None

    def sweep_settings(self, timer: str, backends: tuple[str, ...]) -> SweepSettings:
        """The sweep of one device with ``timer`` and its usable ``backends`` (ValueError for a bad value).

        The interpreter's sweep times few repetitions: it checks the tool, its times mean nothing.
        """
        return SweepSettings(
            shapes=tuple(self.shapes), m_grid=tuple(self.m_grid), backends=tuple(backends), timer=timer,
            out_dtype=self.out_dtype, prune=self.prune, keep=self.keep, screen_margin=self.screen_margin,
            screen_reps=2 if self.interpret else 5, final_reps=3 if self.interpret else 50,
            interpret=self.interpret)
