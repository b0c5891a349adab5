"""Model presets (DeepSeek-V3/R1 at TP 1..16), M grids and shape parsing."""

from __future__ import annotations

import pytest

from gemm.tuner.presets import (
    DEEPSEEK_V3, DEFAULT_M_GRID, PRESETS, LayerShape, dedupe_shapes, mla_moe_layer_shapes, parse_m_list, parse_shape,
    preset_shapes,
)

EXPECTED = {
    1: [(2112, 7168), (576, 7168), (24576, 1536), (32768, 512), (7168, 16384), (36864, 7168), (7168, 18432),
        (4096, 7168), (7168, 2048)],
    2: [(2112, 7168), (576, 7168), (12288, 1536), (16384, 512), (7168, 8192), (18432, 7168), (7168, 9216),
        (2048, 7168), (7168, 1024)],
    4: [(2112, 7168), (576, 7168), (6144, 1536), (8192, 512), (7168, 4096), (9216, 7168), (7168, 4608),
        (1024, 7168), (7168, 512)],
    8: [(2112, 7168), (576, 7168), (3072, 1536), (4096, 512), (7168, 2048), (4608, 7168), (7168, 2304),
        (512, 7168), (7168, 256)],
    16: [(2112, 7168), (576, 7168), (1536, 1536), (2048, 512), (7168, 1024), (2304, 7168), (7168, 1152),
         (256, 7168), (7168, 128)],
}


@pytest.mark.parametrize("tp", sorted(EXPECTED))
def test_deepseek_shapes_per_tp(tp):
    shapes = preset_shapes(f"deepseek-v3-tp{tp}")
    assert [(s.n, s.k) for s in shapes] == EXPECTED[tp]
    assert preset_shapes(f"deepseek-r1-tp{tp}") == shapes
    assert shapes[0].name == "self_attn.fused_qkv_a_proj_with_mqa"
    names = {s.name for s in shapes}
    assert {"self_attn.o_proj", "mlp.down_proj", "mlp.shared_experts.gate_up_proj"} <= names


def test_presets_cover_both_models_and_all_tp_sizes():
    assert set(PRESETS) == {f"deepseek-{m}-tp{tp}" for m in ("v3", "r1") for tp in (1, 2, 4, 8, 16)}
    assert preset_shapes("DeepSeek-V3-TP8") == PRESETS["deepseek-v3-tp8"]
    with pytest.raises(ValueError, match="known presets"):
        preset_shapes("llama-tp8")


def test_equal_shapes_merge_their_layer_names():
    dims = DEEPSEEK_V3.__class__(**{**DEEPSEEK_V3.__dict__, "dense_intermediate": 2048})
    shapes = mla_moe_layer_shapes(dims, 1)
    merged = [s for s in shapes if (s.n, s.k) == (4096, 7168)]
    assert merged == [LayerShape("mlp.gate_up_proj+mlp.shared_experts.gate_up_proj", 4096, 7168)]
    assert len(shapes) == len({(s.n, s.k) for s in shapes})
    assert dedupe_shapes([LayerShape("x", 1, 2), LayerShape("y", 1, 2), LayerShape("x", 1, 2)]) == [
        LayerShape("x+y", 1, 2)]


def test_tp_must_divide_the_split_dimensions():
    with pytest.raises(ValueError, match="tensor-parallel size 3"):
        mla_moe_layer_shapes(DEEPSEEK_V3, 3)
    with pytest.raises(ValueError, match="positive int"):
        mla_moe_layer_shapes(DEEPSEEK_V3, 0)


def test_default_m_grid_is_vllms():
    assert DEFAULT_M_GRID == (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096)


def test_parsing():
    assert parse_shape("7168, 2048") == LayerShape("shape", 7168, 2048)
    assert parse_m_list("16,1,16,64") == (1, 16, 64)
    for bad in ("7168", "7168,x", "0,5", "1,2,3"):
        with pytest.raises(ValueError, match="--shape expects N,K"):
            parse_shape(bad)
    for bad in ("", "1,-2", "a"):
        with pytest.raises(ValueError, match="--m"):
            parse_m_list(bad)
