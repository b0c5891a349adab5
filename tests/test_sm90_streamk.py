"""CPU tests of the Hopper kernel's stream-K: the schedule (a Python mirror of the C++, checked against the
C++ itself with a host-only nvcc build and through a real kernel library's exported helpers), the
fix-up order that keeps every wait on lower clusters and lets no wait chain through the clusters, the
one-partial-per-cluster workspace, the params, the backend's checks, the space, the cost model, the launcher's options and the new ABI. Nothing
here needs a GPU; the GPU tests are ``tests/gpu/test_sm90_streamk_gpu.py``."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest

from gemm.arch import get_arch
from gemm.kernels.base import LaunchError
from gemm.kernels.sm90 import codegen, launcher, streamk
from gemm.kernels.sm90.backend import Sm90Backend, tiles
from gemm.kernels.sm90.params import KernelConfig, Sm90Params, stages_that_fit
from gemm.problem import GemmProblem
from gemm.tuner.model.roofline import Sm90Coefficients, sm90_us
from sm90_builds import clean_sm90_libraries, run_host_program

H200 = get_arch("H200")

# T < G, T = G, T = 2G - 1, T = 2G, T = 5G + 3 for G = 132, 66, 7, 1, and a few others.
GS = (132, 66, 7, 1)
TILE_COUNTS = sorted({t for g in GS for t in (1, 2, 5, g - 1, g, 2 * g - 1, 2 * g, 2 * g + 1, 5 * g + 3) if t >= 1}
                     | {17, 100, 663})
K_BLOCKS = (1, 2, 3, 56)
CASES = [(t, kb, g) for t in TILE_COUNTS for kb in K_BLOCKS for g in GS]


# ----------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize("tiles_,k_blocks,resident", CASES)
def test_schedule_covers_everything_once(tiles_, k_blocks, resident):
    s = streamk.schedule(tiles_, k_blocks, resident)
    g = s.clusters
    assert g == min(resident, tiles_ * k_blocks)
    if tiles_ >= 2 * g:
        assert s.dp_tiles == (tiles_ // g - 1) * g and g <= s.sk_tiles <= 2 * g - 1
    else:
        assert s.dp_tiles == 0 and s.sk_tiles == tiles_
    units = streamk.units(s)
    # every data-parallel tile whole, once, on cluster tile % G, in the cluster's first dp_rounds units
    dp = [u for u in units if u.tile < s.dp_tiles]
    assert sorted(u.tile for u in dp) == list(range(s.dp_tiles))
    for u in dp:
        assert (u.kb_begin, u.kb_end, u.role) == (0, k_blocks, streamk.WHOLE_TILE)
        assert u.cluster == u.tile % g and u.index == u.tile // g
    # every (tile, K block) of the stream-K tiles exactly once
    covered = sorted((u.tile, kb) for u in units if u.tile >= s.dp_tiles for kb in range(u.kb_begin, u.kb_end))
    assert covered == [(t, kb) for t in range(s.dp_tiles, tiles_) for kb in range(k_blocks)]
    assert all(u.kb_begin < u.kb_end for u in units), "an empty piece"
    # spans: contiguous, in order, as equal as possible (lengths differ by at most one K block), none empty
    spans = [s.span(c) for c in range(g)]
    assert spans[0][0] == 0 and spans[-1][1] == s.iterations
    assert all(spans[c][1] == spans[c + 1][0] for c in range(g - 1))
    lengths = [end - begin for begin, end in spans]
    assert min(lengths) >= 1 and max(lengths) - min(lengths) <= 1
    # a cluster's units: its data-parallel tiles, then its span's pieces from the last to the first; at
    # most one per tile
    for c in range(g):
        mine = [u for u in units if u.cluster == c]
        assert [u.index for u in mine] == list(range(len(mine)))
        pieces = [u for u in mine if u.tile >= s.dp_tiles]
        assert [u.sk_tile for u in pieces] == sorted((u.sk_tile for u in pieces), reverse=True)
        flat = [u.sk_tile * k_blocks + kb for u in reversed(pieces) for kb in range(u.kb_begin, u.kb_end)]
        assert flat == list(range(*spans[c]))
        assert len({u.tile for u in pieces}) == len(pieces)
    assert max(len([u for u in units if u.cluster == c]) for c in range(g)) == s.units_per_cluster


@pytest.mark.parametrize("tiles_,k_blocks,resident", CASES)
def test_fix_up_waits_only_on_lower_clusters_and_one_partial_per_cluster(tiles_, k_blocks, resident):
    s = streamk.schedule(tiles_, k_blocks, resident)
    units = streamk.units(s)
    published = {}
    for u in units:
        if u.role == streamk.PUBLISH:
            assert u.cluster not in published, "a cluster published two partials: its slot would be overwritten"
            published[u.cluster] = u
            # only the last piece of a span publishes, ends before its tile's last K block, and is the first
            # piece its cluster walks (so it waits for nothing that runs after it)
            assert u.index == s.dp_rounds and u.kb_end < k_blocks
            assert u.sk_tile == max(v.sk_tile for v in units if v.cluster == u.cluster)
    assert s.clusters - 1 not in published, "the last span ends with the last tile"
    for sk_tile in range(s.sk_tiles):
        tile = s.dp_tiles + sk_tile
        pieces = sorted((u for u in units if u.tile == tile), key=lambda u: u.cluster)
        contributors = s.contributors(sk_tile)
        assert [u.cluster for u in pieces] == contributors
        owner = pieces[-1]
        assert owner.cluster == s.owner(sk_tile) == max(contributors) and owner.kb_end == k_blocks
        assert all(u.role == streamk.PUBLISH for u in pieces[:-1])
        if len(pieces) == 1:
            assert owner.role == streamk.WHOLE_TILE and (owner.kb_begin, owner.kb_end) == (0, k_blocks)
            continue
        # the owner waits for the lower contributors only, in ascending order; its piece is its span's first
        assert owner.role == streamk.FIX_UP and owner.first == contributors[0] < owner.cluster
        assert owner.kb_begin > 0, "the fixing-up piece starts its span inside the tile"
        assert owner.index == max(v.index for v in units if v.cluster == owner.cluster), \
            "the fixing-up piece is its cluster's last unit: its wait comes after the cluster's other work"
        # every piece it waits for is the first stream-K unit of its cluster
        assert all(u.index == s.dp_rounds for u in pieces[:-1])
        for u in pieces[:-1]:
            assert published[u.cluster] is u  # the slot the owner reads is the one this piece wrote
        # K order of the pieces matches cluster order (the fixed order of the partials' sum)
        assert [u.kb_begin for u in pieces] == sorted(u.kb_begin for u in pieces)
        assert all(pieces[i].kb_end == pieces[i + 1].kb_begin for i in range(len(pieces) - 1))


@pytest.mark.parametrize("tiles_,k_blocks,resident", CASES)
def test_no_wait_chains_a_launch_lasts_one_span(tiles_, k_blocks, resident):
    """Each cluster runs its units in order, a K block costing one step and a wait lasting until every
    piece waited for is done: the launch ends with the longest cluster's own work, so no owner waits on a
    piece that runs after a wait of its own cluster."""
    s = streamk.schedule(tiles_, k_blocks, resident)
    done = {}  # (cluster, sk_tile) -> step its piece of the tile is done
    clock = [0] * s.clusters
    pending = sorted(streamk.units(s), key=lambda u: (u.index, u.cluster))
    for _ in range(len(pending) + 1):  # a pass per round; a wait on a piece not yet done is retried
        if not pending:
            break
        later = []
        for u in pending:
            if any(later_u.cluster == u.cluster for later_u in later):
                later.append(u)  # units of a cluster run in order
                continue
            start = clock[u.cluster] + u.kb_end - u.kb_begin
            if u.role == streamk.FIX_UP:
                needed = [done.get((c, u.sk_tile)) for c in range(u.first, u.cluster)]
                if None in needed:
                    later.append(u)
                    continue
                start = max([start] + needed)
            clock[u.cluster] = start
            done[(u.cluster, u.sk_tile)] = start
        pending = later
    assert not pending, "some owner waits for a piece that never comes"
    longest_span = max(end - begin for begin, end in (s.span(c) for c in range(s.clusters)))
    assert max(clock) == s.dp_rounds * k_blocks + longest_span


def test_schedule_examples():
    # 17 tiles x 56 K blocks on 132 SMs: spans of 7 and 8 blocks, tiles shared by 7 or 8 clusters
    s = streamk.schedule(17, 56, 132)
    assert (s.clusters, s.dp_tiles, s.sk_tiles, s.units_per_cluster) == (132, 0, 17, 1)
    assert s.contributors(0) == list(range(7)) and s.owner(16) == 131
    # 5 G + 3 tiles: 4 data-parallel rounds, G + 3 stream-K tiles
    s = streamk.schedule(5 * 132 + 3, 4, 132)
    assert (s.dp_rounds, s.dp_tiles, s.sk_tiles) == (4, 528, 135)
    # fewer iterations than SMs: one K block per cluster
    s = streamk.schedule(3, 2, 132)
    assert s.clusters == 6 and all(s.span(c) == (c, c + 1) for c in range(6))
    assert [u.role for u in streamk.units(s)] == [streamk.PUBLISH, streamk.FIX_UP] * 3
    with pytest.raises(ValueError, match="tiles and k_blocks must be >= 1, got 0 and 4"):
        streamk.grid_clusters(132, 0, 4)


def test_workspace_sizes():
    s = streamk.schedule(17, 56, 132)
    assert streamk.counter_slots(s, 128) == 34 and streamk.counter_slots(s, 64) == 17
    assert streamk.partial_bytes(s, 128, 112) == 132 * 128 * 112 * 4
    assert streamk.mma_tiles(1000, 2112, 128, 112) == 8 * 19


# ----------------------------------------------------------------------------- params, checks, space, model


def test_stream_k_is_a_run_time_field():
    p = Sm90Params(block_m=64, block_n=96, stream_k=True)
    assert p.short().endswith(",sk-stream") and ",sk-stream" not in Sm90Params().short()
    assert Sm90Params.from_dict(p.to_dict()) == p and p.to_dict()["stream_k"] is True
    assert Sm90Params.from_dict({"block_m": 64}).stream_k is False  # entries written before stream-K
    assert dataclasses.replace(p, stream_k=False).kernel_config() == p.kernel_config()
    with pytest.raises(ValueError, match=r"Sm90Params.stream_k must be true/false, got 1"):
        Sm90Params(stream_k=1)
    with pytest.raises(ValueError, match=r"stream_k must be true/false"):
        Sm90Params.from_dict({"stream_k": "yes"})


def test_check_gives_stream_k_reasons():
    backend = Sm90Backend()
    problem = GemmProblem(128, 2112, 7168)
    assert backend.check(problem, Sm90Params(stream_k=True), H200) is None
    assert backend.check(GemmProblem(8192, 7168, 7168), Sm90Params(stream_k=True), H200) is None
    reason = backend.check(problem, Sm90Params(stream_k=True, splits=4), H200)
    assert reason.startswith("stream_k and splits=4 are exclusive")
    for cluster in ((2, 1), (1, 2)):
        reason = backend.check(GemmProblem(1024, 2112, 7168),
                               Sm90Params(stream_k=True, cluster_m=cluster[0], cluster_n=cluster[1]), H200)
        assert reason.startswith("stream-K runs 1x1 clusters only") and f"{cluster[0]}x{cluster[1]}" in reason
    # swap-AB: the schedule only sees the MMA's tiles, so it comes for free
    assert backend.check(GemmProblem(16, 2112, 7168), Sm90Params(block_m=64, block_n=16, swap_ab=True,
                                                                 stream_k=True), H200) is None
    reason = backend.check(GemmProblem(2**20, 2**16, 2**16), Sm90Params(stream_k=True),
                           H200)
    assert "stream-K counts tiles x K blocks in 32 bits" in reason


SPACE_SHAPES = [(1, 512, 7168), (16, 576, 7168), (128, 2112, 7168), (1024, 512, 7168), (8192, 7168, 7168),
                (3, 2112, 512), (64, 7168, 2048)]


@pytest.mark.parametrize("m,n,k", SPACE_SHAPES)
def test_space_offers_stream_k_where_splits_are(m, n, k):
    backend = Sm90Backend()
    problem = GemmProblem(m, n, k)
    space = list(backend.param_space(problem, H200))
    assert len(space) == len(set(space))
    stream = [p for p in space if p.stream_k]
    split_shapes = {(p.block_m, p.block_n, p.swap_ab) for p in space if p.splits > 1}
    assert {(p.block_m, p.block_n, p.swap_ab) for p in stream} == split_shapes
    assert len(stream) == len(split_shapes)
    for p in stream:
        assert p.splits == 1 and (p.cluster_m, p.cluster_n) == (1, 1)
        assert backend.check(problem, p, H200) is None
        mma = problem.transposed() if p.swap_ab else problem
        assert tiles(mma, p.block_m, p.block_n) < 0.5 * H200.num_sms
    assert not backend.default_params(problem, H200).stream_k


def test_cost_model_prices_stream_k():
    c = Sm90Coefficients()
    few = GemmProblem(128, 2112, 7168)  # 17 tiles of 128 x 128: data-parallel leaves 115 SMs idle
    base = dict(block_m=128, block_n=128)
    dp, sk = sm90_us(few, base, H200, c), sm90_us(few, dict(base, stream_k=True), H200, c)
    assert sk < 0.6 * dp
    # a whole number of waves: stream-K changes little (no tile is cut: 264 tiles x 1 block on 132 SMs)
    even = GemmProblem(128 * 12, 128 * 22, 128)
    assert sm90_us(even, dict(base, stream_k=True), H200, c) == pytest.approx(sm90_us(even, base, H200, c), rel=0.2)
    # the fix-up costs something: an owner reading partials is slower than the same span without them
    cut = sm90_us(GemmProblem(128, 128 * 131, 7168), dict(base, stream_k=True), H200, c)
    whole = sm90_us(GemmProblem(128, 128 * 132, 7168), dict(base, stream_k=True), H200, c)
    assert cut > whole * 131 / 132


def test_run_options_carry_stream_k():
    assert ctypes.sizeof(launcher.RunOptions) == 64 and launcher.RunOptions.stream_k.offset == 56
    assert launcher.run_options(Sm90Params(stream_k=True)).stream_k == 1
    assert launcher.run_options(Sm90Params()).stream_k == 0


def test_header_names_the_stream_k_part():
    assert "fp8_gemm_streamk.cuh" in codegen.HEADER_NAMES and codegen.ABI_VERSION >= 4  # 4: stream-K
    headers = dict(codegen.headers())
    assert '#include "fp8_gemm_streamk.cuh"' in headers["fp8_gemm_kernel.cuh"]
    assert "gemm_sm90_streamk_plan" in codegen.render_source(KernelConfig())


# ----------------------------------------------------------------------------- the C++ side, built by nvcc


HOST_PROGRAM = r"""
#include <cstdio>
#include "fp8_gemm_streamk.cuh"
using namespace gemm_sm90;
int main(int argc, char** argv) {
  // the multiply-high division of the unit function, against `/`, over divisors and dividends < 2^31
  int const xs[] = {0, 1, 2, 3, 127, 128, 131, 1000, 65535, 65536, 1 << 20, 123456789, 2147483646, 2147483647};
  for (int d = 1; d <= 1200; ++d) {
    FastDiv const f = make_fast_div(d);
    for (int x : xs)
      if (fast_div(f, x) != x / d) printf("BAD div %d / %d\n", x, d);
    for (int x = 0; x < 4 * d + 3; ++x)
      if (fast_div(f, x) != x / d) printf("BAD div %d / %d\n", x, d);
  }
  int const big[] = {65535, 65536, 1 << 20, 1000003, 1 << 30, 2147483647};
  for (int d : big) {
    FastDiv const f = make_fast_div(d);
    for (int x : xs)
      if (fast_div(f, x) != x / d) printf("BAD div %d / %d\n", x, d);
  }
  int t, kb, r;
  while (scanf("%d %d %d", &t, &kb, &r) == 3) {
    StreamKPlan const p = streamk_plan(r, t, kb);
    printf("P %d %d %d %d %d %d %d\n", t, kb, r, p.clusters, p.dp_tiles, p.sk_tiles, p.units_per_cluster);
    for (int u = 0; u < p.clusters * p.units_per_cluster; ++u) {
      WorkUnit w;
      if (!streamk_unit(p.args, kb, p.clusters, u, w)) continue;
      int g, sk, first;
      int const role = streamk_role(p.args, kb, w, g, sk, first);
      if (g != u % p.clusters) printf("BAD cluster %d of unit %d\n", g, u);
      printf("U %d %d %d %d %d %d %d %d %d %d\n", t, kb, r, u, w.tile, w.kb_begin, w.kb_end, role, first, sk);
    }
  }
}
"""


def _python_lines(cases):
    lines = []
    for t, kb, r in cases:
        s = streamk.schedule(t, kb, r)
        lines.append(f"P {t} {kb} {r} {s.clusters} {s.dp_tiles} {s.sk_tiles} {s.units_per_cluster}")
        for u in range(s.clusters * s.units_per_cluster):
            x = streamk.unit(s, u)
            if x is not None:
                lines.append(f"U {t} {kb} {r} {u} {x.tile} {x.kb_begin} {x.kb_end} {x.role} {x.first} {x.sk_tile}")
    return lines


@pytest.mark.nvcc
def test_cpp_schedule_matches_the_python_mirror(tmp_path):
    stdin = "".join(f"{t} {kb} {r}\n" for t, kb, r in CASES)
    lines = run_host_program(tmp_path, "streamk_host", HOST_PROGRAM, stdin)
    assert lines == _python_lines(CASES)


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """Real nvcc builds: 128x128 with overlap (two consumers) and 64x96 (one consumer); no spills, no
    serialized wgmma."""
    return clean_sm90_libraries(tmp_path_factory, [KernelConfig(128, 128, stages_that_fit(128, 128), True),
                                                   KernelConfig(64, 96, stages_that_fit(64, 96), True)])


@pytest.mark.nvcc
def test_library_schedule_and_workspace_match_the_mirror(built_library):
    for config, library in built_library:
        assert library._abi_version() == codegen.ABI_VERSION == 5  # what the built library reports (5: PDL)
        assert library.run_options_bytes == ctypes.sizeof(launcher.RunOptions)
        params = Sm90Params.for_tile(config.block_m, config.block_n, stream_k=True)
        for m, n, k, resident, max_ctas in [(1, 512, 7168, 132, 0), (1000, 2112, 7168, 132, 0),
                                            (1000, 2112, 7168, 132, 7), (128, 7168, 512, 66, 0),
                                            (4096, 7168, 256, 132, 0), (17, 576, 128, 132, 0)]:
            options = launcher.run_options(params, max_ctas=max_ctas)
            got = library.streamk_plan(m, n, k, resident, options)
            count = streamk.mma_tiles(m, n, config.block_m, config.block_n)
            s = streamk.schedule(count, -(-k // 128), min(resident, max_ctas) if max_ctas else resident)
            assert got == dict(clusters=s.clusters, dp_tiles=s.dp_tiles, sk_tiles=s.sk_tiles,
                               units_per_cluster=s.units_per_cluster,
                               counter_slots=streamk.counter_slots(s, config.block_m),
                               partial_bytes=streamk.partial_bytes(s, config.block_m, config.block_n),
                               span_base=s.iterations // s.clusters), (m, n, k, resident, max_ctas)
    _, library = built_library[0]
    for t, kb, r in [(17, 56, 132), (263, 2, 132), (5 * 66 + 3, 3, 66), (6, 1, 7), (1, 56, 1)]:
        s = streamk.schedule(t, kb, r)
        for u in range(s.clusters * s.units_per_cluster):
            x = streamk.unit(s, u)
            assert library.streamk_unit(t, kb, r, u) == (None if x is None else (x.tile, x.kb_begin, x.kb_end,
                                                                                   x.role, x.first, x.sk_tile))


@pytest.mark.nvcc
def test_library_refuses_bad_stream_k_options(built_library):
    _, library = built_library[0]
    aligned = 1 << 20
    options = launcher.run_options(Sm90Params(stream_k=True, splits=3))
    with pytest.raises(LaunchError, match=r"stream_k and splits=3 are exclusive"):
        library.streamk_plan(100, 2112, 7168, 132, options)
    options = launcher.run_options(Sm90Params(stream_k=True, cluster_m=2))
    with pytest.raises(LaunchError, match=r"stream-K runs 1x1 clusters only"):
        library.streamk_plan(300, 2112, 7168, 132, options)
    # the workspace of a stream-K launch depends on the device's SM count: without prepare() it is refused
    with pytest.raises(LaunchError, match=r"stream-K's workspace depends on the grid"):
        library.workspace_sizes(100, 2112, 7168, launcher.run_options(Sm90Params(stream_k=True)))
    bad = launcher.run_options(Sm90Params())
    bad.stream_k = 2
    with pytest.raises(LaunchError, match=r"stream_k must be 0 or 1, got 2"):
        library.workspace_sizes(100, 2112, 7168, bad)
    with pytest.raises(LaunchError, match=r"stream-K's workspace depends on the grid"):
        library.run(aligned, aligned, aligned, aligned, aligned, 100, 2112, 7168, 7168, False, 56,
                    launcher.run_options(Sm90Params(stream_k=True)), 0)
