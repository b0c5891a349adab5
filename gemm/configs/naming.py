"""Config file names, spelled as vLLM and SGLang spell them.

Both engines look a file up by
``N={N},K={K},device_name={device},dtype=fp8_w8a8,block_shape=[{bn},{bk}].json``
where ``device`` is ``torch.cuda.get_device_name()`` with spaces replaced by
underscores. vLLM writes the block shape without a space (``[128,128]``),
SGLang with one (``[128, 128]``). Native files use vLLM's spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gemm.arch import normalize_device_name

STYLES = ("vllm", "sglang")

_NAME_RE = re.compile(
    r"^N=(?P<n>\d+),K=(?P<k>\d+),device_name=(?P<device>[^/\\]+?),dtype=fp8_w8a8,"
    r"block_shape=\[(?P<bn>\d+),(?P<space> ?)(?P<bk>\d+)\]\.json$")


@dataclass(frozen=True)
class ParsedName:
    """What a config file name says: sizes, device, block shape and which engine's spelling it uses."""

    n: int
    k: int
    device_name: str
    block_shape: tuple[int, int]
    style: str  # "vllm" (also native files) or "sglang"


def _check_block_shape(block_shape) -> tuple[int, int]:
    try:
        bn, bk = (int(v) for v in block_shape)
    except (TypeError, ValueError):
        raise ValueError(f"block_shape must be a pair (block_n, block_k), got {block_shape!r}") from None
    if bn < 1 or bk < 1:
        raise ValueError(f"block_shape must hold positive integers, got {block_shape!r}")
    return bn, bk


def config_filename(n: int, k: int, device_name: str, block_shape=(128, 128), style: str = "vllm") -> str:
    """The file name engines look for; ``style`` "vllm" (native files too) or "sglang" (space in block_shape).

    ``device_name`` may be given as torch reports it; it is normalized (spaces -> underscores).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {list(STYLES)}, got {style!r}")
    for name, value in (("n", n), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    bn, bk = _check_block_shape(block_shape)
    sep = ", " if style == "sglang" else ","
    device = normalize_device_name(device_name)
    return f"N={n},K={k},device_name={device},dtype=fp8_w8a8,block_shape=[{bn}{sep}{bk}].json"


def config_path(root: Path, device_name: str, n: int, k: int, block_shape=(128, 128)) -> Path:
    """``root/<normalized device_name>/<vLLM-style file name>``: where a native config lives."""
    device = normalize_device_name(device_name)
    return Path(root) / device / config_filename(n, k, device, block_shape, "vllm")


def parse_config_filename(name: str | Path) -> ParsedName | None:
    """Parse a config file name (vLLM or SGLang spelling); None if it is not one."""
    match = _NAME_RE.match(Path(name).name)
    if match is None:
        return None
    return ParsedName(n=int(match["n"]), k=int(match["k"]), device_name=match["device"],
                      block_shape=(int(match["bn"]), int(match["bk"])),
                      style="sglang" if match["space"] else "vllm")
