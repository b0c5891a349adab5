"""Native tuned-config files: schema round trip, validation messages, atomic merged writes, nearest M."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch

from gemm import envs
from gemm.configs import (
    SCHEMA_VERSION, ConfigEntry, ConfigError, ConfigFile, Provenance, config_filename, config_path,
    find_config, forget_cached, load_config_file, merge_configs, nearest_entry, parse_config_filename,
    ranked_entries, validate_config_file, write_config,
)
from gemm.configs.schema import config_to_json

DEVICE = "NVIDIA_H100_80GB_HBM3"
N, K = 7168, 2048
MEASURED = Provenance(kind="measured", tool_version="0.1.0", torch="2.11.0", triton="3.6.0",
                      cutlass="4.2.0", date="2025-01-02T03:04:05+00:00")
PREDICTED = Provenance(kind="predicted", tool_version="0.1.0", torch=None, triton=None, cutlass=None,
                       date="2025-01-03T00:00:00+00:00", model_version="roofline-1")


def triton_params(block_m=64, block_n=128, split_k=1, **more) -> dict:
    params = dict(block_m=block_m, block_n=block_n, block_k=128, group_m=8, num_warps=4, num_stages=3,
                  split_k=split_k, use_tma=False, persistent=False)
    params.update(more)
    return params


def make_config(entries: dict | None = None, provenance: Provenance = MEASURED, **header) -> ConfigFile:
    if entries is None:
        entries = {1: ConfigEntry("triton", triton_params(16, split_k=4), 9.5,
                                  engine_triton=triton_params(16, 64)),
                   64: ConfigEntry("triton", triton_params(64), 12.0),
                   4096: ConfigEntry("cublas", {}, 250.0)}
    fields = dict(device_name=DEVICE, arch="H100", n=N, k=K, block_shape=(128, 128), out_dtype="bfloat16")
    fields.update(header)
    return ConfigFile(provenance=provenance, entries=entries, **fields)


# --------------------------------------------------------------------------- names and round trip


def test_file_names_are_the_engines_spelling():
    assert config_filename(N, K, "NVIDIA H100 80GB HBM3") == \
        "N=7168,K=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
    assert config_filename(N, K, DEVICE, (128, 128), style="sglang") == \
        "N=7168,K=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128, 128].json"
    assert config_path(Path("/r"), "NVIDIA H200", 512, 7168) == \
        Path("/r/NVIDIA_H200/N=512,K=7168,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json")
    parsed = parse_config_filename(config_filename(N, K, DEVICE, (128, 64), style="sglang"))
    assert (parsed.n, parsed.k, parsed.device_name, parsed.block_shape, parsed.style) == \
        (N, K, DEVICE, (128, 64), "sglang")
    assert parse_config_filename("N=1,K=2,device_name=X,dtype=int8_w8a8,block_shape=[128,128].json") is None
    with pytest.raises(ValueError, match="style"):
        config_filename(N, K, DEVICE, style="trt")


def test_round_trip_through_disk(tmp_path):
    config = make_config()
    path = write_config(tmp_path, config)
    assert path == tmp_path / DEVICE / config_filename(N, K, DEVICE)
    assert load_config_file(path) == config
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert list(raw["entries"]) == ["1", "64", "4096"]
    assert raw["entries"]["1"]["engine_triton"]["block_n"] == 64
    assert "provenance" not in raw["entries"]["64"]  # same origin as the file: not repeated
    assert validate_config_file(path) == []


def test_device_name_is_normalized_and_entries_sorted():
    config = make_config(device_name="NVIDIA H100 80GB HBM3",
                         entries={64: ConfigEntry("triton", triton_params()), 2: ConfigEntry("triton", triton_params(16))})
    assert config.device_name == DEVICE
    assert list(config.entries) == [2, 64]


def test_current_provenance_records_this_process():
    prov = Provenance.current("measured")
    assert prov.kind == "measured" and prov.torch == torch.__version__
    assert datetime.datetime.fromisoformat(prov.date).tzinfo is not None
    with pytest.raises(ConfigError, match="kind must be one of"):
        Provenance.current("guessed")


def test_provenance_names_the_cutlass_headers_of_gemm_cutlass_dir(tmp_path, monkeypatch):
    """With GEMM_CUTLASS_DIR the headers built with are that tree's, whatever wheel is installed."""
    include = tmp_path / "include" / "cutlass"
    include.mkdir(parents=True)
    (include / "version.h").write_text("#define CUTLASS_MAJOR 4\n#define CUTLASS_MINOR 5\n#define CUTLASS_PATCH 0\n")
    (tmp_path / "tools" / "util" / "include" / "cutlass" / "util").mkdir(parents=True)
    monkeypatch.setenv("GEMM_CUTLASS_DIR", str(tmp_path))
    assert Provenance.current("measured").cutlass == "4.5.0"
    monkeypatch.setenv("GEMM_CUTLASS_DIR", str(tmp_path / "missing"))
    assert Provenance.current("measured").cutlass is None  # no headers there: nothing can be built


