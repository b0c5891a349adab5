"""What a sweep leaves behind: its results log (named, fingerprinted, resumed), each shape's config file,
and the ``TuneOutcome`` the command line reports.

A plain and a distributed sweep name and fingerprint their logs alike, so
either kind of run can resume the other's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from gemm.arch import ArchSpec
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.config_files import write_choices
from gemm.tuner.results.log import Fingerprint, ResultsLog
from gemm.tuner.results.measurement import Measurement, Stage
from gemm.tuner.results.select import Choice
from gemm.tuner.search.plan import SweepPlan
from gemm.tuner.settings import TuneSettings
from gemm.tuner.target import Target

#: Why a sweep stopped before its end (``TuneOutcome.stopped``); either way ``--resume`` continues it.
TIME_LIMIT, INTERRUPTED = "time_limit", "interrupted"


@dataclass(frozen=True)
class DeviceOutcome:
    """One device name's rows after a sweep (those resumed from its log included), and its log."""

    device_name: str
    arch: ArchSpec
    rows: tuple[Measurement, ...]
    log_path: Path
    baseline_points: tuple = ()  # gemm.tuner.engine.compare.BaselinePoint of an engine sweep with a baseline
    report: tuple[Path, ...] = ()  # the comparison's CSV and markdown


@dataclass(frozen=True)
class TuneOutcome:
    """What a sweep did: rows per device, config files written, time taken, and why it stopped early.

    ``restarts`` (a sweep on one GPU) counts evaluation workers replaced; ``workers`` and ``lost`` (a
    sweep over several GPUs) count the GPU workers and those that died. ``savings`` is the line of
    ``pruning_savings``.
    """

    settings: TuneSettings
    devices: tuple[DeviceOutcome, ...]
    written: tuple[Path, ...]
    wall_s: float
    stopped: str | None = None
    restarts: int | None = None
    workers: int | None = None
    lost: int | None = None
    savings: str | None = None


def sweep_fingerprint(target: Target, plan: SweepPlan) -> Fingerprint:
    """The log header of a sweep of ``plan`` on ``target`` with this software."""
    from gemm.configs import Provenance

    provenance = Provenance.current("measured")
    return Fingerprint(target.device_name, target.arch.name, provenance.torch, provenance.triton,
                       provenance.cutlass, provenance.tool_version, plan.hash, plan.settings.block_shape,
                       plan.settings.out_dtype)


def plan_line(plan: SweepPlan, device_name: str, log_path: Path) -> str:
    """What a sweep is about to do: shapes x M on a device, candidates to run, rejected and pruned (and, in an
    engine sweep, its floor and baseline)."""
    settings, counts = plan.settings, plan.counts()
    engine = f"\ngemm tune: {settings.engine.describe(device_name)}" if settings.engine is not None else ""
    return (f"gemm tune: {len(settings.shapes)} shapes x {len(settings.m_grid)} M on {device_name} with "
            f"{', '.join(settings.backends)}: {counts.get('kept', 0)} candidates to run, "
            f"{counts.get('rejected', 0)} rejected by constraints, {counts.get('pruned', 0)} pruned by the cost "
            f"model; log {log_path}{engine}")


def default_log_path(out_root: Path, device_name: str, plan: SweepPlan) -> Path:
    """``out_root/logs/tune-<device>-<space hash>.jsonl``: one log per device and search."""
    return out_root / "logs" / f"tune-{device_name}-{plan.hash[:12]}.jsonl"


def open_results_log(log_path: Path, fingerprint: Fingerprint, resume: bool,
                     say: Callable[[str], None]) -> tuple[ResultsLog, list[Measurement]]:
    """(open log, rows already there): resumed when asked and present, else new. Raises LogMismatchError."""
    if resume and log_path.exists():
        log, existing = ResultsLog.resume(log_path, fingerprint)
        say(f"gemm tune: resuming {log_path} ({len(existing)} rows already there)")
        return log, existing
    if resume:
        say(f"gemm tune: no log at {log_path} to resume; starting a new sweep")
    return ResultsLog.create(log_path, fingerprint), []


def shape_choices(rows: list[Measurement], tie: float, plan: SweepPlan, shape: LayerShape
                  ) -> tuple[dict[int, Choice], list]:
    """(the choice per M of one finished shape, its ``BaselinePoint`` list): ``select``'s choices, and in an
    engine sweep with a baseline those choices with entries slower than the baseline's replaced by them
    (``gemm.tuner.engine.compare``)."""
    from gemm.tuner.results.select import select

    choices = select(rows, tie).get((shape.n, shape.k), {})
    engine = plan.settings.engine
    if engine is None or engine.baseline is None:
        return choices, []
    from gemm.tuner.engine.compare import compare_shape

    return compare_shape(shape.n, shape.k, choices, rows, engine.baseline, engine.backend, plan.settings.m_grid)


def report_stem(log_path: Path, baseline_label: str) -> str:
    """Name (without suffix) of an engine sweep's comparison report: its results log's name, so two sweeps
    into one output folder (say TP8, then TP4) keep a report each, and a resumed sweep rewrites its own."""
    name = Path(log_path).name
    for suffix in (".gz", ".jsonl"):
        name = name.removesuffix(suffix)
    return f"{name}-vs-{baseline_label}"


def write_baseline_report(out_root: Path, device_name: str, plan: SweepPlan, points: list,
                          log_path: Path) -> tuple[Path, Path] | None:
    """The comparison of an engine sweep with its baseline, as ``out_root/reports/<log name>-vs-<baseline>``
    ``.csv`` and ``.md`` (``report_stem``); None without a baseline or points."""
    engine = plan.settings.engine
    if engine is None or engine.baseline is None or not points:
        return None
    from gemm.configs.engine_targets import engine_named
    from gemm.tuner.engine.report import write_report

    title = (f"{engine_named(engine.engine).title} kernel on {device_name}: the tuned files against "
             f"{engine.baseline.label}")
    return write_report(points, out_root / "reports", report_stem(log_path, engine.baseline.label), title)


def write_shape_config(out_root: Path, target: Target, shape: LayerShape, choices: dict[int, Choice],
                       plan: SweepPlan) -> Path | None:
    """Write (merge) the config file of one shape from its choices; None when no entry is writable."""
    from gemm.configs import Provenance

    settings = plan.settings
    return write_choices(out_root, target.device_name, target.arch.name, shape.n, shape.k, choices,
                         settings.out_dtype, settings.block_shape, Provenance.current("measured"))


def pruning_savings(counts: dict, rows: Iterable[Measurement], wall_s: float, resumed_rows: int) -> str | None:
    """One line: candidates the cost model pruned and the sweep time that saved, at this sweep's measured
    seconds per evaluated candidate (None when nothing was pruned or nothing ran in this process)."""
    pruned = counts.get("pruned", 0)
    evaluated = len({(r.backend, r.params_key, r.n, r.k, r.m) for r in rows if r.stage != Stage.SPACE})
    if not pruned or not evaluated or resumed_rows:
        return None
    per_candidate = wall_s / evaluated
    return (f"pruning: the cost model kept {counts.get('kept', 0)} of {counts.get('kept', 0) + pruned} valid "
            f"candidates; at this sweep's {per_candidate:.2f} s per candidate it saved about "
            f"{pruned * per_candidate / 60:.1f} min")
