"""Every config file shipped in tuned_configs/ validates and loads."""

from pathlib import Path

import pytest

from gemm.configs import load_config_file, validate_config_file
from gemm.configs.engines import is_plain_triton

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "tuned_configs").glob("*/N=*.json"))


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
