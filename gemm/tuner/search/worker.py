"""Evaluating one candidate at one point, and the loop a worker process runs.

``Evaluator.run`` builds a candidate, then either verifies it against the fp32
reference (stage VERIFY) or times it (stages SCREEN / FINAL, the graph's own
output checked too), and turns the named, expected failures into statuses:

=====================================================  ==============  ===============
exception                                              status          worker restart
=====================================================  ==============  ===============
``UnsupportedProblem``                                 INVALID         no
Triton ``OutOfResources`` (too much smem/registers)    INVALID         no
``CompileError``, Triton ``CompilationError``/ptxas    COMPILE_FAILED  no
``LaunchError``, Triton ``InterpreterError``           LAUNCH_FAILED   no
CUDA out of memory                                     LAUNCH_FAILED   no
CUDA runtime errors (``torch.AcceleratorError``,       LAUNCH_FAILED   yes
"CUDA error" / "Triton Error [CUDA]" RuntimeErrors)
=====================================================  ==============  ===============

Anything else is a bug, not a status: it propagates (the runner re-raises it
in the parent with the candidate attached). After a CUDA runtime error such
as an illegal address the context is unusable, so the worker asks to be
replaced.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
import traceback

import torch

from gemm.kernels.base import CompileError, LaunchError, UnsupportedProblem
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import fp64_row_chunks, reference_matmul, relative_error, tolerance_for
from gemm.tuner.results.measurement import Measurement, Stage, Status
from gemm.tuner.search.space import resolve_backend

# A row or column whose own relative error exceeds this many tolerances is wrong even if the
# whole matrix passes (e.g. a ragged edge tile left unwritten).
_LOCAL_TOLERANCE_FACTOR = 10.0
#: Tries of an item that runs out of GPU memory, with pauses of OOM_PAUSE_S, 2 * OOM_PAUSE_S, ... between.
OOM_TRIES = 3
OOM_PAUSE_S = 2.0


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs: device, timer, cache size for cold-L2 rotation, data seed.

    ``threads`` caps torch's CPU threads per worker (None: torch's default), so
    a pool of workers making random inputs at once does not oversubscribe the CPUs.
    """

    device: str = "cuda"
    timer: str = "gemm.tuner.timing:CudaGraphTimer"
    l2_bytes: int = 50 * 2**20
    seed: int = 0
    threads: int | None = None


@dataclasses.dataclass(frozen=True)
class Item:
    """One candidate at one point and stage. ``m_max`` is the largest M of the shape: inputs are
    generated once per shape at ``m_max`` rows and sliced, so every M shares one fresh draw."""

    backend: str
    params_json: str
    problem: GemmProblem
    stage: Stage
    m_max: int
    reps: int = 0

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)

    def row(self, status: Status, message: str = "", **values) -> Measurement:
        p = self.problem
        return Measurement(self.backend, self.params, p.n, p.k, p.m, self.stage, status, message, **values)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A measurement; whether the worker must be replaced (broken CUDA context); whether it ran out of memory."""

    measurement: Measurement
    restart: bool = False
    out_of_memory: bool = False


def _triton_error(name: str):
    try:
        module = importlib.import_module("triton.runtime.errors")
        compiler = importlib.import_module("triton.compiler.errors")
    except ImportError:
        return ()
    found = getattr(module, name, None) or getattr(compiler, name, None)
    return (found,) if found is not None else ()


def classify(exc: BaseException) -> tuple[Status, bool] | None:
    """(status, restart) for an exception on the allow-list, None for anything else."""
    if isinstance(exc, UnsupportedProblem) or isinstance(exc, _triton_error("OutOfResources")):
        return Status.INVALID, False
    if isinstance(exc, (CompileError,) + _triton_error("CompilationError") + _triton_error("PTXASError")):
        return Status.COMPILE_FAILED, False
    if isinstance(exc, (LaunchError,) + _triton_error("InterpreterError")):
        return Status.LAUNCH_FAILED, False
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return Status.LAUNCH_FAILED, False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return Status.LAUNCH_FAILED, True
    # CUDA runtime errors reported as plain RuntimeErrors, by torch or by Triton's launcher.
    if isinstance(exc, RuntimeError) and any(text in str(exc) for text in ("CUDA error", "Triton Error [CUDA]")):
        return Status.LAUNCH_FAILED, True
    return None


def _local_errors(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest relative error of any single row or column (inf on NaN/Inf).

    Each line's error is taken relative to its own norm, floored at a tenth of
    the median line norm: a line whose reference happens to be near zero (a
    single element when M = 1) must not turn rounding noise into a failure.
    Squared sums are accumulated over blocks of rows to bound memory.
    """
    row_num, row_den, col_num, col_den = [], [], 0.0, 0.0
    for o, r in fp64_row_chunks(out, ref):
        diff_sq = torch.square(o - r)
        if not bool(torch.isfinite(diff_sq).all()):
            return float("inf")
        ref_sq = torch.square(r)
        row_num.append(diff_sq.sum(dim=1))
        row_den.append(ref_sq.sum(dim=1))
        col_num = col_num + diff_sq.sum(dim=0)
        col_den = col_den + ref_sq.sum(dim=0)
    worst = 0.0
    for num_sq, den_sq in ((torch.cat(row_num), torch.cat(row_den)), (col_num, col_den)):
        num, den = num_sq.sqrt(), den_sq.sqrt()
        floor = 0.1 * float(den.median())
        if floor <= 0.0:
            return 0.0 if float(num.max()) == 0.0 else float("inf")
        worst = max(worst, float((num / den.clamp_min(floor)).max()))
    return worst


