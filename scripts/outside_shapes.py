"""Weight shapes of other block-FP8 models, outside every preset: where pruning and prediction must generalize.

Each is one attention or dense-MLP linear layer (routed experts run in a grouped
MoE kernel and are not tuned here) of a public model that ships 128x128
block-FP8 weights, at the tensor-parallel size given, computed from the model's
published dimensions (hidden size, heads x head dim, key-value heads,
intermediate size). Two are ragged (N or K not a multiple of 128); at two, K/128
is not a multiple of 4, where cuBLAS blockwise is refused.

    python scripts/outside_shapes.py            # the table
    python scripts/outside_shapes.py --args     # "--shape N,K ..." for gemm tune / scripts
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class OutsideShape:
    """One layer's weight [N, K] of ``model`` at tensor-parallel size ``tp``."""

    model: str
    tp: int
    layer: str
    n: int
    k: int

    @property
    def ragged(self) -> bool:
        return self.n % 128 != 0 or self.k % 128 != 0


#: Qwen3-32B: hidden 5120, 64 heads x 128, 8 KV heads, intermediate 25600.
#: Qwen3-235B-A22B: hidden 4096, 64 heads x 128, 4 KV heads.
#: MiniMax-M2: hidden 3072, 48 heads x 128, 8 KV heads.
#: GLM-4.5-Air: hidden 4096, 96 heads x 128, 8 KV heads, dense intermediate 10944 (first layer).
OUTSIDE_SHAPES: tuple[OutsideShape, ...] = (
    OutsideShape("Qwen3-32B", 4, "qkv_proj", 2560, 5120),
    OutsideShape("Qwen3-32B", 4, "down_proj", 5120, 6400),
    OutsideShape("Qwen3-235B-A22B", 4, "qkv_proj", 2304, 4096),
    OutsideShape("MiniMax-M2", 4, "qkv_proj", 2048, 3072),
    OutsideShape("MiniMax-M2", 8, "qkv_proj", 1024, 3072),
    OutsideShape("GLM-4.5-Air", 4, "qkv_proj", 3584, 4096),
    OutsideShape("GLM-4.5-Air", 4, "gate_up_proj", 5472, 4096),
    OutsideShape("GLM-4.5-Air", 4, "down_proj", 4096, 2736),
)


def check_outside_presets(shapes=OUTSIDE_SHAPES) -> list[OutsideShape]:
    """The shapes that some preset holds (there should be none)."""
    from gemm.tuner.presets import PRESETS

    inside = {(s.n, s.k) for preset in PRESETS.values() for s in preset}
    return [s for s in shapes if (s.n, s.k) in inside]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--args", action="store_true", help="print --shape N,K for each shape, on one line")
    args = parser.parse_args(argv)
    inside = check_outside_presets()
    if inside:
        print(f"outside_shapes.py: in a preset already: {inside}", file=sys.stderr)
        return 1
    if args.args:
        print(" ".join(f"--shape {s.n},{s.k}" for s in OUTSIDE_SHAPES))
        return 0
    for s in OUTSIDE_SHAPES:
        print(f"{s.model:<16} TP{s.tp}  {s.layer:<13} N={s.n:<6} K={s.k:<6}{'  ragged' if s.ragged else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
