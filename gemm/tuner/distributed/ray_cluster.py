"""Tuning on a Ray cluster (``gemm tune --ray [ADDRESS]``); Ray is the optional extra ``ray``.

Every GPU of the cluster is a slot of the scheduler (``gemm.tuner.distributed.scheduler``):
a unit runs as a Ray task holding one GPU on that slot's node (node-affinity
scheduling; Ray pins the task's ``CUDA_VISIBLE_DEVICES``), in a fresh worker
process per unit (``max_calls=1``: a CUDA context never outlives its task).
The task streams its rows and progress back as a Ray generator; only the
driver writes logs and config files. Before anything runs, one probe task per
GPU node reports the node's GPU model and which backends can run there, so a
cluster of several GPU models tunes each model under its own device name,
with its own plan, log and configs. A task that fails (its process or node
died) is reported as ``lost``, and a node that has left the cluster stops
being a slot.

With ``--interpret`` the slots are CPU tasks (one CPU each), as many as the
cluster has CPUs or ``--gpus N`` says.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import traceback
from dataclasses import dataclass

from gemm import envs
from gemm.tuner.distributed.scheduler import Event, Slot
from gemm.tuner.distributed.unit import UnitTask
from gemm.tuner.settings import SetupError

PROBE_TIMEOUT_S = 600.0
_BATCH = 256  # events per streamed item: rows arrive in bursts, one Ray object per row would be wasteful


class RayUnavailable(SetupError):
    """Ray is not installed, or the cluster cannot be reached."""


def import_ray():
    """The ``ray`` module, or RayUnavailable saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray, which is not installed here: install the optional extra with "
                             "`pip install 'gemm[ray]'` (or `pip install 'ray[default]'`)") from None
    return ray