def check_output(out, ref: torch.Tensor, problem: GemmProblem) -> tuple[float, str | None]:
    """(relative Frobenius error, None) when ``out`` is right, else (error, what is wrong)."""
    if not isinstance(out, torch.Tensor):
        return float("inf"), f"returned {type(out).__name__}, expected a tensor"
    expected = (problem.m, problem.n)
    if tuple(out.shape) != expected:
        return float("inf"), f"output shape {tuple(out.shape)}, expected {expected}"
    if out.dtype != problem.torch_out_dtype:
        return float("inf"), f"output dtype {out.dtype}, expected {problem.torch_out_dtype}"
    tol = tolerance_for(problem.torch_out_dtype)
    err = relative_error(out, ref)
    if not err <= tol:
        return err, f"relative error {err:.3g} > {tol:g}" if err != float("inf") else "output holds NaN or Inf"
    local = _local_errors(out, ref)
    if not local <= _LOCAL_TOLERANCE_FACTOR * tol:
        return err, f"a row or column is off by {local:.3g} (whole-matrix error {err:.3g})"
    return err, None


class Evaluator:
    """Runs Items in this process, caching one shape's inputs and reference and recent kernels."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._inputs_key: tuple | None = None
        self._inputs = None
        self._reference = None
        self._built: dict[tuple, object] = {}
        self._timer = None

    @property
    def timer(self):
        if self._timer is None:
            from gemm.tuner.timing import timer_class

            self._timer = timer_class(self.settings.timer)(self.settings.l2_bytes)
        return self._timer

    def _shape_data(self, problem: GemmProblem, m_max: int):
        """(a, b, a_scale, b_scale, reference) at ``m_max`` rows for the problem's N, K."""
        key = (problem.n, problem.k, problem.block_n, problem.block_k, m_max)
        if key != self._inputs_key:
            self._inputs = self._reference = None
            self.release_gpu_memory()  # the last shape's blocks must not stay reserved in this process
            seed = hash((self.settings.seed, problem.n, problem.k)) % (2**63)
            block = (problem.block_n, problem.block_k)
            self._inputs = random_problem_inputs(m_max, problem.n, problem.k, block, self.settings.device, seed)
            self._reference = reference_matmul(*self._inputs, block_size=block)
            self._inputs_key = key
        return self._inputs, self._reference

    def point_data(self, problem: GemmProblem, m_max: int):
        """Inputs and reference of ``problem``: the first M rows of the shape's draw."""
        (a, b, a_scale, b_scale), ref = self._shape_data(problem, max(m_max, problem.m))
        m = problem.m
        return (a[:m], b, a_scale[:m], b_scale), ref[:m]

    def _build(self, item: Item):
        key = (item.backend, item.params_json, item.problem)
        fn = self._built.get(key)
        if fn is None:
            backend = resolve_backend(item.backend)
            params = backend.params_from_dict(item.params)
            fn = backend.build(item.problem, params)
            if len(self._built) > 256:
                self._built.clear()
            self._built[key] = fn
        return fn

    def release_gpu_memory(self) -> None:
        """Give cached GPU blocks back (between jobs, at a new shape, after running out of memory), so an
        idle worker does not starve a busy one."""
        if self._timer is not None and hasattr(self._timer, "release"):
            self._timer.release()
        if self.settings.device.startswith("cuda") and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def run(self, item: Item, on_built=lambda: None) -> Outcome:
        """Evaluate ``item``; expected failures become statuses, anything else propagates.

        Running out of GPU memory is first taken as the other workers' peak, not the
        candidate's fault: cached blocks are released and the item is retried after a
        pause, ``OOM_TRIES`` times in all, before it is recorded as LAUNCH_FAILED.
        """
        for attempt in range(1, OOM_TRIES):
            outcome = self._run_once(item, on_built)
            if not outcome.out_of_memory:
                return outcome
            self.release_gpu_memory()
            time.sleep(OOM_PAUSE_S * attempt)
        outcome = self._run_once(item, on_built)
        if outcome.out_of_memory:
            measurement = outcome.measurement
            message = f"out of GPU memory after {OOM_TRIES} tries: {measurement.message}"[:2000]
            outcome = dataclasses.replace(outcome, measurement=dataclasses.replace(measurement, message=message))
        return outcome

    def _run_once(self, item: Item, on_built) -> Outcome:
        try:
            inputs, ref = self.point_data(item.problem, item.m_max)
            fn = self._build(item)
            on_built()
            if item.stage == Stage.VERIFY:
                return Outcome(self._verify(item, fn, inputs, ref))
            return Outcome(self._time(item, fn, inputs, ref))
        except Exception as exc:  # noqa: BLE001 -- filtered through the allow-list just below
            verdict = classify(exc)
            if verdict is None:
                raise
            status, restart = verdict
            message = f"{type(exc).__name__}: {exc}".strip()
            # Backends that wrap torch errors (cuBLAS through torch._scaled_mm) keep torch's wording.
            out_of_memory = isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(exc)
            return Outcome(item.row(status, message[:2000]), restart, out_of_memory)

    def _synchronize(self) -> None:
        if self.settings.device.startswith("cuda"):
            torch.cuda.synchronize()

    def _verify(self, item: Item, fn, inputs, ref) -> Measurement:
        # Two calls: a kernel that leaves state behind (e.g. split-K counters) must stay right on reuse.
        worst = 0.0
        for call in (1, 2):
            out = fn(*inputs)
            self._synchronize()
            err, problem = check_output(out, ref, item.problem)
            if problem is not None:
                return item.row(Status.WRONG_RESULT, f"call {call}: {problem}", rel_error=err)
            worst = max(worst, err)
        return item.row(Status.OK, rel_error=worst)

    def _time(self, item: Item, fn, inputs, ref) -> Measurement:
        timing = self.timer.measure(fn, inputs, max(1, item.reps))
        rel_error = None
        if timing.output is not None:  # what the graph computed must be right too
            rel_error, problem = check_output(timing.output, ref, item.problem)
            if problem is not None:
                return item.row(Status.WRONG_RESULT, f"timed run: {problem}", rel_error=rel_error)
        row = item.row(Status.OK, rel_error=rel_error, spread=timing.spread, reps=timing.reps)
        return row.with_timing(timing.us, item.problem.flops)


