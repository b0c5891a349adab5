"""What a sweep will run, settled before anything runs: its settings and every point's pruned candidates.

``SweepPlan.build`` asks each backend for its candidates at every (shape, M),
checks and prunes them (``gemm.tuner.search.space``); the plan's hash names
the search in the results log's header, so a resumed sweep is the same search.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gemm.arch import ArchSpec
from gemm.problem import GemmProblem
from gemm.tuner.presets import LayerShape
from gemm.tuner.search.space import PointSpace, PruneSettings, point_space, space_hash

if TYPE_CHECKING:
    from gemm.tuner.engine.mode import EngineMode


@dataclass(frozen=True)
class SweepSettings:
    """What to sweep and how hard to look. ``keep`` None times every verified candidate carefully.

    ``engine`` (an engine sweep, ``gemm.tuner.engine.mode``) adds its floor of configs to the engine
    backend's candidates at every point and pins the baseline's entry there.
    """

    shapes: tuple[LayerShape, ...]
    m_grid: tuple[int, ...]
    backends: tuple[str, ...]
    timer: str
    out_dtype: str = "bfloat16"
    block_shape: tuple[int, int] = (128, 128)
    prune: PruneSettings = PruneSettings()
    keep: int | None = 4
    screen_margin: float = 0.25
    screen_reps: int = 5
    final_reps: int = 50
    interpret: bool = False
    engine: "EngineMode | None" = None

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ValueError("a sweep needs at least one shape")
        if not self.m_grid or any(m < 1 for m in self.m_grid):
            raise ValueError(f"m_grid must hold positive integers, got {self.m_grid!r}")
        if not self.backends:
            raise ValueError("a sweep needs at least one backend")
        if self.keep is not None and self.keep < 1:
            raise ValueError(f"keep must be >= 1 or None, got {self.keep!r}")
        if self.screen_margin < 0 or self.screen_reps < 1 or self.final_reps < 1:
            raise ValueError("screen_margin must be >= 0 and screen_reps/final_reps >= 1")

    def hashed(self) -> dict:
        """The settings that change what a sweep measures (part of the space hash)."""
        hashed = {"backends": list(self.backends), "timer": self.timer, "out_dtype": self.out_dtype,
                  "block_shape": list(self.block_shape), "budget": self.prune.budget,
                  "plain_triton": self.prune.plain_triton, "keep": self.keep, "screen_margin": self.screen_margin,
                  "screen_reps": self.screen_reps, "final_reps": self.final_reps, "interpret": self.interpret}
        if self.engine is not None:  # only then: the hashes of other sweeps stay what they were
            hashed["engine"] = self.engine.hashed()
        return hashed


@dataclass
class SweepPlan:
    """Every point's checked and pruned candidates, computed before anything runs."""

    settings: SweepSettings
    arch: ArchSpec
    spaces: dict[tuple[int, int], list[PointSpace]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: SweepSettings, arch: ArchSpec) -> "SweepPlan":
        plan = cls(settings, arch)
        bn, bk = settings.block_shape
        for shape in settings.shapes:
            spaces = []
            for m in settings.m_grid:
                problem = GemmProblem(m, shape.n, shape.k, bn, bk, settings.out_dtype)
                for backend in settings.backends:
                    floor, pinned = (), ()
                    if settings.engine is not None and backend == settings.engine.backend:
                        floor, pinned = settings.engine.floor_params(), settings.engine.pinned_params(problem)
                    spaces.append(point_space(backend, problem, arch, settings.prune, settings.interpret,
                                              floor, pinned))
            plan.spaces[(shape.n, shape.k)] = spaces
        return plan

    @property
    def hash(self) -> str:
        shapes = [[s.n, s.k] for s in self.settings.shapes]
        return space_hash((s for spaces in self.spaces.values() for s in spaces),
                          {**self.settings.hashed(), "shapes": shapes, "m_grid": list(self.settings.m_grid)})

    def counts(self) -> dict[str, int]:
        """Candidates kept, rejected and pruned over the whole plan."""
        totals = collections.Counter()
        for spaces in self.spaces.values():
            for s in spaces:
                totals["kept"] += len(s.candidates)
                totals["rejected"] += len(s.rejected)
                totals["pruned"] += s.pruned
        return dict(totals)
