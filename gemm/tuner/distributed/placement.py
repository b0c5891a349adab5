"""Where a distributed sweep's units run: this machine's GPUs (``--gpus``) or a Ray cluster's (``--ray``).

``place`` finds the workers (GPU slots), the device name of each GPU model
among them, and the backends usable on each model; it hands back how to start
the executor that runs units on those slots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from gemm.tuner.settings import SetupError, TuneSettings
from gemm.tuner.target import Target, interpreter_target, timer_for, usable_backends, usable_of


@dataclass(frozen=True)
class DeviceSetup:
    """One device name of the run: where and how it measures, and the backends usable on it."""

    target: Target
    backends: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    """The device names of a run, how to start its executor, and its GPU slots (per host and in all)."""

    devices: dict[str, DeviceSetup]
    make_executor: Callable[[], object]
    gpus_per_host: int
    slot_count: int


def _say_to_stderr(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def cluster_devices(reports: dict, backends: tuple[str, ...] | None, timer: str | None,
                    say: Callable[[str], None] = _say_to_stderr) -> dict[str, DeviceSetup]:
    """Per device name the cluster reported (``ray_cluster.NodeReport``): the backends to sweep there.

    Named ``backends`` must be usable on every GPU model (SetupError otherwise); without names, each
    model sweeps the registered backends it can run, and says which it skips.
    """
    from gemm.kernels import default_backend_names

    devices = {}
    for name, report in reports.items():
        usable = usable_of(backends or default_backend_names(), bool(backends), report.unavailable.get, say,
                           device=name)
        devices[name] = DeviceSetup(Target(report.arch, name, "cuda", timer_for(timer, gpu=True)), usable)
    return devices


def ray_task_limit(gpus: str | None) -> int | None:
    """At most this many Ray tasks at a time (``--gpus N`` with ``--ray``); None for ``all`` or no limit."""
    if gpus is None:
        return None
    text = gpus.strip()
    if text.lower() == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise SetupError(f"--gpus with --ray takes 'all' or a count N (at most N tasks at a time), got {gpus!r}")
    return int(text)


def _on_ray(settings: TuneSettings, say: Callable[[str], None]) -> Placement:
    from gemm.kernels import default_backend_names
    from gemm.tuner.distributed import ray_cluster

    limit = ray_task_limit(settings.gpus)
    ray = ray_cluster.connect(settings.ray or None, settings.interpret)
    if settings.interpret:
        target = interpreter_target(settings.timer)
        devices = {target.device_name: DeviceSetup(target, usable_backends(settings.engine_backends, True, say))}
        slots = ray_cluster.cpu_slots(ray, target.device_name, limit)
    else:
        slots, reports = ray_cluster.gpu_slots(ray, settings.engine_backends or tuple(default_backend_names()), limit)
        devices = cluster_devices(reports, settings.engine_backends, settings.timer, say)
    return Placement(devices, lambda: ray_cluster.RayExecutor(ray, slots, settings.interpret), 1, len(slots))


def _on_this_machine(settings: TuneSettings, say: Callable[[str], None]) -> Placement:
    from gemm.tuner.distributed.local import LocalExecutor, local_gpus

    gpus = local_gpus(settings.gpus, settings.interpret, os.cpu_count() or 1)
    backends = usable_backends(settings.engine_backends, settings.interpret, say)
    devices = {}
    for gpu in gpus:
        if gpu.device_name not in devices:
            device = "cpu" if settings.interpret else "cuda"
            target = Target(gpu.arch, gpu.device_name, device, timer_for(settings.timer, gpu=not settings.interpret))
            devices[gpu.device_name] = DeviceSetup(target, backends)
    return Placement(devices, lambda: LocalExecutor(gpus), len(gpus), len(gpus))


def place(settings: TuneSettings, say: Callable[[str], None]) -> Placement:
    """The ``Placement`` of ``settings.ray`` or ``settings.gpus``; SetupError (RayUnavailable too) or ValueError."""
    return _on_ray(settings, say) if settings.ray is not None else _on_this_machine(settings, say)
