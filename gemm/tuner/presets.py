"""Model shape presets and M grids.

DeepSeek-V3 and DeepSeek-R1 share their architecture, so one preset family
serves both. The block-FP8 linear layers outside the routed-expert MoE kernel
are, at tensor-parallel size ``t`` (weights are [N, K]; column-parallel layers
split N, row-parallel layers split K, replicated layers split nothing):

=====================================  ======================================  ===========
layer                                   [N, K]                                 TP split
=====================================  ======================================  ===========
self_attn.fused_qkv_a_proj_with_mqa     [q_lora + kv_lora + rope, hidden]      replicated
self_attn.kv_a_proj_with_mqa            [kv_lora + rope, hidden]               replicated
self_attn.q_b_proj                      [heads * (nope + rope), q_lora]        N / t
self_attn.kv_b_proj                     [heads * (nope + v), kv_lora]          N / t
self_attn.o_proj                        [hidden, heads * v]                    K / t
mlp.gate_up_proj (dense layers 0-2)     [2 * dense_inter, hidden]              N / t
mlp.down_proj (dense layers 0-2)        [hidden, dense_inter]                  K / t
mlp.shared_experts.gate_up_proj         [2 * shared * expert_inter, hidden]    N / t
mlp.shared_experts.down_proj            [hidden, shared * expert_inter]        K / t
=====================================  ======================================  ===========

At TP 8 that gives (2112, 7168) (576, 7168) (3072, 1536) (4096, 512)
(7168, 2048) (4608, 7168) (7168, 2304) (512, 7168) (7168, 256).
Routed experts run in a grouped MoE kernel and are not tuned here.
"""

from __future__ import annotations

from dataclasses import dataclass

#: vLLM's block-FP8 tuning grid of token counts (M), the batch sizes engines look configs up by.
DEFAULT_M_GRID: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096)
TP_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16)
DEFAULT_PRESET = "deepseek-v3-tp8"

#: The tiny sweep ``gemm tune --interpret`` runs on the CPU through the Triton interpreter.
INTERPRET_SHAPES: tuple[tuple[int, int], ...] = ((256, 256),)
INTERPRET_M_GRID: tuple[int, ...] = (1, 16)


@dataclass(frozen=True)
class LayerShape:
    """The weight shape [N, K] of one or more layers (``name`` joins them with '+')."""

    name: str
    n: int
    k: int

    def __str__(self) -> str:
        return f"({self.n}, {self.k}) {self.name}"


@dataclass(frozen=True)
class MlaMoeDims:
    """Dimensions of a DeepSeek-V3-style model (MLA attention, dense first layers, MoE with shared experts)."""

    hidden: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    num_heads: int
    dense_intermediate: int
    expert_intermediate: int
    shared_experts: int


DEEPSEEK_V3 = MlaMoeDims(hidden=7168, q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64,
                         qk_nope_head_dim=128, v_head_dim=128, num_heads=128, dense_intermediate=18432,
                         expert_intermediate=2048, shared_experts=1)


def _split(value: int, tp: int, what: str) -> int:
    if value % tp:
        raise ValueError(f"tensor-parallel size {tp} does not divide {what} = {value}")
    return value // tp


def mla_moe_layer_shapes(dims: MlaMoeDims, tp: int) -> list[LayerShape]:
    """Block-FP8 linear layers of ``dims`` at tensor-parallel size ``tp``, deduplicated by (N, K).

    Layers sharing a shape are merged into one entry whose name lists them all,
    in the order of the table in this module's docstring.
    """
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ValueError(f"tp must be a positive int, got {tp!r}")
    d = dims
    shared_inter = d.shared_experts * d.expert_intermediate
    layers = [
        ("self_attn.fused_qkv_a_proj_with_mqa", d.q_lora_rank + d.kv_lora_rank + d.qk_rope_head_dim, d.hidden),
        ("self_attn.kv_a_proj_with_mqa", d.kv_lora_rank + d.qk_rope_head_dim, d.hidden),
        ("self_attn.q_b_proj",
         _split(d.num_heads * (d.qk_nope_head_dim + d.qk_rope_head_dim), tp, "q_b_proj N"), d.q_lora_rank),
        ("self_attn.kv_b_proj",
         _split(d.num_heads * (d.qk_nope_head_dim + d.v_head_dim), tp, "kv_b_proj N"), d.kv_lora_rank),
        ("self_attn.o_proj", d.hidden, _split(d.num_heads * d.v_head_dim, tp, "o_proj K")),
        ("mlp.gate_up_proj", _split(2 * d.dense_intermediate, tp, "dense gate_up_proj N"), d.hidden),
        ("mlp.down_proj", d.hidden, _split(d.dense_intermediate, tp, "dense down_proj K")),
        ("mlp.shared_experts.gate_up_proj", _split(2 * shared_inter, tp, "shared gate_up_proj N"), d.hidden),
        ("mlp.shared_experts.down_proj", d.hidden, _split(shared_inter, tp, "shared down_proj K")),
    ]
    merged: dict[tuple[int, int], list[str]] = {}
    for name, n, k in layers:
        merged.setdefault((n, k), []).append(name)
    return [LayerShape("+".join(names), n, k) for (n, k), names in merged.items()]


def _preset_table() -> dict[str, list[LayerShape]]:
    table = {}
    for model in ("deepseek-v3", "deepseek-r1"):
        for tp in TP_SIZES:
            table[f"{model}-tp{tp}"] = mla_moe_layer_shapes(DEEPSEEK_V3, tp)
    return table


PRESETS: dict[str, list[LayerShape]] = _preset_table()


def preset_shapes(name: str) -> list[LayerShape]:
    """The layer shapes of a preset such as ``"deepseek-v3-tp8"`` (case-insensitive)."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return list(PRESETS[key])


def parse_shape(text: str) -> LayerShape:
    """``"7168,2048"`` -> LayerShape("shape", 7168, 2048); N and K positive integers."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        n, k = int(parts[0]), int(parts[1])
        if n < 1 or k < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"--shape expects N,K with two positive integers (e.g. 7168,2048), got {text!r}") from None
    return LayerShape("shape", n, k)


def parse_m_list(text: str, option: str = "--m") -> tuple[int, ...]:
    """``"1,16,64"`` -> (1, 16, 64): positive integers, sorted, duplicates dropped; ValueError naming
    ``option`` for anything else (an empty item such as ``"1,,2"`` too)."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part and str(text).strip():
            raise ValueError(f"{option} expects comma-separated positive integers without empty items "
                             f"(e.g. 1,16,64), got {text!r}")
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{option} expects comma-separated positive integers (e.g. 1,16,64), got {text!r}")
        values.append(value)
    if not values:
        raise ValueError(f"{option} expects at least one M value, got {text!r}")
    return tuple(sorted(set(values)))


def dedupe_shapes(shapes: list[LayerShape]) -> list[LayerShape]:
    """Merge entries of equal (N, K), keeping the first position and joining the names."""
    merged: dict[tuple[int, int], list[str]] = {}
    for shape in shapes:
        names = merged.setdefault((shape.n, shape.k), [])
        if shape.name not in names:
            names.append(shape.name)
    return [LayerShape("+".join(names), n, k) for (n, k), names in merged.items()]
