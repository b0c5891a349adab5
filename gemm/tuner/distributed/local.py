"""One worker process per GPU of this machine (``gemm tune --gpus``).

Each GPU gets a spawned *agent* process pinned to it with
``CUDA_VISIBLE_DEVICES`` (by the GPU's UUID, so the pin holds whatever mask
the driver itself runs under); the agent runs one unit at a time
(``gemm.tuner.distributed.unit.run_unit``) with its own pool of evaluation
processes, which inherit the pin, and streams the unit's rows and progress
back over a pipe. An agent that dies mid-unit is reported as ``lost`` and is
started afresh for its next unit; one that dies before it was ready stops the
sweep (the environment is broken, not a candidate).

With ``--interpret`` the "GPUs" are CPU stand-ins: N agents, no pinning, so
the scheduling, streaming and requeue logic runs on any machine.
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from multiprocessing.connection import wait

from gemm.tuner.distributed.scheduler import Event, Slot
from gemm.tuner.distributed.unit import UnitTask


_MAX_STAND_INS = 64


@dataclass(frozen=True)
class LocalGpu:
    """A GPU of this machine as a slot: its label ("gpu 3"), device name and pin.

    ``visible`` is the ``CUDA_VISIBLE_DEVICES`` value its agent runs under
    (None: the environment is left alone, for CPU stand-ins).
    """

    label: str
    device_name: str
    arch: object
    visible: str | None


def parse_gpu_list(text: str, available: int) -> tuple[int, ...]:
    """Indices named by ``--gpus``: "all", a count "N" (the first N), or a list "0,1,3".

    Raises ValueError naming the option and what is expected.
    """
    value = text.strip().lower()
    if value == "all":
        if available < 1:
            raise ValueError("--gpus all: no GPU is visible")
        return tuple(range(available))
    parts = [p.strip() for p in value.split(",")]
    if not value or not all(p.isdigit() for p in parts):
        raise ValueError(f"--gpus expects 'all', a count N or a list of GPU indices like 0,1,3; got {text!r}")
    numbers = [int(p) for p in parts]
    if len(numbers) == 1:
        count = numbers[0]
        if not 1 <= count <= available:
            raise ValueError(f"--gpus {count}: expected between 1 and {available} (the GPUs visible here)")
        return tuple(range(count))
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"--gpus {text}: a GPU is named twice")
    missing = [n for n in numbers if n >= available]
    if missing:
        raise ValueError(f"--gpus {text}: no GPU {missing[0]} here (visible: 0..{available - 1})")
    return tuple(numbers)


def _pin_of(index: int) -> str:
    """``CUDA_VISIBLE_DEVICES`` value naming the GPU that is ``cuda:index`` in this process."""
    import torch

    raw = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    raw_bytes = getattr(raw, "bytes", None)
    if raw_bytes and len(raw_bytes) == 16:
        return f"GPU-{uuid.UUID(bytes=bytes(raw_bytes))}"
    return str(index)  # no UUID from this torch: right unless the driver itself runs under a mask


def local_gpus(spec: str, interpret: bool, cpu_count: int) -> list[LocalGpu]:
    """The GPUs ``--gpus spec`` names, with their device names; CPU stand-ins with ``--interpret``.

    With ``--interpret`` a count or list only says how many stand-ins to run,
    and "all" means one per CPU.
    """
    if interpret:
        from gemm.arch import interpreter_arch

        arch = interpreter_arch()
        if spec.strip().lower() == "all":
            indices = tuple(range(max(1, cpu_count)))
        else:
            indices = parse_gpu_list(spec, available=_MAX_STAND_INS)
        return [LocalGpu(f"cpu {i}", arch.config_device_name, arch, None) for i in indices]
    import torch

    from gemm.arch import detect_arch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < 1:
        raise ValueError("--gpus: no CUDA GPU is visible here (use --interpret for CPU stand-ins)")
    gpus = []
    for index in parse_gpu_list(spec, available):
        arch = detect_arch(index)
        gpus.append(LocalGpu(f"gpu {index}", arch.config_device_name, arch, _pin_of(index)))
    return gpus


def agent_main(conn, visible: str | None) -> None:
    """Agent process: pin to the GPU, report ready, then run ``(unit_id, UnitTask)`` messages until ``None``.

    Messages to the driver: ``("ready", None, None)``, ``(kind, unit_id, payload)``
    for each unit event, ``("finished", unit_id, outcome)``, and
    ``("error", unit_id, text)`` for an unexpected error (the agent then stops).
    """
    from gemm import envs

    if visible is not None:
        envs.pin_cuda_devices(visible)  # before anything in this process touches CUDA
    # The driver ends a busy agent with SIGTERM: unwinding lets its evaluation pool kill its own workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from gemm.tuner.distributed.unit import run_unit
    from gemm.tuner.search.runner import CandidateError, WorkerStartError

    try:
        conn.send(("ready", None, None))
        while True:
            message = conn.recv()
            if message is None:
                return
            unit_id, task = message
            try:
                outcome = run_unit(task, lambda kind, payload: conn.send((kind, unit_id, payload)))
            except (CandidateError, WorkerStartError) as exc:
                conn.send(("error", unit_id, str(exc)))
                return
            except Exception:  # noqa: BLE001 -- a bug: the driver stops the sweep and shows it
                conn.send(("error", unit_id, traceback.format_exc()))
                return
            conn.send(("finished", unit_id, outcome))
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        return  # the driver is gone or was interrupted


class _Agent:
    def __init__(self, gpu: LocalGpu) -> None:
        self.gpu = gpu
        self.process = None
        self.conn = None
        self.ready = False
        self.unit_id: int | None = None


class LocalExecutor:
    """The ``Executor`` of ``gemm.tuner.distributed.scheduler`` for this machine's GPUs (see the module docstring)."""

    def __init__(self, gpus: list[LocalGpu]) -> None:
        if not gpus:
            raise ValueError("LocalExecutor needs at least one GPU")
        self._context = multiprocessing.get_context("spawn")
        self._agents = {gpu.label: _Agent(gpu) for gpu in gpus}
        self._unit_ids = itertools.count()
        for agent in self._agents.values():
            self._start(agent)

    def _start(self, agent: _Agent) -> None:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(target=agent_main, args=(child_conn, agent.gpu.visible), daemon=False,
                                        name=f"gemm-tune-{agent.gpu.label.replace(' ', '')}")
        process.start()
        child_conn.close()  # its death then reads as EOF here
        agent.process, agent.conn, agent.ready = process, parent_conn, False

    def pids(self) -> dict[str, int]:
        """Process id of each slot's agent (for diagnostics)."""
        return {label: a.process.pid for label, a in self._agents.items() if a.process is not None}

    def slots(self) -> list[Slot]:
        return [Slot(label, agent.gpu.device_name) for label, agent in self._agents.items()]

    def start(self, slot: str, task: UnitTask) -> None:
        agent = self._agents[slot]
        if agent.process is None:
            self._start(agent)
        agent.unit_id = next(self._unit_ids)
        try:
            agent.conn.send((agent.unit_id, task))
        except (BrokenPipeError, OSError):
            pass  # it died just now: the next poll reports the loss

    def poll(self, timeout: float) -> list[Event]:
        agents = [a for a in self._agents.values() if a.process is not None]
        wait([a.conn for a in agents] + [a.process.sentinel for a in agents], timeout=timeout)
        events: list[Event] = []
        for agent in agents:
            events += self._drain(agent)
        return events

    def _drain(self, agent: _Agent) -> list[Event]:
        events: list[Event] = []
        label = agent.gpu.label
        try:
            while agent.conn.poll():
                kind, unit_id, payload = agent.conn.recv()
                if kind == "ready":
                    agent.ready = True
                elif unit_id == agent.unit_id:
                    events.append(Event(label, kind, payload))
                    if kind in ("finished", "error"):
                        agent.unit_id = None
        except (EOFError, OSError):
            pass
        if agent.process.is_alive():
            return events
        agent.process.join(timeout=5)
        code = agent.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        was_ready, busy = agent.ready, agent.unit_id is not None
        self._forget(agent)
        if not was_ready:
            events.append(Event(label, "error", f"the worker process died before it was ready ({how}); see its "
                                                f"error output above"))
        elif busy:
            events.append(Event(label, "lost", f"its process died ({how})"))
        return events

    def _forget(self, agent: _Agent) -> None:
        if agent.conn is not None:
            agent.conn.close()
        agent.process = agent.conn = None
        agent.ready, agent.unit_id = False, None

    def close(self) -> None:
        """Stop the agents: idle ones are asked to leave, busy ones are terminated (their workers with them)."""
        agents = [a for a in self._agents.values() if a.process is not None]
        for agent in agents:
            if agent.unit_id is not None:
                agent.process.terminate()
            else:
                try:
                    agent.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + 30
        for agent in agents:
            agent.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if agent.process.is_alive():
                agent.process.kill()
                agent.process.join(timeout=10)
            self._forget(agent)

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
