"""Export to and import from vLLM / SGLang block-FP8 config files."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest

from gemm.configs import (
    ENGINE_KEYS, ConfigEntry, ConfigError, ConfigFile, ConfigWarning, KeptEntriesWarning, NoEngineMeasurements,
    Provenance, config_filename, export_config, import_config, load_config_file, nearest_entry, validate_config_file,
    write_config,
)

DEVICE = "NVIDIA_H100_80GB_HBM3"
N, K = 7168, 2048
VLLM_NAME = "N=7168,K=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
SGLANG_NAME = "N=7168,K=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128, 128].json"
MEASURED = Provenance(kind="measured", tool_version="0.1.0", torch="2.11.0", triton="3.6.0",
                      cutlass="4.2.0", date="2025-01-02T03:04:05+00:00")

# Shaped like the files engines ship: ascending M, the six Triton keys.
ENGINE_DOC = {
    "1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 4},
    "8": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 32, "num_warps": 4, "num_stages": 3},
    "64": {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 16, "num_warps": 4, "num_stages": 3},
    "1024": {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 64, "num_warps": 4, "num_stages": 2},
}


def triton_params(block_m=64, block_n=128, split_k=1, use_tma=False, persistent=False, num_stages=3) -> dict:
    return dict(block_m=block_m, block_n=block_n, block_k=128, group_m=8, num_warps=4, num_stages=num_stages,
                split_k=split_k, use_tma=use_tma, persistent=persistent)


def engine(block_m, block_n, num_stages=3) -> dict:
    return {"BLOCK_SIZE_M": block_m, "BLOCK_SIZE_N": block_n, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 8,
            "num_warps": 4, "num_stages": num_stages}


def native(tmp_path, entries) -> object:
    config = ConfigFile(device_name=DEVICE, arch="H100", n=N, k=K, block_shape=(128, 128), out_dtype="bfloat16",
                        provenance=MEASURED, entries=entries)
    return write_config(tmp_path / "native", config)


def engine_lookup(path, m):
    """What vLLM's and SGLang's ``get_w8a8_block_fp8_configs`` + caller do with a file."""
    configs = {int(key): val for key, val in json.loads(path.read_text()).items()}
    return configs[min(configs.keys(), key=lambda x: abs(x - m))]


def engine_params(block_m=64, block_n=128, num_stages=3) -> dict:
    """Params of the engines' kernel (``vllm_triton`` / ``sglang_triton`` entries)."""
    return dict(block_m=block_m, block_n=block_n, block_k=128, group_m=8, num_warps=4, num_stages=num_stages)


