"""The scripts that check pruning and prediction on shapes outside every preset: scripts/outside_shapes.py and
scripts/check_pruning.py (its per-shape summary), on the CPU."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from script_modules import load_script





def test_outside_shapes_are_outside_every_preset_and_print_as_tune_options(capsys):
    script = load_script("outside_shapes")
    assert script.check_outside_presets() == []
    assert len({(s.n, s.k) for s in script.OUTSIDE_SHAPES}) == len(script.OUTSIDE_SHAPES)
    assert any(s.ragged for s in script.OUTSIDE_SHAPES) and any(s.k % 512 for s in script.OUTSIDE_SHAPES)
    assert script.main(["--args"]) == 0
    words = capsys.readouterr().out.split()
    assert words[0::2] == ["--shape"] * len(script.OUTSIDE_SHAPES)
    assert words[1::2] == [f"{s.n},{s.k}" for s in script.OUTSIDE_SHAPES]
    fake = script.OutsideShape("DeepSeek-V3", 8, "o_proj", 7168, 2048)
    assert script.check_outside_presets((fake,)) == [fake]


def test_check_pruning_summarizes_each_shape_and_marks_preset_ones():
    script = load_script("check_pruning")
    frame = pd.DataFrame([
        dict(level=level, backend=b, N=n, K=k, M=m, kept=1, valid=2, best_us=best, kept_best_us=kept)
        for level in ("normal", "aggressive")
        for b, n, k, m, best, kept in (("triton", 7168, 2048, 1, 10.0, 10.0), ("cutlass", 7168, 2048, 1, 8.0, 9.0),
                                       ("triton", 2560, 5120, 64, 5.0, 6.25), ("cutlass", 2560, 5120, 64, 6.0, 6.0))])
    points = script.point_ratios(frame)
    ratio = dict(zip(zip(points.N, points.M), points.ratio))
    assert ratio[(7168, 1)] == pytest.approx(8.0 / 9.0)    # all backends together: the best kept of either
    assert ratio[(2560, 64)] == pytest.approx(5.0 / 6.0)
    shapes = script.by_shape(points)
    assert bool(shapes.loc[(7168, 2048), "in_a_preset"]) and not bool(shapes.loc[(2560, 5120), "in_a_preset"])


def test_check_pruning_on_the_shipped_exhaustive_sample(capsys):
    script = load_script("check_pruning")
    logs = Path(__file__).resolve().parents[1] / "tuned_configs" / "logs"
    log = logs / "NVIDIA_H100_80GB_HBM3-exhaustive-sample.jsonl.gz"
    assert script.main([str(log)]) == 0
    out = capsys.readouterr().out
    assert "per shape at --prune normal" in out and "outside every preset" not in out  # its shapes are presets'
    assert script.main([str(log.with_name("missing.jsonl"))]) == 2
