"""Every config file shipped in tuned_configs/ validates and loads."""

from pathlib import Path

import pytest

from gemm.configs import load_config_file, validate_config_file
from gemm.configs.engines import is_plain_triton

SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "tuned_configs"
SHIPPED = sorted(SHIPPED_ROOT.glob("*/N=*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_file_is_valid(path):
    assert validate_config_file(path) == []
    config = load_config_file(path)
    assert config.provenance.kind in ("measured", "predicted")
    assert min(config.entries) == 1 and max(config.entries) >= 4096


def test_some_configs_are_shipped():
    assert SHIPPED, "tuned_configs/ holds no config files"


def test_plain_triton_means_what_engines_can_run():
    assert is_plain_triton("triton", {"block_m": 64, "split_k": 1})
    for feature in ({"split_k": 2}, {"use_tma": True}, {"persistent": True}, {"k_unroll": 2}):
        assert not is_plain_triton("triton", {"block_m": 64, **feature})
    assert not is_plain_triton("cutlass", {})


def _measured_shapes(device_name: str) -> set[tuple[int, int]]:
    """(N, K) of every shape a shipped results log of the device timed."""
    from gemm.tuner.results.log import read_log
    from gemm.tuner.results.measurement import Status

    shapes = set()
    for log in sorted((SHIPPED_ROOT / "logs").glob(f"{device_name}-*.jsonl.gz")):
        shapes |= {(row.n, row.k) for row in read_log(log)[1] if row.status == Status.OK}
    return shapes


@pytest.mark.parametrize("device", sorted({p.parent.name for p in SHIPPED}))
def test_predictions_never_stand_where_the_device_was_measured(device):
    """A predicted file only for shapes no log of its device measured; a measured file holds measured entries
    only (a prediction never replaces, nor is mixed into, a measurement)."""
    measured = _measured_shapes(device)
    for path in (p for p in SHIPPED if p.parent.name == device):
        config = load_config_file(path)
        kinds = {config.provenance_of(m).kind for m in config.entries}
        if config.provenance.kind == "predicted":
            assert kinds == {"predicted"} and (config.n, config.k) not in measured, path.name
            assert all(entry.us is None for entry in config.entries.values()), path.name
        else:
            assert kinds == {"measured"}, path.name
