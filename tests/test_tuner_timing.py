"""Timing code that runs without a GPU (the CUDA-graph timer itself runs in the GPU smoke script)."""

from __future__ import annotations

import torch

from gemm.tuner.timing import MAX_COPIES, MIN_COPIES, WallClockTimer, _summary, copies_for, input_bytes


def test_rotation_exceeds_twice_the_l2():
    l2 = 50 * 2**20
    for per_call in (4 * 2**20, 17 * 2**20, 60 * 2**20, 400 * 2**20):
        copies = copies_for(per_call, l2)
        assert copies >= MIN_COPIES and copies * per_call > 2 * l2
    assert copies_for(1, l2) == MAX_COPIES


def test_input_bytes_counts_every_tensor():
    inputs = (torch.zeros(4, 8, dtype=torch.float8_e4m3fn), torch.zeros(16, 8, dtype=torch.float8_e4m3fn),
              torch.zeros(4, 1), torch.zeros(1, 1))
    assert input_bytes(inputs) == 32 + 128 + 16 + 4


def test_summary_is_median_and_relative_iqr():
    median, spread = _summary([10.0, 11.0, 9.0, 10.0, 30.0])
    assert median == 10.0 and abs(spread - 0.1) < 1e-9  # (11 - 10) / 10: the outlier does not count


def test_wall_clock_timer_returns_output_and_reps():
    calls = []

    def fn(a, b, sa, sb):
        calls.append(1)
        return a + b

    timing = WallClockTimer().measure(fn, (torch.ones(2), torch.ones(2), None, None), reps=3)
    assert timing.reps == 3 and timing.us > 0 and torch.equal(timing.output, torch.full((2,), 2.0))
    assert len(calls) == 4


def test_a_bad_timer_is_refused_when_the_target_is_made():
    import pytest

    from gemm.tuner.settings import SetupError
    from gemm.tuner.target import interpreter_target, timer_for

    with pytest.raises(SetupError, match="--timer: expected an importable class"):
        interpreter_target("not a timer")
    assert timer_for(None, gpu=False).endswith("WallClockTimer")
    assert timer_for("gemm.tuner.timing:WallClockTimer", gpu=True) == "gemm.tuner.timing:WallClockTimer"
