"""CPU tests of the Hopper kernel's split-K: the decomposition of K (a Python mirror of the C++, checked
against the C++ itself with a host-only nvcc build), the order of the work units that keeps the waiting
unit from waiting forever, workspace sizes, the params and the backend's checks, space and default, the
C ABI's argument checks and nvcc builds with no spills. Nothing here needs a GPU; the GPU tests are
``tests/gpu/test_sm90_splitk_gpu.py``."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest
import torch

from gemm.arch import get_arch
from gemm.kernels.base import LaunchError
from gemm.kernels.sm90 import codegen, launcher, splitk
from gemm.kernels.sm90.backend import SEARCH_SPLITS, Sm90Backend, splitk_cost, tiles
from gemm.kernels.sm90.params import MAX_SPLITS, KernelConfig, Sm90Params, stages_that_fit
from gemm.problem import GemmProblem
from sm90_builds import clean_sm90_libraries, run_host_program

H200 = get_arch("H200")


# ----------------------------------------------------------------------------- the decomposition


@pytest.mark.parametrize("k_blocks", list(range(1, 70)) + [144, 145])
def test_every_k_block_once_and_no_split_empty(k_blocks):
    for splits in range(1, min(k_blocks, MAX_SPLITS) + 1):
        ranges = [splitk.split_range(k_blocks, splits, s) for s in range(splits)]
        covered = [kb for begin, end in ranges for kb in range(begin, end)]
        assert covered == list(range(k_blocks)), (k_blocks, splits, ranges)  # contiguous, in order, once each
        sizes = [end - begin for begin, end in ranges]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
        assert sizes[0] == min(sizes), "the fixing-up split (0) should have the fewest blocks"


def test_split_range_refuses_empty_splits():
    with pytest.raises(ValueError, match=r"splits must be in \[1, k_blocks=2\], got 3"):
        splitk.split_range(2, 3, 0)
    with pytest.raises(ValueError, match=r"split must be in \[0, 4\), got 4"):
        splitk.split_range(8, 4, 4)


ORDER_CASES = [(tiles_, k_blocks, splits, resident)
               for tiles_ in (1, 2, 5, 17, 32, 33, 64, 100)
               for k_blocks, splits in ((2, 2), (4, 3), (56, 2), (56, 5), (56, 8), (7, 7), (18, 4), (145, 6))
               for resident in (132, 66, 16, 7, 3)]


@pytest.mark.parametrize("tiles_,k_blocks,splits,resident", ORDER_CASES)
def test_unit_order_covers_every_unit_and_waits_only_on_lower_clusters(tiles_, k_blocks, splits, resident):
    units = list(splitk.unit_order(tiles_, k_blocks, splits, resident))
    assert sorted((u.tile, u.split) for u in units) == [(t, s) for t in range(tiles_) for s in range(splits)]
    clusters = splitk.grid_clusters(resident, splits, tiles_)
    assert clusters == splitk.round_tiles(resident, splits, tiles_) * splits
    if resident >= splits:
        assert clusters <= resident, "the grid must fit the co-resident clusters"
    by_tile = {}
    for u in units:
        assert 0 <= u.cluster < clusters
        assert (u.kb_begin, u.kb_end) == splitk.split_range(k_blocks, splits, u.split)
        by_tile.setdefault(u.tile, {})[u.split] = u
    for tile, parts in by_tile.items():
        waiting = parts[0]
        for s in range(1, splits):
            # the waiting unit runs in the same round on a strictly higher cluster (the deadlock argument)
            assert parts[s].round == waiting.round and parts[s].cluster < waiting.cluster, (tile, parts)
    # a cluster walks its units in round order (u = round * G + cluster)
    for c in range(clusters):
        rounds = [u.round for u in units if u.cluster == c]
        assert rounds == sorted(set(rounds))


def test_rounds_fill_the_machine():
    # 17 tiles of 128 columns (N = 2112) x 7 splits on 132 SMs: one round of 119 units
    assert splitk.round_tiles(132, 7, 17) == 17 and splitk.grid_clusters(132, 7, 17) == 119
    # 32 tiles (M = 1024, N = 512) x 4 splits: 128 of 132 SMs busy in one round
    assert splitk.grid_clusters(132, 4, 32) == 128
    # more splits than resident clusters: rounds of one tile
    assert splitk.round_tiles(3, 8, 5) == 1 and splitk.grid_clusters(3, 8, 5) == 8


# ----------------------------------------------------------------------------- workspace


def test_workspace_sizes():
    # 128x128 tiles, M = 1024, N = 512: 32 tiles, two consumer warp groups each
    assert splitk.counter_slots(1024, 512, 128, 128, 4) == 64
    assert splitk.partial_bytes(1024, 512, 128, 128, 4) == 32 * 3 * 128 * 128 * 4
    assert splitk.counter_slots(1024, 512, 128, 128, 1) == 0 and splitk.partial_bytes(1024, 512, 128, 128, 1) == 0
    # 64-row tiles have one consumer; ragged M and N round up
    assert splitk.counter_slots(3, 2112, 64, 96, 3) == 22
    assert splitk.partial_bytes(3, 2112, 64, 96, 3) == 22 * 2 * 64 * 96 * 4
    # clusters: a slot for every CTA of every cluster tile, also the one beyond M
    assert splitk.workspace_tiles(300, 512, 128, 128, 2, 1) == 2 * 4 * 2
    assert splitk.workspace_tiles(300, 640, 128, 128, 1, 2) == 3 * 3 * 2


def test_run_options_carry_the_workspace():
    counters = torch.zeros(100, dtype=torch.int32)
    partials = torch.zeros(1000, dtype=torch.float32)
    workspace = launcher.SplitKWorkspace(counters, partials)
    assert workspace.holds(100, 4000) and not workspace.holds(101, 4000) and not workspace.holds(100, 4001)
    options = launcher.run_options(Sm90Params(splits=3), workspace=workspace)
    assert (options.splits, options.counter_slots, options.workspace_bytes) == (3, 100, 4000)
    assert options.counters == counters.data_ptr() and options.workspace == partials.data_ptr()


# ----------------------------------------------------------------------------- params, checks, space, default


@pytest.mark.parametrize("value,pattern", [(0, r"splits must be an integer >= 1, got 0"),
                                           (True, r"splits must be an integer >= 1, got True"),
                                           (33, r"splits must be in \[1, 32\], got 33"),
                                           (2.0, r"splits must be an integer")])
def test_splits_domain_errors_name_the_field(value, pattern):
    with pytest.raises(ValueError, match=pattern):
        Sm90Params(splits=value)


def test_splits_is_a_run_time_field():
    p = Sm90Params(block_m=64, block_n=96, splits=5)
    assert p.short().endswith(",sk5") and Sm90Params().short().endswith(",g8")
    assert Sm90Params.from_dict(p.to_dict()) == p and p.to_dict()["splits"] == 5
    assert Sm90Params.from_dict({"block_m": 64}).splits == 1  # entries written before split-K
    assert dataclasses.replace(p, splits=1).kernel_config() == p.kernel_config()
    with pytest.raises(ValueError, match="splits must be an integer"):
        Sm90Params.from_dict({"splits": "4"})


def test_check_gives_split_k_reasons():
    backend = Sm90Backend()
    assert backend.check(GemmProblem(128, 2112, 7168), Sm90Params(splits=8), H200) is None
    assert backend.check(GemmProblem(128, 2112, 7168), Sm90Params(splits=32), H200) is None
    assert backend.check(GemmProblem(17, 512, 256), Sm90Params(block_m=64, splits=2), H200) is None
    reason = backend.check(GemmProblem(17, 512, 256), Sm90Params(block_m=64, splits=3), H200)
    assert reason == "splits=3 exceeds the 2 K blocks of 128 of K=256: a split would be empty"
    reason = backend.check(GemmProblem(8192, 7168, 7168), Sm90Params(splits=8), H200)
    assert "needs 1568 MiB of fp32 partial tiles, more than the 256 MiB split-K workspace limit" in reason
    # clusters share an operand per stage; both CTAs of a pair run the same split, so split-K works with them
    assert backend.check(GemmProblem(300, 2112, 7168), Sm90Params(cluster_m=2, splits=3), H200) is None
    assert backend.check(GemmProblem(100, 2112, 7168), Sm90Params(cluster_n=2, splits=5), H200) is None


SPACE_SHAPES = [(1, 512, 7168), (16, 576, 7168), (128, 2112, 7168), (128, 4608, 7168), (1024, 512, 7168),
                (1024, 2112, 7168), (64, 7168, 2048), (17, 512, 256), (8192, 7168, 7168), (3, 2112, 512)]


@pytest.mark.parametrize("m,n,k", SPACE_SHAPES)
def test_space_offers_splits_only_for_few_tiles(m, n, k):
    backend = Sm90Backend()
    problem = GemmProblem(m, n, k)
    whole = list(backend.param_space(problem, H200))
    assert len(whole) == len(set(whole)) and len(whole) <= 400
    # Swap-AB candidates (M <= 64) tile the swapped problem; tests/test_sm90_swapab.py checks them.
    space = [p for p in whole if not p.swap_ab]
    assert len(space) <= 300
    split = [p for p in space if p.splits > 1]
    for p in split:
        assert tiles(problem, p.block_m, p.block_n) < 0.5 * H200.num_sms
        assert (p.cluster_m, p.cluster_n, p.raster) == (1, 1, "along_m") and p.splits in SEARCH_SPLITS
        assert 2 * p.splits <= problem.k_blocks
        assert backend.check(problem, p, H200) is None, p
    # tile shapes of few tiles get every split count of the search that leaves two K blocks per split
    few = {(p.block_m, p.block_n) for p in space if p.splits == 1
           and tiles(problem, p.block_m, p.block_n) < 0.5 * H200.num_sms}
    expected = [s for s in SEARCH_SPLITS if 2 * s <= problem.k_blocks]
    assert len(split) == len(few) * len(expected)
    default = backend.default_params(problem, H200)
    assert backend.check(problem, default, H200) is None


def test_default_splits_where_few_tiles_run():
    backend = Sm90Backend()
    for m, n in [(1, 512), (16, 576), (128, 2112), (1024, 512)]:
        problem = GemmProblem(m, n, 7168)
        p = backend.default_params(problem, H200)
        units = tiles(problem, p.block_m, p.block_n) * p.splits
        assert p.splits > 1 and (p.cluster_m, p.cluster_n) == (1, 1), (problem, p)
        assert units > 0.5 * H200.num_sms and units <= H200.num_sms, (problem, p, units)
        # the choice is the least cost of its own heuristic over the split counts it offers
        costs = {s: splitk_cost(problem, p.block_m, p.block_n, s, H200.num_sms)
                 for s in (1,) + backend.split_counts(problem, p.block_m, p.block_n, H200.num_sms)}
        assert costs[p.splits] == min(costs.values())
    for m, n, k in [(8192, 7168, 7168), (1024, 4608, 7168), (64, 7168, 2048), (128, 576, 256)]:
        assert backend.default_params(GemmProblem(m, n, k), H200).splits == 1


def test_split_cost_is_the_data_parallel_cost_without_splits():
    problem = GemmProblem(1024, 4608, 7168)
    from gemm.kernels.sm90.backend import estimated_cost
    assert splitk_cost(problem, 128, 144, 1, 132) == estimated_cost(problem, 128, 144, 132) * problem.k_blocks


def test_header_names_the_split_k_part():
    assert "fp8_gemm_splitk.cuh" in codegen.HEADER_NAMES and codegen.ABI_VERSION >= 2  # 2: split-K
    kernel = dict(codegen.headers())["fp8_gemm_kernel.cuh"]
    assert '#include "fp8_gemm_splitk.cuh"' in kernel


# ----------------------------------------------------------------------------- the C++ side, built by nvcc


HOST_PROGRAM = r"""
#include <cstdio>
#include "fp8_gemm_splitk.cuh"
using namespace gemm_sm90;
int main() {
  for (int kb = 1; kb <= 70; ++kb)
    for (int s = 1; s <= kb && s <= 32; ++s)
      for (int i = 0; i < s; ++i) {
        int b, e;
        split_range(kb, s, i, b, e);
        printf("R %d %d %d %d %d\n", kb, s, i, b, e);
      }
  int const tiles[] = {1, 2, 5, 17, 33, 100};
  int const splits[] = {2, 3, 5, 8};
  int const resident[] = {132, 16, 3};
  for (int t : tiles)
    for (int s : splits)
      for (int r : resident) {
        SplitKArgs a{s, splitk_round_tiles(r, s, t), nullptr, nullptr};
        int const clusters = a.round_tiles * s;
        int const units = (t + a.round_tiles - 1) / a.round_tiles * clusters;
        for (int u = 0; u < units; ++u) {
          WorkUnit w;
          if (splitk_unit(a, t, 56, clusters, u, w))
            printf("U %d %d %d %d %d %d %d %d\n", t, s, r, u % clusters, w.tile, w.split, w.kb_begin, w.kb_end);
        }
      }
}
"""


@pytest.mark.nvcc
def test_cpp_split_arithmetic_matches_the_python_mirror(tmp_path):
    lines = run_host_program(tmp_path, "splitk_host", HOST_PROGRAM)
    ranges = [tuple(map(int, line.split()[1:])) for line in lines if line.startswith("R ")]
    assert ranges == [(kb, s, i, *splitk.split_range(kb, s, i)) for kb in range(1, 71)
                      for s in range(1, min(kb, 32) + 1) for i in range(s)]
    units = [tuple(map(int, line.split()[1:])) for line in lines if line.startswith("U ")]
    assert units == [(t, s, r, u.cluster, u.tile, u.split, u.kb_begin, u.kb_end)
                     for t in (1, 2, 5, 17, 33, 100) for s in (2, 3, 5, 8) for r in (132, 16, 3)
                     for u in splitk.unit_order(t, 56, s, r)]


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """A real nvcc build of the configuration that once spilled in the fix-up (64x208, no overlap), and
    a 128-row one with overlap: no spills, no serialized wgmma; the first library is returned."""
    return clean_sm90_libraries(tmp_path_factory, [KernelConfig(64, 208, stages_that_fit(64, 208), False),
                                                   KernelConfig(128, 128, stages_that_fit(128, 128), True)])


@pytest.mark.nvcc
def test_library_abi_matches_the_launcher(built_library):
    for config, library in built_library:
        assert library.run_options_bytes == ctypes.sizeof(launcher.RunOptions)
        for m, n, k, splits, cluster in [(1, 512, 7168, 8, (1, 1)), (1000, 2112, 7168, 3, (1, 1)),
                                         (300, 576, 512, 4, (2, 1)), (100, 2112, 7168, 5, (1, 2)),
                                         (1024, 4608, 7168, 1, (1, 1))]:
            params = Sm90Params.for_tile(config.block_m, config.block_n, cluster_m=cluster[0], cluster_n=cluster[1],
                                         splits=splits)
            got = library.workspace_sizes(m, n, k, launcher.run_options(params))
            assert got == (splitk.counter_slots(m, n, config.block_m, config.block_n, splits, *cluster),
                           splitk.partial_bytes(m, n, config.block_m, config.block_n, splits, *cluster))


@pytest.mark.nvcc
def test_run_refuses_bad_split_arguments_before_touching_the_device(built_library):
    config, library = built_library[0]
    m, n, k = 100, 2112, 7168
    aligned = 1 << 20  # never dereferenced: every case below fails before the launch

    def call(options):
        library.run(aligned, aligned, aligned, aligned, aligned, m, n, k, k, False, 56, options, 0)

    needed_slots, needed_bytes = library.workspace_sizes(m, n, k, launcher.run_options(Sm90Params(splits=4)))
    with pytest.raises(LaunchError, match=r"bad argument.*splits=57 must be in \[1, ceil\(K / 128\) = 56\]"):
        call(launcher.RunOptions(1, 1, 0, 8, 0, 57))
    with pytest.raises(LaunchError, match=r"splits=0 must be in"):
        call(launcher.RunOptions(1, 1, 0, 8, 0, 0))
    with pytest.raises(LaunchError, match=rf"split-K counters: 0 slots at null, need {needed_slots}"):
        call(launcher.RunOptions(1, 1, 0, 8, 0, 4))
    options = launcher.RunOptions(1, 1, 0, 8, 0, 4, needed_slots, aligned, aligned, needed_bytes - 16)
    with pytest.raises(LaunchError, match=rf"split-K workspace: {needed_bytes - 16} bytes at the given pointer, "
                                          rf"need {needed_bytes}"):
        call(options)
    options = launcher.RunOptions(1, 1, 0, 8, 0, 4, needed_slots, aligned, aligned + 4, needed_bytes)
    with pytest.raises(LaunchError, match="split-K workspace must be 16-byte aligned"):
        call(options)
    with pytest.raises(LaunchError, match=r"workspace_sizes failed \(bad argument\): splits=9 must be in \[1, "
                                          r"ceil\(K / 128\) = 8\]"):
        library.workspace_sizes(5, 512, 1024, launcher.RunOptions(1, 1, 0, 8, 0, 9))
