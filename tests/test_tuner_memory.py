"""Sizing the evaluation pool to the GPU's free memory."""

from __future__ import annotations

import pytest

from gemm.tuner.presets import LayerShape
from gemm.tuner.search import pool_size as memory


def test_a_worker_needs_more_for_larger_problems():
    base = memory.worker_peak_bytes(7168, 2048, 4096)
    assert memory.worker_peak_bytes(36864, 2048, 4096) > base
    assert memory.worker_peak_bytes(7168, 7168, 4096) > base
    assert memory.worker_peak_bytes(7168, 2048, 8192) > base
    assert memory.worker_peak_bytes(7168, 2048, 4096, "float32") > base
    # The reference alone at M=8192 on DeepSeek's largest TP1 weight is 1.2 GB; the peak is several times that.
    assert memory.worker_peak_bytes(36864, 7168, 8192) > 4 * 4 * 8192 * 36864


def test_workers_that_fit_caps_by_free_memory_and_keeps_at_least_one():
    gib = 2**30
    assert memory.workers_that_fit(15, 7 * gib, 139 * gib) == 15
    assert memory.workers_that_fit(15, 7 * gib, 79 * gib) == int(memory.USABLE_FRACTION * 79 // 7)
    assert memory.workers_that_fit(15, 100 * gib, 79 * gib) == 1
    with pytest.raises(ValueError, match="wanted"):
        memory.workers_that_fit(0, gib, gib)
    with pytest.raises(ValueError, match="per_worker_bytes"):
        memory.workers_that_fit(4, 0, gib)


def test_sweep_worker_memory_names_the_hungriest_shape():
    shapes = [LayerShape("small", 576, 7168), LayerShape("big", 36864, 7168), LayerShape("mid", 7168, 2048)]
    need = memory.sweep_worker_memory(shapes, 8192)
    assert (need.n, need.k, need.m) == (36864, 7168, 8192)
    assert need.bytes == memory.worker_peak_bytes(36864, 7168, 8192)


def test_cap_workers_shrinks_the_pool_and_says_why(monkeypatch):
    shapes = [LayerShape("big", 36864, 7168)]
    monkeypatch.setattr(memory, "free_gpu_bytes", lambda index=0: 79 * 2**30)
    workers, note = memory.cap_workers(15, shapes, 8192, "bfloat16")
    assert 1 <= workers < 15 and "instead of 15" in note and "N=36864 K=7168 at M=8192" in note
    assert memory.cap_workers(2, [LayerShape("s", 576, 512)], 16, "bfloat16") == (2, None)
    monkeypatch.setattr(memory, "free_gpu_bytes", lambda index=0: None)  # no CUDA: left as asked
    assert memory.cap_workers(15, shapes, 8192, "bfloat16") == (15, None)