def connect(address: str | None, interpret: bool):
    """Join the cluster at ``address`` (None: Ray's default, RAY_ADDRESS or a new local instance).

    Reuses a connection this process already has. Returns the ``ray`` module.
    """
    ray = import_ray()
    if not ray.is_initialized():
        # The interpreter must be on in every task before Triton is imported there.
        runtime_env = {"env_vars": envs.interpreter_variables()} if interpret else None
        try:
            ray.init(address=address or None, runtime_env=runtime_env, include_dashboard=False,
                     log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailable(f"--ray: cannot connect to the Ray cluster at {address or 'the default address'}: "
                                 f"{exc}") from None
    return ray


@dataclass(frozen=True)
class NodeReport:
    """What a probe found on a GPU node: its GPU's spec and why each backend cannot run there (None: it can)."""

    arch: object
    unavailable: dict[str, str | None]


def probe_node(backends: tuple[str, ...]) -> NodeReport:
    """Run on a GPU node: its GPU model and each backend's availability there."""
    from gemm.arch import detect_arch
    from gemm.tuner.search.space import resolve_backend

    unavailable = {}
    for ref in backends:
        try:
            unavailable[ref] = resolve_backend(ref).unavailable_reason()
        except (ImportError, ValueError) as exc:
            unavailable[ref] = str(exc)
    return NodeReport(detect_arch(), unavailable)


@dataclass(frozen=True)
class RaySlot:
    """A slot of the cluster: one GPU of a node (``node_id`` None for interpreter tasks)."""

    id: str
    device_name: str
    node_id: str | None
    gpus_on_node: int = 1


def gpu_slots(ray, backends: tuple[str, ...], limit: int | None) -> tuple[list[RaySlot], dict[str, NodeReport]]:
    """Probe every GPU node: (slots, report per device name). At most ``limit`` slots when given."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) >= 1]
    if not nodes:
        raise RayUnavailable("--ray: the cluster has no GPU node (use --interpret for CPU tasks)")
    probe = ray.remote(max_calls=1)(probe_node)
    refs = [probe.options(num_gpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(backends) for n in nodes]
    reports = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    slots: list[RaySlot] = []
    devices: dict[str, NodeReport] = {}
    for node, report in zip(nodes, reports):
        name = report.arch.config_device_name
        devices.setdefault(name, report)
        count = int(node["Resources"]["GPU"])
        host = node.get("NodeManagerAddress", node["NodeID"][:8])
        slots += [RaySlot(f"{host} gpu {i}", name, node["NodeID"], count) for i in range(count)]
    return (slots[:limit] if limit else slots), devices


def cpu_slots(ray, device_name: str, limit: int | None) -> list[RaySlot]:
    """Interpreter slots: one per CPU of the cluster, at most ``limit``."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    count = max(1, min(cpus, limit) if limit else cpus)
    return [RaySlot(f"ray task {i}", device_name, None) for i in range(count)]


def _unit_stream(task: UnitTask, expected_device: str | None):
    """The Ray task's body: run the unit in a thread, yield its events in batches, end with its outcome."""
    from gemm.tuner.distributed.unit import run_unit
    from gemm.tuner.search.runner import CandidateError, WorkerStartError

    if expected_device is not None:
        import torch

        from gemm.arch import normalize_device_name

        here = normalize_device_name(torch.cuda.get_device_name(0))
        if here != expected_device:
            yield [("error", f"this node's GPUs are not all one model ({here} beside {expected_device}); "
                             f"such a node is not supported")]
            return
    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            events.put(("finished", run_unit(task, lambda kind, payload: events.put((kind, payload)))))
        except (CandidateError, WorkerStartError) as exc:
            events.put(("error", str(exc)))
        except BaseException:  # noqa: BLE001 -- a bug: the driver stops the sweep and shows it
            events.put(("error", traceback.format_exc()))

    threading.Thread(target=work, name="gemm-unit", daemon=True).start()
    while True:
        batch = [events.get()]
        while len(batch) < _BATCH:
            try:
                batch.append(events.get_nowait())
            except queue.Empty:
                break
        yield batch
        if batch[-1][0] in ("finished", "error"):
            return


class RayExecutor:
    """The ``Executor`` of ``gemm.tuner.distributed.scheduler`` on a Ray cluster (see the module docstring)."""

    def __init__(self, ray, slots: list[RaySlot], interpret: bool) -> None:
        if not slots:
            raise ValueError("RayExecutor needs at least one slot")
        self._ray = ray
        self._slots = {slot.id: slot for slot in slots}
        self._interpret = interpret
        self._running: dict[str, object] = {}  # slot id -> the task's generator
        self._gone_nodes: set[str] = set()
        # GPU tasks get a fresh process each (max_calls=1); interpreter tasks may share processes.
        self._remote = ray.remote(_unit_stream) if interpret else ray.remote(max_calls=1)(_unit_stream)

    def slots(self) -> list[Slot]:
        return [Slot(s.id, s.device_name) for s in self._slots.values() if s.node_id not in self._gone_nodes]

    def start(self, slot: str, task: UnitTask) -> None:
        spec = self._slots[slot]
        task = dataclasses.replace(task, gpus_per_host=spec.gpus_on_node)
        if self._interpret:
            options = {"num_cpus": 1}
        else:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options = {"num_gpus": 1, "scheduling_strategy": NodeAffinitySchedulingStrategy(spec.node_id, soft=False)}
        expected = None if self._interpret else spec.device_name
        self._running[slot] = self._remote.options(max_retries=0, **options).remote(task, expected)

    def poll(self, timeout: float) -> list[Event]:
        if not self._running:
            return []
        by_generator = {id(gen): slot for slot, gen in self._running.items()}
        ready, _ = self._ray.wait(list(self._running.values()), num_returns=1, timeout=timeout)
        events: list[Event] = []
        while ready:
            for generator in ready:
                events += self._next(by_generator[id(generator)], generator)
            live = list(self._running.values())
            ready = self._ray.wait(live, num_returns=len(live), timeout=0)[0] if live else []
        return events

    def _next(self, slot: str, generator) -> list[Event]:
        try:
            batch = self._ray.get(next(generator))
        except StopIteration:
            del self._running[slot]
            return []
        except Exception as exc:  # noqa: BLE001 -- any failure of the task or its node is a lost worker
            del self._running[slot]
            self._check_node(self._slots[slot].node_id)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return [Event(slot, "lost", f"the Ray task failed: {type(exc).__name__}: {first}"[:500])]
        if batch and batch[-1][0] in ("finished", "error"):
            del self._running[slot]
        return [Event(slot, kind, payload) for kind, payload in batch]

    def _check_node(self, node_id: str | None) -> None:
        if node_id is None:
            return
        alive = {n["NodeID"] for n in self._ray.nodes() if n.get("Alive")}
        if node_id not in alive:
            self._gone_nodes.add(node_id)

    def close(self) -> None:
        for generator in self._running.values():
            try:
                self._ray.cancel(generator, force=True)
            except Exception:  # noqa: BLE001 -- best effort: the tasks end with the driver anyway
                pass
        self._running.clear()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