def worker_main(conn, settings: WorkerSettings) -> None:
    """Worker process loop: receive ``(job_id, items)``, answer per item, then ``("done", job_id)``.

    Messages to the parent: ``("ready", None)`` once started, ``("built", job_id, index)`` once an item's kernel
    is built (the run timeout starts), ``("result", job_id, index, outcome)``,
    ``("error", job_id, index, traceback)`` for an exception off the
    allow-list (the worker then stops), ``("done", job_id)``. ``None`` or a
    closed pipe (the parent is gone) ends the loop.
    """
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        conn.send(("ready", None))
        _serve(conn, Evaluator(settings))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return


def _serve(conn, evaluator: Evaluator) -> None:
    while True:
        message = conn.recv()
        if message is None:
            return
        job_id, items = message
        for index, item in enumerate(items):
            try:
                outcome = evaluator.run(item, on_built=lambda i=index: conn.send(("built", job_id, i)))
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception:  # noqa: BLE001 -- reported to the parent, which raises it with the candidate
                conn.send(("error", job_id, index, traceback.format_exc()))
                return
            conn.send(("result", job_id, index, outcome))
            if outcome.restart:
                return  # the CUDA context is broken: the parent starts a fresh worker
        evaluator.release_gpu_memory()
        conn.send(("done", job_id))
