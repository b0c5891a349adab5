"""Selection of the best config per point, near-tie collapse and the engines' plain Triton fallback."""

from __future__ import annotations

import pytest

from gemm.tuner.results.measurement import Measurement, Stage, Status
from gemm.tuner.results.select import distinct_configs, select


def _triton(name: str, **features) -> dict:
    sizes = {"a": (16, 64), "b": (32, 64), "c": (64, 128), "d": (64, 64)}[name]
    params = {"block_m": sizes[0], "block_n": sizes[1], "block_k": 128, "group_m": 8, "num_warps": 4,
              "num_stages": 3, "split_k": 1, "use_tma": False, "persistent": False}
    params.update(features)
    return params


def _row(params, m, us, stage=Stage.FINAL, status=Status.OK, backend="triton", n=512, k=1024):
    row = Measurement(backend, params, n, k, m, stage, status)
    return row.with_timing(us, 2 * m * n * k) if status == Status.OK else row


def test_fastest_wins_without_ties():
    rows = [_row(_triton("a"), 1, 10.0), _row(_triton("b"), 1, 9.0), _row(_triton("a"), 2, 9.0),
            _row(_triton("b"), 2, 11.0)]
    chosen = select(rows, tie_fraction=0.0)[(512, 1024)]
    assert chosen[1].params == _triton("b") and chosen[1].us == 9.0 and chosen[1].fastest_us == 9.0
    assert chosen[2].params == _triton("a")
    assert chosen[1].tflops == pytest.approx(2 * 512 * 1024 / 9e-6 / 1e12)


def test_near_ties_collapse_onto_configs_already_chosen():
    a, b, c = _triton("a"), _triton("b"), _triton("c")
    rows = [
        _row(a, 1, 10.0), _row(b, 1, 10.1),            # a fastest
        _row(a, 2, 10.15), _row(b, 2, 10.0),           # b 1.5% faster: a kept (previous M)
        _row(a, 4, 12.0), _row(b, 4, 10.0),            # b clearly faster
        _row(a, 8, 10.1), _row(b, 8, 10.15), _row(c, 8, 10.0),  # c fastest, b ties and is the previous
        _row(a, 16, 10.1), _row(c, 16, 10.0),          # a ties and was chosen before (not the previous)
    ]
    collapsed = select(rows, tie_fraction=0.02)[(512, 1024)]
    assert [collapsed[m].params for m in (1, 2, 4, 8, 16)] == [a, a, b, b, a]
    assert collapsed[2].fastest_us == 10.0 and collapsed[2].us == 10.15
    assert distinct_configs(collapsed) == 2
    strict = select(rows, tie_fraction=0.0)[(512, 1024)]
    assert [strict[m].params for m in (1, 2, 4, 8, 16)] == [a, b, b, c, c]
    assert distinct_configs(strict) == 3


def test_only_verified_final_rows_compete():
    a, b, c = _triton("a"), _triton("b"), _triton("c")
    rows = [
        _row(a, 1, 10.0),
        _row(b, 1, 1.0, stage=Stage.SCREEN),                              # screened only: not timed carefully
        _row(c, 1, 0.5, status=Status.WRONG_RESULT, stage=Stage.FINAL),   # fast and wrong: never selected
        _row(b, 2, 5.0, stage=Stage.SCREEN),                              # no FINAL row at M=2: no choice there
    ]
    chosen = select(rows)
    assert list(chosen[(512, 1024)]) == [1]
    assert chosen[(512, 1024)][1].params == a


def test_engine_triton_records_the_best_plain_config():
    fancy = _triton("c", split_k=4, use_tma=True)
    plain_fast, plain_slow = _triton("a"), _triton("b")
    rows = [
        _row(fancy, 1, 5.0), _row(plain_slow, 1, 9.0), _row(plain_fast, 1, 8.0),
        _row({"schedule": "pingpong"}, 2, 4.0, backend="cutlass"), _row(plain_fast, 2, 7.0, stage=Stage.SCREEN),
        _row(plain_slow, 4, 3.0),
    ]
    chosen = select(rows)[(512, 1024)]
    assert chosen[1].params == fancy and chosen[1].engine_triton == plain_fast and chosen[1].engine_triton_us == 8.0
    # At M=2 only a screening time exists for a plain config: still better than nothing for engines.
    assert chosen[2].backend == "cutlass" and chosen[2].engine_triton == plain_fast
    assert chosen[4].engine_triton is None  # the choice itself is plain


def test_shapes_are_selected_separately():
    rows = [_row(_triton("a"), 1, 10.0, n=512), _row(_triton("b"), 1, 5.0, n=1024)]
    chosen = select(rows)
    assert chosen[(512, 1024)][1].params == _triton("a") and chosen[(1024, 1024)][1].params == _triton("b")


def test_negative_tie_fraction_is_refused():
    with pytest.raises(ValueError, match="tie_fraction"):
        select([], tie_fraction=-0.1)
