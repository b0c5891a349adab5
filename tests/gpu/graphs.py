"""CUDA-graph capture as the GPU tests do it: one warm-up call on a side stream (as torch recommends before a
capture), then one call captured; and refilling captured input buffers with new data before a replay."""

from __future__ import annotations

from typing import Callable, Iterable

import torch


def capture(fn: Callable[..., torch.Tensor], *args) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """(graph, output of the captured call) of ``fn(*args)``, after a warm-up call on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*args)
    return graph, out


def refill(buffers: Iterable[torch.Tensor], fresh: Iterable[torch.Tensor]) -> None:
    """Copy ``fresh`` into the captured ``buffers`` (same shapes), so a replay computes on new data."""
    for dst, src in zip(buffers, fresh, strict=True):
        dst.copy_(src)
