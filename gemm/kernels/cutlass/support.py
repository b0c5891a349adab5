"""Which instantiations a given CUTLASS release can build well, by its version.

The blockwise FP8 mainloop of SM90 changed in CUTLASS 4.3: the consumer
warp groups split a 256-row tile into two 128-row halves, each scaled with its
own temporary accumulator. Built with nvcc 13.0 for sm_90a:

* cooperative 256x128x128 uses 168 registers and spills 1.2 KB with 4.2 (and
  ran 3.5x slower than 128x128 on an H100); with 4.5.0 it uses 168 registers,
  spills nothing and fits 4 pipeline stages;
* ping-pong 64x128x128 builds with 4.2 but not with 4.5.0: the rewritten
  non-grouped mainloop computes its split count as ``tile_m / 128`` and
  static-asserts that it is 1 or 2, so a 64-row tile fails to compile. The
  grouped mainloop had the same assertion from 4.3 on until NVIDIA/cutlass
  pull request 2965 fixed it there only;
* cooperative 128x128x128 builds with both, at 168 registers and no spills.

Versions are ``(major, minor, patch)`` tuples as ``toolchain`` reads them from
``cutlass/version.h``; ``None`` means no headers were found, in which case
nothing is refused (there is nothing to build with anyway).
"""

from __future__ import annotations

Version = tuple[int, int, int]

#: First release whose 256x128 blockwise tile does not spill: offered by the backend from here on.
WIDE_TILE_MIN_CUTLASS: Version = (4, 3, 0)
#: Releases [first, end) whose non-grouped blockwise mainloop rejects tiles under 128 rows; ``None``
#: as the end: not fixed in any release known here (4.5.0 still fails).
NARROW_TILE_BROKEN_CUTLASS: tuple[Version, Version | None] = ((4, 3, 0), None)
#: Rows of a tile below which the broken releases refuse to compile.
NARROW_TILE_ROWS = 128


def version_string(version: Version) -> str:
    return ".".join(str(v) for v in version)


def wide_tile_offered(version: Version | None) -> bool:
    """True when ``version`` builds the 256x128 tile without spilling (worth offering to the tuner)."""
    return version is not None and tuple(version) >= WIDE_TILE_MIN_CUTLASS


def narrow_tiles_build(version: Version | None) -> bool:
    """True unless ``version`` is a release whose blockwise mainloop refuses tiles under 128 rows."""
    if version is None:
        return True
    first, end = NARROW_TILE_BROKEN_CUTLASS
    return not (tuple(version) >= first and (end is None or tuple(version) < end))


def unbuildable_reason(tile_m: int, version: Version | None) -> str | None:
    """Why CUTLASS ``version`` cannot compile a blockwise tile of ``tile_m`` rows (None if it can)."""
    if tile_m < NARROW_TILE_ROWS and not narrow_tiles_build(version):
        first, end = NARROW_TILE_BROKEN_CUTLASS
        span = f"{version_string(first)} and later" if end is None else \
            f"{version_string(first)} up to {version_string(end)} (exclusive)"
        return (f"CUTLASS {version_string(version)} cannot compile {tile_m}-row blockwise tiles (its SM90 "
                f"blockwise mainloop static-asserts tile_m / 128 is 1 or 2 in releases {span}); "
                f"use tile_m 128 or 256, or build against CUTLASS 4.2 headers")
    return None