@pytest.mark.parametrize("make, message", [
    (lambda: ConfigEntry("triton", [1, 2]), "entry.params must be an object"),
    (lambda: ConfigEntry("triton", {}, us=-3.0), "entry.us must be a positive number"),
    (lambda: ConfigEntry("", {}), "entry.backend must be a backend name"),
    (lambda: make_config(n=0), "n must be a positive integer"),
    (lambda: make_config(block_shape=(128,)), "block_shape must be a list of two"),
    (lambda: make_config(out_dtype="int8"), "out_dtype must be one of"),
    (lambda: make_config(entries={0: ConfigEntry("triton", {})}), "entries key 0 must be a positive int M"),
])
def test_bad_objects_are_refused_at_construction(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


# --------------------------------------------------------------------------- validation messages


def _valid_document() -> dict:
    return config_to_json(make_config())


def _set(path: str, value):
    """A mutation setting a dotted path (``entries.1.us``) of the document; value ``...`` deletes it."""
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return mutate


BAD_FIELDS = [
    ("schema_version", _set("schema_version", "1"), "schema_version must be an integer"),
    ("future schema", _set("schema_version", SCHEMA_VERSION + 1), "is newer than this gemm understands"),
    ("device_name", _set("device_name", ""), "device_name must be a non-empty string"),
    ("arch missing", _set("arch", ...), "arch is missing"),
    ("n", _set("n", -5), "n must be a positive integer, got -5"),
    ("k as string", _set("k", "2048"), "k must be a positive integer, got '2048'"),
    ("block_shape", _set("block_shape", [128]), "block_shape must be a list of two positive integers"),
    ("out_dtype", _set("out_dtype", "int8"), "out_dtype must be one of"),
    ("unknown top key", _set("speed", 1), "unknown top-level key 'speed'"),
    ("provenance kind", _set("provenance.kind", "guessed"), "provenance.kind must be one of"),
    ("provenance date", _set("provenance.date", "yesterday"), "provenance.date must be an ISO 8601 date"),
    ("provenance version", _set("provenance.torch", 2.11), "provenance.torch must be a version string"),
    ("provenance tool", _set("provenance.tool_version", ...), "provenance.tool_version must be a non-empty string"),
    ("no entries", _set("entries", {}), "entries is empty"),
    ("entries not object", _set("entries", [1]), "entries must be an object mapping M"),
    ("entry key", lambda d: d["entries"].update({"abc": d["entries"]["64"]}), "entries key 'abc' must be a positive"),
    ("entry key padded", lambda d: d["entries"].update({"064": d["entries"]["64"]}), "entries key '064'"),
    ("entry us", _set("entries.64.us", -1), "entries['64'].us must be a positive number"),
    ("entry us NaN", _set("entries.64.us", "fast"), "entries['64'].us must be a positive number"),
    ("entry backend", _set("entries.64.backend", 3), "entries['64'].backend must be a backend name"),
    ("entry params type", _set("entries.64.params", [64]), "entries['64'].params must be an object"),
    ("entry params missing", _set("entries.64.params", ...), "entries['64'].params is missing"),
    ("entry params value", _set("entries.64.params.block_m", [64]), "entries['64'].params.block_m must be a number"),
    ("entry unknown key", _set("entries.64.tflops", 3), "entries['64'] has unknown key 'tflops'"),
    ("entry provenance", _set("entries.64.provenance", {"kind": "x"}), "entries['64'].provenance.kind must be one of"),
    # Checks that need the backends:
    ("unknown backend", _set("entries.64.backend", "tritonn"), "entries['64'].backend 'tritonn' is not a known backend"),
    ("unknown param", _set("entries.64.params.block_mm", 64), "entries['64'].params: unknown TritonParams parameter"),
    ("param type", _set("entries.64.params.use_tma", 1), "TritonParams.use_tma must be true/false"),
    ("rejected params", _set("entries.64.params.block_m", 48), "cannot run M=64 on H100: block_m=48"),
    ("engine_triton features", _set("entries.1.engine_triton.split_k", 2),
     "entries['1'].engine_triton must be a plain Triton config"),
]


@pytest.mark.parametrize("label, mutate, message", BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
def test_validation_names_the_bad_field(tmp_path, label, mutate, message):
    doc = _valid_document()
    mutate(doc)
    path = tmp_path / config_filename(N, K, DEVICE)
    path.write_text(json.dumps(doc))
    problems = validate_config_file(path)
    assert any(message in p for p in problems), problems
    backend_level = label in ("unknown backend", "unknown param", "param type", "rejected params",
                              "engine_triton features")
    if not backend_level:  # structural problems also stop loading, with the file named
        with pytest.raises(ConfigError) as info:
            load_config_file(path)
        assert str(path) in str(info.value) and message in str(info.value)


def test_validation_of_unreadable_and_mismatched_files(tmp_path):
    broken = tmp_path / config_filename(N, K, DEVICE)
    broken.write_text('{"schema_version": 1, ')
    assert any("not valid JSON (line 1" in p for p in validate_config_file(broken))

    other = tmp_path / "notes.json"
    other.write_text("[1, 2]")
    assert validate_config_file(other) == [
        "neither a native config (no schema_version key) nor a vLLM/SGLang file (keys are not batch sizes)"]

    misnamed = tmp_path / config_filename(4096, K, DEVICE)
    misnamed.write_text(json.dumps(_valid_document()))
    problems = validate_config_file(misnamed)
    assert problems == ["the file name says n=4096 but the content has n=7168"]
    with pytest.raises(ConfigError, match="file name says n=4096"):
        load_config_file(misnamed)

    engine_file = tmp_path / "engine" / config_filename(N, K, DEVICE)
    engine_file.parent.mkdir()
    engine_file.write_text(json.dumps({"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128,
                                             "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}}))
    assert validate_config_file(engine_file) == []
    with pytest.raises(ConfigError, match="engine file .* `gemm import`"):
        load_config_file(engine_file)
    with pytest.raises(ConfigError, match="no such file"):
        load_config_file(tmp_path / "missing.json")


# --------------------------------------------------------------------------- merge and atomic writes


def test_write_merges_with_the_file_on_disk(tmp_path):
    write_config(tmp_path, make_config())
    update = make_config(entries={64: ConfigEntry("cublas", {}, 11.0), 128: ConfigEntry("triton", triton_params(), 20.0)})
    path = write_config(tmp_path, update)
    merged = load_config_file(path)
    assert sorted(merged.entries) == [1, 64, 128, 4096]
    assert merged.entries[64].backend == "cublas"  # the newer write wins for an M written twice
    assert merged.entries[1] == make_config().entries[1]


def test_merge_keeps_each_entrys_origin():
    merged = merge_configs(make_config(), make_config(entries={8: ConfigEntry("triton", triton_params(16))},
                                                      provenance=PREDICTED))
    assert merged.provenance == PREDICTED
    assert merged.provenance_of(8) == PREDICTED
    assert merged.provenance_of(64) == MEASURED  # a measured entry does not become "predicted"
    later = dataclasses.replace(MEASURED, date="2025-02-01T00:00:00+00:00")
    again = merge_configs(merged, make_config(entries={2: ConfigEntry("triton", triton_params(16))}, provenance=later))
    assert again.entries[64].provenance is None  # same kind and versions: the file's provenance covers it
    assert again.provenance_of(8) == PREDICTED


def test_merge_refuses_a_different_problem(tmp_path):
    write_config(tmp_path, make_config())
    with pytest.raises(ConfigError, match="out_dtype 'bfloat16' vs 'float16'"):
        write_config(tmp_path, make_config(out_dtype="float16"))


def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = write_config(tmp_path, make_config())
    before = path.read_bytes()

    def dump_then_crash(obj, handle, **kwargs):
        handle.write('{"schema_version": 1, "entries": {')  # half a document reaches the temp file
        raise RuntimeError("simulated crash while serializing")

    monkeypatch.setattr(json, "dump", dump_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_config(tmp_path, make_config(entries={2: ConfigEntry("triton", triton_params(16))}))
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_config(tmp_path, make_config(n=512))  # a new file: nothing may appear
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_config_file(path) == make_config()
    assert not (tmp_path / DEVICE / config_filename(512, K, DEVICE)).exists()
    leftovers = [p.name for p in (tmp_path / DEVICE).iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_corrupt_file_is_not_overwritten(tmp_path):
    path = config_path(tmp_path, DEVICE, N, K)
    path.parent.mkdir(parents=True)
    path.write_text("{ corrupt")
    with pytest.raises(ConfigError, match="refusing to overwrite .*not valid JSON"):
        write_config(tmp_path, make_config())
    assert path.read_text() == "{ corrupt"


WRITERS, WRITES_EACH = 4, 20


def _concurrent_writer(root: str, writer: int, barrier) -> None:
    barrier.wait()
    for i in range(WRITES_EACH):
        m = 1 + writer * 1000 + i
        entries = {m: ConfigEntry("triton", triton_params(16 if m % 2 else 64), float(m))}
        write_config(Path(root), make_config(entries=entries))


def test_concurrent_writers_end_with_the_union(tmp_path):
    # spawn: children start clean (no inherited locks or threads), as separate tuner processes would.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_concurrent_writer, args=(str(tmp_path), w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    config = load_config_file(config_path(tmp_path, DEVICE, N, K))
    expected = {1 + w * 1000 + i for w in range(WRITERS) for i in range(WRITES_EACH)}
    assert set(config.entries) == expected
    assert all(config.entries[m].us == float(m) for m in expected)


# --------------------------------------------------------------------------- lookup


def test_nearest_entry_and_its_tie_rule():
    entries = {m: ConfigEntry("triton", triton_params(), float(m)) for m in (1, 16, 64, 256)}
    config = make_config(entries=entries)
    assert nearest_entry(config, 1)[0] == 1
    assert nearest_entry(config, 9)[0] == 16
    assert nearest_entry(config, 40)[0] == 16   # |40-16| == |40-64|: the smaller tuned M wins
    assert nearest_entry(config, 41)[0] == 64
    assert nearest_entry(config, 100000)[0] == 256
    assert [m for m, _ in ranked_entries(config, 40)] == [16, 64, 1, 256]
    # Same choice as vLLM/SGLang make from an ascending file, for every M.
    for m in range(1, 600):
        assert nearest_entry(config, m)[0] == min(sorted(entries), key=lambda x: abs(x - m))
    with pytest.raises(ValueError, match="positive int"):
        nearest_entry(config, 0)


def test_find_config_uses_the_env_root_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMM_CONFIG_DIR", str(tmp_path))
    forget_cached()
    assert envs.config_root() == tmp_path
    assert find_config(DEVICE, N, K) is None
    path = write_config(tmp_path, make_config())  # a write in this process refreshes the cache
    assert find_config("NVIDIA H100 80GB HBM3", N, K) == make_config()

    raw = json.loads(path.read_text())
    raw["entries"]["64"]["us"] = 99.0
    path.write_text(json.dumps(raw))
    assert find_config(DEVICE, N, K).entries[64].us == 12.0  # cached
    forget_cached()
    assert find_config(DEVICE, N, K).entries[64].us == 99.0

    path.write_text("garbage")
    forget_cached()
    for _ in range(2):  # the error is cached too, and raised each time
        with pytest.raises(ConfigError, match="not valid JSON"):
            find_config(DEVICE, N, K)
    forget_cached()


def test_documents_are_plain_json(tmp_path):
    path = write_config(tmp_path, make_config())
    text = path.read_text()
    assert text.endswith("\n") and json.loads(text) == config_to_json(make_config())
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    copy.deepcopy(load_config_file(path))  # plain data all the way down
