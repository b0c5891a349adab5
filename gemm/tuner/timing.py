"""Timing a GEMM the way an inference engine runs it: CUDA-graph replay with cold L2.

Engines replay CUDA graphs, so host launch overhead is not the kernel's cost;
and in a forward pass each layer's weights come cold from HBM. The
``CudaGraphTimer`` therefore clones the inputs into enough distinct copies
that together they exceed twice the L2 cache, captures one graph holding a
call on each copy, and times replays of that graph with CUDA events: the time
per GEMM is a replay's time divided by the number of copies, and the result is
the median over many replays.

``triton.testing.do_bench_cudagraph`` replays one call on one set of inputs,
so its weights stay in L2 between replays; the rotation over copies is what
this module adds, and it keeps the same recipe (graph replay, CUDA events).

Timers are injectable: the worker builds one from an importable reference
(``"module:Class"``) and calls ``measure(fn, inputs, reps)``, so the sweep
logic runs in tests with a fake timer and no GPU.
"""

from __future__ import annotations

import importlib
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

GemmInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # a, b, a_scale, b_scale
MIN_COPIES = 2
MAX_COPIES = 256


@dataclass(frozen=True)
class Timing:
    """Median microseconds per GEMM, interquartile range over median, replays timed; ``output`` of one call."""

    us: float
    spread: float
    reps: int
    output: torch.Tensor | None = None


class Timer(Protocol):
    def measure(self, fn: Callable[..., torch.Tensor], inputs: GemmInputs, reps: int) -> Timing:
        """Time ``fn(*inputs)``; ``reps`` is the number of timed repetitions to take the median of."""


def _summary(samples_us: list[float]) -> tuple[float, float]:
    median = statistics.median(samples_us)
    if len(samples_us) >= 4:
        q = statistics.quantiles(samples_us, n=4, method="inclusive")
        spread = (q[2] - q[0]) / median if median > 0 else 0.0
    else:
        spread = (max(samples_us) - min(samples_us)) / median if median > 0 else 0.0
    return median, spread


def input_bytes(inputs: GemmInputs) -> int:
    return sum(t.numel() * t.element_size() for t in inputs)


def copies_for(bytes_per_call: int, l2_bytes: int) -> int:
    """Distinct input copies whose total exceeds twice the L2 (at least 2, at most 256)."""
    needed = math.ceil(2 * l2_bytes / max(1, bytes_per_call)) + 1
    return max(MIN_COPIES, min(MAX_COPIES, needed))


class CudaGraphTimer:
    """Cold-L2 CUDA-graph replay timing on the inputs' device (see the module docstring).

    ``l2_bytes`` sizes the rotation (``ArchSpec.l2_bytes``). Copies are made
    once per distinct input set and reused by every candidate timed on it.
    """

    def __init__(self, l2_bytes: int = 50 * 2**20) -> None:
        self.l2_bytes = l2_bytes
        self._copies_key: tuple | None = None
        self._copies: list[GemmInputs] = []

    def _rotation(self, inputs: GemmInputs) -> list[GemmInputs]:
        key = tuple((t.data_ptr(), tuple(t.shape)) for t in inputs)
        if key != self._copies_key:
            self._copies = []  # free the previous point's copies before making new ones
            out_guess = inputs[0].shape[0] * inputs[1].shape[0] * 2
            count = copies_for(input_bytes(inputs) + out_guess, self.l2_bytes)
            self._copies = [inputs] + [tuple(t.clone() for t in inputs) for _ in range(count - 1)]
            self._copies_key = key
        return self._copies

    def release(self) -> None:
        """Drop the cached input copies (before a new shape, or to make room after running out of memory)."""
        self._copies, self._copies_key = [], None

    def measure(self, fn, inputs: GemmInputs, reps: int) -> Timing:
        samples, output = replay_samples_us(fn, self._rotation(inputs), reps)
        median, spread = _summary(samples)
        return Timing(median, spread, reps, output)


def replay_samples_us(fn: Callable[..., torch.Tensor], arg_sets: list[tuple], reps: int
                      ) -> tuple[list[float], torch.Tensor]:
    """Per-call microseconds of ``reps`` replays of one CUDA graph calling ``fn`` once on each arg set.

    Returns the samples and (a copy of) the output of the call on ``arg_sets[0]``. The caller
    supplies distinct arg sets large enough together to defeat the L2 (see ``copies_for``).
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up off the capture stream, as graph capture requires
        for args in arg_sets:
            fn(*args)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = [fn(*args) for args in arg_sets]
    graph.replay()  # first replay pays one-time costs (instantiation, page mapping)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) * 1e3 / len(arg_sets) for s, e in zip(starts, ends)]
    output = outputs[0].clone()
    del graph, outputs
    return samples, output


class WallClockTimer:
    """Host wall-clock median of synchronous calls: for the CPU interpreter, where there are no graphs.

    The numbers only order candidates of an interpreted sweep; they say nothing about a GPU.
    """

    def __init__(self, l2_bytes: int = 0) -> None:
        del l2_bytes

    def measure(self, fn, inputs: GemmInputs, reps: int) -> Timing:
        output = fn(*inputs)
        samples = []
        for _ in range(max(1, reps)):
            start = time.perf_counter()
            fn(*inputs)
            samples.append((time.perf_counter() - start) * 1e6)
        median, spread = _summary(samples)
        return Timing(median, spread, len(samples), output)


DEFAULT_GPU_TIMER = "gemm.tuner.timing:CudaGraphTimer"
DEFAULT_CPU_TIMER = "gemm.tuner.timing:WallClockTimer"


def timer_class(spec: str) -> type:
    """The timer class an importable reference ``"package.module:Class"`` names.

    Raises ValueError saying what is wrong: not of that form, a module that cannot be imported, no such
    attribute, or an attribute that is not a class with a ``measure`` method.
    """
    module_name, _, attr = str(spec).partition(":")
    example = f"e.g. {DEFAULT_GPU_TIMER} or {DEFAULT_CPU_TIMER}"
    if not module_name or not attr or not all(part.isidentifier() for part in module_name.split(".") + [attr]):
        raise ValueError(f"expected an importable class as package.module:Class ({example}), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of {spec!r}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} ({example})")
    if not isinstance(cls, type) or not callable(getattr(cls, "measure", None)):
        raise ValueError(f"{spec!r} is not a timer class (a class with a measure(fn, inputs, reps) method)")
    return cls
