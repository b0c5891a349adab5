"""CPU tests of how CUTLASS kernels get built: finding nvcc and the headers, the JIT cache (with a
stand-in compiler), refusals of instantiations a CUTLASS release cannot compile, ahead-of-time
builds, and fetching a newer header tree (scripts/fetch_cutlass_headers.py).

Nothing here needs nvcc, a GPU or the network; the real compile is in test_cutlass_compile.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest

from gemm.kernels.base import BackendUnavailable, CompileError
from gemm.kernels.cutlass import aot, codegen, jit
from gemm.kernels.nvcc import toolchain
from gemm.kernels.cutlass.config import CutlassParams, KernelConfig
from script_modules import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- toolchain


def _fake_cutlass_tree(root: Path, version=(4, 2, 1)) -> Path:
    include = root / "include" / "cutlass"
    include.mkdir(parents=True)
    (include / "version.h").write_text(textwrap.dedent(f"""\
        #define CUTLASS_MAJOR {version[0]}
        #define CUTLASS_MINOR {version[1]}
        #define CUTLASS_PATCH {version[2]}
        """))
    (root / "tools" / "util" / "include" / "cutlass" / "util").mkdir(parents=True)
    return root


FAKE_NVCC = """\
#!{python}
# Stand-in for nvcc: answers --version, writes the -o file, records each compile, fails on request.
import os, sys, time
args = sys.argv[1:]
if args == ["--version"]:
    print("Cuda compilation tools, release 13.0, V13.0.88")
    sys.exit(0)
source = open(args[-1]).read()
with open(os.environ["FAKE_NVCC_CALLS"], "a") as calls:
    calls.write(source.splitlines()[1] + "\\n")
time.sleep(float(os.environ.get("FAKE_NVCC_SLEEP", "0")))
if os.environ.get("FAKE_NVCC_FAIL_ON", "\\0") in source:
    print("kernel.cu(12): error: static assertion failed with \\"made-up failure\\"", file=sys.stderr)
    sys.exit(2)
with open(args[args.index("-o") + 1], "w") as out:
    out.write("not really a library")