@pytest.mark.parametrize("fmt, name", [("vllm", VLLM_NAME), ("sglang", SGLANG_NAME)])
def test_export_writes_exact_engine_files(tmp_path, fmt, name):
    backend = f"{fmt}_triton"
    src = native(tmp_path, {1: ConfigEntry(backend, engine_params(16, 64, num_stages=4), 8.0),
                            64: ConfigEntry(backend, engine_params(64, 128), 12.0),
                            512: ConfigEntry(backend, engine_params(128, 128), 40.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # measurements of the engine's kernel export without any note
        out = export_config(src, fmt, tmp_path / fmt)
    assert out == tmp_path / fmt / name
    doc = json.loads(out.read_text())
    assert list(doc) == ["1", "64", "512"]
    assert all(set(cfg) == set(ENGINE_KEYS) for cfg in doc.values())
    assert doc["1"] == engine(16, 64, num_stages=4)
    assert doc["512"] == engine(128, 128)
    # The engine's own lookup picks what our dispatch would pick, at every M.
    native_config = load_config_file(src)
    for m in (1, 2, 30, 32, 33, 63, 64, 287, 288, 289, 5000):
        tuned_m, entry = nearest_entry(native_config, m)
        expected = {"BLOCK_SIZE_M": entry.params["block_m"], "BLOCK_SIZE_N": entry.params["block_n"],
                    "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 8, "num_warps": 4, "num_stages": entry.params["num_stages"]}
        assert engine_lookup(out, m) == expected, m
    assert validate_config_file(out) == []


def test_export_substitutes_what_engines_cannot_run(tmp_path):
    src = native(tmp_path, {
        1: ConfigEntry("triton", triton_params(16, split_k=4), 6.0, engine_triton=triton_params(16, 64)),
        8: ConfigEntry("triton", triton_params(16, 128, use_tma=True, persistent=True), 7.0),
        64: ConfigEntry("cutlass", {"tile_m": 64}, 10.0),
        256: ConfigEntry("cublas", {}, 20.0, engine_triton=triton_params(64, 128, num_stages=4)),
        1024: ConfigEntry("triton", triton_params(128, 128), 60.0),
    })
    with pytest.warns(ConfigWarning) as record:
        out = export_config(src, "vllm", tmp_path / "vllm", stand_ins=True)
    message = str(record[0].message)
    assert len(record) == 1
    assert "M=1024: our Triton kernel's plain config" in message
    assert "M=1: triton entry uses split_k; exported its recorded plain Triton alternative" in message
    assert "M=8: triton entry uses use_tma, persistent; exported the same tile without them" in message
    assert "M=64: cutlass entry has no Triton equivalent; left out" in message
    assert "M=256: cublas entry; exported its recorded plain Triton alternative" in message
    doc = json.loads(out.read_text())
    assert list(doc) == ["1", "8", "256", "1024"]
    assert doc["1"] == engine(16, 64)
    assert doc["8"] == engine(16, 128)
    assert doc["256"] == engine(64, 128, num_stages=4)
    assert all(set(cfg) == set(ENGINE_KEYS) for cfg in doc.values())  # never a key the engine does not know


def test_export_treats_any_new_kernel_field_as_a_feature_engines_lack(tmp_path, monkeypatch):
    from gemm.configs import engines
    from gemm.kernels.triton_fp8 import TritonParams

    @dataclasses.dataclass(frozen=True)
    class ParamsWithSwizzle(TritonParams):
        swizzle: int = 0

    monkeypatch.setattr(engines, "_triton_params_type", lambda: ParamsWithSwizzle)
    src = native(tmp_path, {1: ConfigEntry("triton", {**triton_params(16), "swizzle": 2}, 5.0),
                            64: ConfigEntry("triton", {**triton_params(64), "swizzle": 0}, 9.0)})
    with pytest.warns(ConfigWarning, match="M=1: triton entry uses swizzle; exported the same tile without them"):
        out = export_config(src, "vllm", tmp_path / "vllm", stand_ins=True)
    assert json.loads(out.read_text()) == {"1": engine(16, 128), "64": engine(64, 128)}


def test_export_refuses_nothing_exportable_and_impure_alternatives(tmp_path):
    only_cublas = native(tmp_path, {64: ConfigEntry("cublas", {}, 10.0)})
    with pytest.raises(ConfigError, match="no entry can be expressed"):
        export_config(only_cublas, "vllm", tmp_path / "out", stand_ins=True)
    assert not (tmp_path / "out" / VLLM_NAME).exists()
    bad = native(tmp_path / "b", {64: ConfigEntry("cublas", {}, 10.0, engine_triton=triton_params(split_k=2))})
    with pytest.raises(ConfigError, match=r"engine_triton must be a plain Triton config .* split_k=2"):
        export_config(bad, "sglang", tmp_path / "out", stand_ins=True)
    with pytest.raises(ValueError, match="fmt must be one of"):
        export_config(bad, "tensorrt", tmp_path / "out")


@pytest.mark.parametrize("fmt, name", [("vllm", VLLM_NAME), ("sglang", SGLANG_NAME)])
def test_import_then_export_gives_back_the_engine_file(tmp_path, fmt, name):
    src = tmp_path / "engine" / name
    src.parent.mkdir()
    src.write_text(json.dumps(ENGINE_DOC, indent=4))
    path = import_config(src, tmp_path / "root")
    assert path == tmp_path / "root" / DEVICE / VLLM_NAME  # native files use vLLM's spelling
    config = load_config_file(path)
    assert (config.device_name, config.arch, config.n, config.k, config.block_shape) == (DEVICE, "H100", N, K, (128, 128))
    assert config.provenance.kind == "imported"
    assert sorted(config.entries) == [1, 8, 64, 1024]
    entry = config.entries[8]
    assert (entry.backend, entry.us) == ("triton", None)
    assert entry.params == dict(block_m=16, block_n=128, block_k=128, group_m=32, num_warps=4, num_stages=3,
                                split_k=1, use_tma=False, persistent=False)
    assert validate_config_file(path) == []  # the imported params pass the Triton backend's checks
    with pytest.raises(NoEngineMeasurements, match="imported triton"):  # imported: not measured here
        export_config(path, fmt, tmp_path / "back")
    with pytest.warns(ConfigWarning, match="our Triton kernel's plain config"):
        out = export_config(path, fmt, tmp_path / "back", stand_ins=True)
    assert out.name == name
    assert json.loads(out.read_text()) == ENGINE_DOC


def test_import_merges_into_an_existing_native_file(tmp_path):
    native_path = write_config(tmp_path / "root", ConfigFile(
        device_name=DEVICE, arch="H100", n=N, k=K, block_shape=(128, 128), out_dtype="bfloat16",
        provenance=MEASURED, entries={2048: ConfigEntry("cublas", {}, 100.0), 64: ConfigEntry("cublas", {}, 9.0)}))
    src = tmp_path / VLLM_NAME
    src.write_text(json.dumps(ENGINE_DOC))
    with pytest.warns(KeptEntriesWarning, match=r"kept 1 measured entry \(M=64\) over the imported ones"):
        assert import_config(src, tmp_path / "root") == native_path
    config = load_config_file(native_path)
    assert sorted(config.entries) == [1, 8, 64, 1024, 2048]
    assert config.entries[2048].backend == "cublas" and config.provenance_of(2048).kind == "measured"
    assert config.entries[64].backend == "cublas" and config.provenance_of(64).kind == "measured"  # kept
    assert config.provenance_of(1).kind == "imported"

    assert import_config(src, tmp_path / "root", force=True) == native_path  # --force: imported replaces
    config = load_config_file(native_path)
    assert config.entries[64].backend == "triton" and config.provenance_of(64).kind == "imported"
    assert config.entries[2048].backend == "cublas" and config.provenance_of(2048).kind == "measured"


def test_import_drops_keys_our_kernel_does_not_take(tmp_path):
    doc = {"16": {**ENGINE_DOC["8"], "waves_per_eu": 2, "kpack": 1}, "32": {k: v for k, v in ENGINE_DOC["8"].items()
                                                                            if k not in ("num_warps", "num_stages")}}
    src = tmp_path / VLLM_NAME
    src.write_text(json.dumps(doc))
    assert validate_config_file(src) == ["['16'] has key(s) ['kpack', 'waves_per_eu'] that are not the engines' "
                                         "Triton config keys"]
    with pytest.warns(ConfigWarning, match=r"dropped keys .*\(M=16: kpack, waves_per_eu\)"):
        path = import_config(src, tmp_path / "root", arch="H100")
    config = load_config_file(path)
    assert config.entries[32].params["num_warps"] == 4 and config.entries[32].params["num_stages"] == 3


@pytest.mark.parametrize("name, doc, message", [
    ("weights.json", ENGINE_DOC, "not an engine config file name"),
    (VLLM_NAME, {"8": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "GROUP_SIZE_M": 1}}, r"\['8'\] lacks BLOCK_SIZE_K"),
    (VLLM_NAME, {"8": {**ENGINE_DOC["8"], "num_warps": "4"}}, r"\['8'\].num_warps must be a positive integer"),
    (VLLM_NAME, {"eight": ENGINE_DOC["8"]}, "key 'eight' must be a positive integer batch size"),
    (SGLANG_NAME, {}, "must be a non-empty JSON object"),
])
def test_import_rejects_bad_engine_files(tmp_path, name, doc, message):
    src = tmp_path / name
    src.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=message):
        import_config(src, tmp_path / "root")
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").rglob("*.json"))


def test_import_refuses_a_native_file(tmp_path):
    path = native(tmp_path, {64: ConfigEntry("triton", triton_params(), 12.0)})
    with pytest.raises(ConfigError, match="already a native config"):
        import_config(path, tmp_path / "root")


def test_engine_names_are_recognised_by_spelling():
    assert config_filename(N, K, DEVICE, style="vllm") == VLLM_NAME
    assert config_filename(N, K, DEVICE, style="sglang") == SGLANG_NAME