print("ptxas info    : Used 168 registers, used 2 barriers")
print("ptxas info    :     0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads")
"""


@pytest.fixture
def fake_toolchain(tmp_path, monkeypatch):
    """A made-up nvcc and CUTLASS tree, and a private cache directory."""
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text(FAKE_NVCC.format(python=sys.executable))
    nvcc.chmod(0o755)
    calls = tmp_path / "nvcc_calls.txt"
    calls.write_text("")
    monkeypatch.setenv("GEMM_NVCC", str(nvcc))
    monkeypatch.setenv("GEMM_CUTLASS_DIR", str(_fake_cutlass_tree(tmp_path / "cutlass")))
    monkeypatch.setenv("GEMM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_NVCC_CALLS", str(calls))
    return calls


def test_cutlass_dir_override_and_its_version(fake_toolchain, tmp_path):
    headers = toolchain.find_cutlass()
    assert headers.version == (4, 2, 1) and headers.origin == "GEMM_CUTLASS_DIR"
    root = tmp_path / "cutlass"
    assert headers.include_dirs == (root / "include", root / "tools" / "util" / "include")
    assert toolchain.find_toolchain().nvcc_version == "13.0.88"


def test_missing_headers_and_nvcc_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMM_CUTLASS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(BackendUnavailable, match="no CUTLASS headers in .*GEMM_CUTLASS_DIR"):
        toolchain.find_cutlass()
    assert toolchain.cutlass_version_or_none() is None
    monkeypatch.setenv("GEMM_NVCC", str(tmp_path / "no-nvcc"))
    with pytest.raises(BackendUnavailable, match="nvcc not found"):
        toolchain.find_nvcc()


def test_wheel_headers_are_found_without_importing_the_package():
    code = ("import sys; from gemm.kernels.nvcc import toolchain; h = toolchain.find_cutlass(); "
            "print(h.version, h.origin, 'cutlass_library' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "GEMM_CUTLASS_DIR"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if "CUTLASS headers not found" in result.stderr:
        pytest.skip("the nvidia-cutlass wheel is not installed")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\(4, \d+, \d+\) nvidia-cutlass wheel False", result.stdout.strip()), result.stdout


# --------------------------------------------------------------------------- JIT cache


def test_build_compiles_once_and_caches_by_content(fake_toolchain, tmp_path):
    first = jit.build(KernelConfig())
    assert not first.cached and first.path.read_text() == "not really a library"
    assert (first.registers, first.spill_bytes) == (168, 12)
    entry = first.path.parent
    assert entry.parent == tmp_path / "cache" / "cutlass"
    assert (entry / "kernel.cu").read_text() == codegen.render_source(KernelConfig())
    assert (entry / codegen.HEADER_NAME).read_text() == codegen.header_text()
    meta = json.loads((entry / jit.META_NAME).read_text())
    assert meta["cutlass_version"] == "4.2.1" and meta["nvcc_version"] == "13.0.88" and meta["registers"] == 168
    assert "ptxas" in (entry / jit.LOG_NAME).read_text()
    again = jit.build(KernelConfig())
    assert again.cached and again.path == first.path and again.registers == 168
    other = jit.build(KernelConfig(cluster_n=2))
    assert other.path != first.path
    assert len(fake_toolchain.read_text().splitlines()) == 2
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")], "temporary build dirs left behind"


def test_cache_key_covers_source_header_versions_and_flags(fake_toolchain):
    tc = toolchain.find_toolchain()
    source, header = codegen.render_source(KernelConfig()), codegen.header_text()
    key = jit.cache_key(source, header, tc)
    other_tc = dataclasses.replace(tc, cutlass=dataclasses.replace(tc.cutlass, version=(4, 5, 0)))
    variants = [jit.cache_key(source + " ", header, tc), jit.cache_key(source, header + " ", tc),
                jit.cache_key(source, header, other_tc),
                jit.cache_key(source, header, dataclasses.replace(tc, nvcc_version="12.9.1")),
                jit.cache_key(source, header, tc, flags=("-O2",))]
    assert key not in variants and len(set(variants)) == len(variants)


def test_failed_build_raises_with_the_compiler_log_and_leaves_nothing(fake_toolchain, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_FAIL_ON", "Pingpong")
    with pytest.raises(CompileError, match="made-up failure") as info:
        jit.build(KernelConfig(schedule="pingpong", tile_m=64))
    assert isinstance(info.value, jit.NvccError)
    assert "made-up failure" in info.value.log and info.value.command[0].endswith("nvcc")
    assert "pingpong_64x128x128" in str(info.value)
    root = tmp_path / "cache" / "cutlass"
    assert not [p for p in root.iterdir() if p.is_dir()], "a failed build must not leave a cache entry"


def test_build_many_dedups_runs_in_parallel_and_isolates_failures(fake_toolchain, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_FAIL_ON", "Pingpong")
    monkeypatch.setenv("FAKE_NVCC_SLEEP", "0.3")
    configs = [KernelConfig(), KernelConfig(cluster_m=2), KernelConfig(), KernelConfig(schedule="pingpong", tile_m=64),
               KernelConfig(sfa_major="mn")]
    seen = []
    outcomes = jit.build_many(configs, jobs=4, progress=seen.append)
    assert [o.config for o in outcomes] == list(dict.fromkeys(configs))
    assert len(seen) == 4
    failed = [o for o in outcomes if o.error is not None]
    assert [o.config.schedule for o in failed] == ["pingpong"] and isinstance(failed[0].error, CompileError)
    assert all(o.result.path.is_file() for o in outcomes if o.error is None)
    assert len(fake_toolchain.read_text().splitlines()) == 4


def test_concurrent_builds_of_one_kernel_compile_it_once(fake_toolchain, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_SLEEP", "0.5")
    results = []
    threads = [threading.Thread(target=lambda: results.append(jit.build(KernelConfig()))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.path for r in results}) == 1 and sum(not r.cached for r in results) == 1
    assert len(fake_toolchain.read_text().splitlines()) == 1


# --------------------------------------------------------------------------- ahead-of-time builds


def _write_config(path: Path, entries: dict, **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"entries": entries, **top}))
    return path


def test_config_files_yield_their_cutlass_params(tmp_path):
    coop = CutlassParams().to_dict()
    ping = CutlassParams(schedule="pingpong", tile_m=64).to_dict()
    _write_config(tmp_path / "dev" / "N=2112,K=7168.json", {
        "1": {"backend": "cutlass", "params": ping, "us": 10.0},
        "64": {"backend": "triton", "params": {"block_m": 64}, "us": 12.0},
        "4096": {"backend": "cutlass", "params": coop, "us": 90.0}})
    single = _write_config(tmp_path / "other" / "N=576,K=7168.json", {
        "16": {"backend": "cutlass", "params": ping, "us": 5.0},
        "512": {"backend": "cutlass", "params": dict(coop, raster="along_m"), "us": 30.0}}, out_dtype="float16")
    params = aot.params_in_config_files([tmp_path / "dev", single])
    assert params == [CutlassParams(schedule="pingpong", tile_m=64), CutlassParams(),
                      CutlassParams(raster="along_m")]
    configs = aot.kernel_configs_in_config_files([tmp_path])
    assert set(configs) == {CutlassParams(schedule="pingpong", tile_m=64).kernel_config("bfloat16"),
                            CutlassParams().kernel_config("bfloat16"),
                            CutlassParams(schedule="pingpong", tile_m=64).kernel_config("float16"),
                            CutlassParams().kernel_config("float16")}


def test_bad_config_files_are_named_in_the_error(tmp_path):
    bad_json = tmp_path / "a.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="a.json"):
        aot.params_in_config_files([bad_json])
    bad_params = _write_config(tmp_path / "b.json", {"8": {"backend": "cutlass", "params": {"tile_m": "big"}}})
    with pytest.raises(ValueError, match=r"(?s)b\.json.*M=8.*tile_m"):
        aot.params_in_config_files([bad_params])
    with pytest.raises(FileNotFoundError, match="missing"):
        aot.params_in_config_files([tmp_path / "missing"])


def test_build_kernels_builds_each_library_once_and_reports_failures(fake_toolchain, monkeypatch):
    params = [CutlassParams(), CutlassParams(raster="along_m"), CutlassParams(cluster_m=2)]
    paths = aot.build_kernels(params, jobs=2)
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    monkeypatch.setenv("FAKE_NVCC_FAIL_ON", "Pingpong")
    with pytest.raises(CompileError, match=r"(?s)1 of 2 CUTLASS kernels failed.*pingpong_64x128x128.*made-up failure"):
        aot.build_kernels([CutlassParams(), CutlassParams(schedule="pingpong", tile_m=64)])


# --------------------------------------------------------------------------- releases that cannot build a tile


@pytest.fixture
def newer_cutlass(fake_toolchain, tmp_path, monkeypatch):
    """The fake toolchain with a CUTLASS 4.5.0 tree (64-row tiles do not compile there)."""
    monkeypatch.setenv("GEMM_CUTLASS_DIR", str(_fake_cutlass_tree(tmp_path / "cutlass-4.5", (4, 5, 0))))
    return fake_toolchain


def test_build_refuses_a_tile_the_release_cannot_compile_without_running_nvcc(newer_cutlass):
    with pytest.raises(jit.UnbuildableConfig, match=r"pingpong_64x128x128.*CUTLASS 4\.5\.0 cannot compile 64-row"):
        jit.build(KernelConfig(schedule="pingpong", tile_m=64))
    assert newer_cutlass.read_text() == ""
    wide = jit.build(KernelConfig(tile_m=256))
    assert wide.path.is_file() and len(newer_cutlass.read_text().splitlines()) == 1


def test_build_kernels_names_the_unbuildable_and_builds_the_rest(newer_cutlass):
    with pytest.raises(CompileError, match=r"(?s)1 of 3 CUTLASS kernels failed.*pingpong_64x128x128.*UnbuildableConfig"
                                           r".*cannot compile 64-row"):
        aot.build_kernels([CutlassParams(), CutlassParams(tile_m=256), CutlassParams(schedule="pingpong", tile_m=64)])
    assert sorted(newer_cutlass.read_text().splitlines()) == sorted(
        f"// One blockwise-scaled FP8 GEMM instantiation: {c.name}"
        for c in (KernelConfig(), KernelConfig(tile_m=256)))
    assert aot.build_kernels([CutlassParams(), CutlassParams(tile_m=256)]) == [
        jit.build(KernelConfig()).path, jit.build(KernelConfig(tile_m=256)).path]


# --------------------------------------------------------------------------- fetching newer headers


def _load_fetch_script():
    return load_script("fetch_cutlass_headers")


fetch_script = _load_fetch_script()


def _version_header(version) -> bytes:
    return "".join(f"#define CUTLASS_{name} {v}\n" for name, v in zip(("MAJOR", "MINOR", "PATCH"), version)).encode()


def _cutlass_members(root: str, version=(4, 5, 0), util=True) -> dict[str, bytes]:
    """Files of a small CUTLASS checkout under ``root`` (with files that must not be extracted)."""
    members = {
        f"{root}include/cutlass/version.h": _version_header(version),
        f"{root}include/cutlass/gemm/gemm.h": b"// gemm\n",
        f"{root}include/cute/tensor.hpp": b"// cute\n",
        f"{root}examples/01/main.cu": b"// not a header tree\n",
        f"{root}python/cutlass_library/__init__.py": b"",
    }
    if util:
        members[f"{root}tools/util/include/cutlass/util/packed_stride.hpp"] = b"// util\n"
        members[f"{root}tools/library/include/cutlass/library/library.h"] = b"// not util\n"
    return members


def _write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _write_sdist(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _relative_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


EXPECTED_TREE = {"include/cutlass/version.h", "include/cutlass/gemm/gemm.h", "include/cute/tensor.hpp",
                 "tools/util/include/cutlass/util/packed_stride.hpp", fetch_script.SOURCE_FILE}


@pytest.mark.parametrize("writer, name", [(_write_wheel, "pkg-1.0-py3-none-any.whl"), (_write_sdist, "pkg-1.0.tar.gz")])
def test_fetch_extracts_exactly_the_include_trees(tmp_path, monkeypatch, capsys, writer, name):
    members = {**_cutlass_members("pkg/data/cutlass/"), "pkg/__init__.py": b"",
               "pkg/data/other/include/cutlass/readme.txt": b"no version header here"}
    archive = writer(tmp_path / name, members)
    dest = tmp_path / "headers"
    assert fetch_script.main([str(dest), "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "CUTLASS 4.5.0" in out and f"GEMM_CUTLASS_DIR={dest.resolve()}" in out.splitlines()[-1]
    assert _relative_files(dest) == EXPECTED_TREE
    assert (dest / "include/cute/tensor.hpp").read_bytes() == b"// cute\n"
    source = json.loads((dest / fetch_script.SOURCE_FILE).read_text())
    assert source["cutlass_version"] == "4.5.0" and source["archive"] == name and source["files"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directories left behind"
    # The tree is what the JIT builds against.
    monkeypatch.setenv("GEMM_CUTLASS_DIR", str(dest))
    headers = toolchain.find_cutlass()
    assert headers.version == (4, 5, 0) and headers.include_dirs == (dest / "include", dest / "tools/util/include")


def test_fetch_picks_the_newest_complete_tree(tmp_path):
    members = {**_cutlass_members("a/old/", (4, 2, 0)), **_cutlass_members("b/new/", (4, 6, 1)),
               **_cutlass_members("c/newest_without_util/", (5, 0, 0), util=False)}
    with fetch_script.Archive(_write_wheel(tmp_path / "x.whl", members)) as archive:
        tree = fetch_script.find_cutlass_tree(archive)
    assert (tree.root, tree.version) == ("b/new/", (4, 6, 1))


@pytest.mark.parametrize("members, message", [
    ({"pkg/__init__.py": b""}, "holds no CUTLASS headers"),
    (_cutlass_members("pkg/cutlass/", util=False), "no tools/util/include/cutlass/util/"),
    ({**_cutlass_members("pkg/"), "pkg/include/cutlass/version.h": b"#define CUTLASS_MAJOR 4\n"},
     "does not define CUTLASS_MINOR"),
])
def test_fetch_explains_archives_without_usable_headers(tmp_path, capsys, members, message):
    archive = _write_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", members)
    assert fetch_script.main([str(tmp_path / "dest"), "--archive", str(archive)]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()


def test_fetch_refuses_unsafe_members_and_foreign_destinations(tmp_path):
    unsafe = _write_wheel(tmp_path / "evil.whl", {**_cutlass_members("p/"), "p/include/../../escape.h": b"x"})
    with pytest.raises(fetch_script.FetchError, match="outside the destination"):
        fetch_script.fetch(tmp_path / "dest", archive_path=unsafe)
    assert not (tmp_path / "dest").exists() and not (tmp_path / "escape.h").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    good = _write_wheel(tmp_path / "good.whl", _cutlass_members("p/"))
    with pytest.raises(fetch_script.FetchError, match="not written by this script"):
        fetch_script.fetch(foreign, archive_path=good)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_fetch_replaces_a_tree_it_wrote_before(tmp_path):
    dest = tmp_path / "headers"
    fetch_script.fetch(dest, archive_path=_write_wheel(tmp_path / "a.whl", _cutlass_members("p/", (4, 4, 0))))
    (dest / "include/cutlass/stale.h").write_text("from the old tree")
    tree = fetch_script.fetch(dest, archive_path=_write_wheel(tmp_path / "b.whl", _cutlass_members("q/", (4, 5, 0))))
    assert tree.version == (4, 5, 0) and _relative_files(dest) == EXPECTED_TREE
    assert toolchain.read_cutlass_version(dest / "include") == (4, 5, 0)


def test_fetch_downloads_the_named_package_with_pip(tmp_path, monkeypatch):
    commands = []

    def fake_pip(command, **kwargs):
        commands.append(command)
        into = Path(command[command.index("--dest") + 1])
        if command[-1] == "missing-package":
            return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")
        _write_wheel(into / "flashinfer_python-9.9-py3-none-any.whl", _cutlass_members("flashinfer/data/cutlass/"))
        return subprocess.CompletedProcess(command, 0, "Saved", "")

    monkeypatch.setattr(fetch_script.subprocess, "run", fake_pip)
    tree = fetch_script.fetch(tmp_path / "dest", "flashinfer-python", "9.9")
    assert tree.version == (4, 5, 0)
    assert commands[0][1:5] == ["-m", "pip", "download", "--no-deps"] and commands[0][-1] == "flashinfer-python==9.9"
    source = json.loads((tmp_path / "dest" / fetch_script.SOURCE_FILE).read_text())
    assert (source["package"], source["requested_version"]) == ("flashinfer-python", "9.9")
    with pytest.raises(fetch_script.FetchError, match="(?s)pip download of missing-package failed.*No matching"):
        fetch_script.fetch(tmp_path / "dest2", "missing-package")


def test_gemm_build_compiles_the_cutlass_and_sm90_kernels_configs_name(fake_toolchain, tmp_path, capsys):
    from gemm.cli import main
    from gemm.kernels.sm90.params import Sm90Params

    config = _write_config(tmp_path / "cfg" / "dev" / "N=2112,K=7168.json", {
        "1": {"backend": "sm90", "params": Sm90Params(block_m=64, block_n=128).to_dict(), "us": 9.0},
        "64": {"backend": "sm90", "params": Sm90Params(block_m=64, block_n=128, cluster_n=2).to_dict(), "us": 9.5},
        "4096": {"backend": "cutlass", "params": CutlassParams().to_dict(), "us": 90.0}})
    assert main(["build", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "building 1 CUTLASS kernels" in out and "building 1 Hopper (sm90) kernels" in out
    assert re.search(r"sm90_64x128x128_s8_ov_bf16: \d+\.\d s", out), out
    assert len(fake_toolchain.read_text().splitlines()) == 2  # the two M=1/64 entries share one build
    assert main(["build", "--config", str(config)]) == 0
    assert "sm90_64x128x128_s8_ov_bf16: cached" in capsys.readouterr().out
    bad = _write_config(tmp_path / "bad.json", {"8": {"backend": "sm90", "params": {"block_n": 24}}})
    assert main(["build", "--config", str(bad)]) == 2
    assert re.search(r"bad\.json: sm90 entry for M=8: .*block_n must be a multiple of 16", capsys.readouterr().err)
