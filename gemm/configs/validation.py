"""``validate_config_file``: every problem of a native, vLLM or SGLang config file, in words.

Beyond the schema (``gemm.configs.schema``), native files are checked against
the backends: the backend name is known, its params parse as that backend's
params type, and, where the file's GPU is known, the backend's ``check``
accepts the params for the problem at each tuned M. ``engine_triton``
alternatives must be plain Triton configs the engines' kernel can run.
"""

from __future__ import annotations

from pathlib import Path

from gemm.configs.engines import PLAIN_TRITON_FEATURES, engine_features_used, engine_problems
from gemm.configs.naming import parse_config_filename
from gemm.configs.schema import ConfigError, ConfigFile, config_from_json, native_problems
from gemm.configs.store import looks_like_engine_file, name_mismatches, read_json


def _arch_spec(name: str):
    from gemm.arch import get_arch, interpreter_arch

    if name == interpreter_arch().name:
        return interpreter_arch()
    try:
        return get_arch(name)
    except KeyError:
        return None


def _backend_problems(config: ConfigFile) -> list[str]:
    """Problems only the backends can see (lazy imports: validation is a tool-time job)."""
    from gemm.kernels import backend_names, get_backend
    from gemm.problem import GemmProblem

    problems = []
    arch = _arch_spec(config.arch)
    for m, entry in config.entries.items():
        where = f"entries[{str(m)!r}]"
        if entry.backend not in backend_names():
            problems.append(f"{where}.backend {entry.backend!r} is not a known backend; expected one of {backend_names()}")
            continue
        try:
            backend = get_backend(entry.backend)
        except ImportError:
            backend = None  # the backend's module cannot load here; its params cannot be judged on this machine
        if backend is not None:
            try:
                params = backend.params_from_dict(entry.params)
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}.params: {exc}")
            else:
                if arch is not None:
                    problem = GemmProblem(m, config.n, config.k, config.block_shape[0], config.block_shape[1],
                                          config.out_dtype)
                    reason = backend.check(problem, params, arch)
                    if reason is not None:
                        problems.append(f"{where}: the {entry.backend} params cannot run M={m} on {arch.name}: {reason}")
        if entry.engine_triton is not None:
            from gemm.kernels.triton_fp8 import TritonParams

            try:
                alternative = TritonParams.from_dict(dict(entry.engine_triton)).to_dict()
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}.engine_triton: {exc}")
            else:
                used = engine_features_used(alternative)
                if used:
                    plain = ", ".join(f"{k}={v}" for k, v in PLAIN_TRITON_FEATURES.items())
                    problems.append(f"{where}.engine_triton must be a plain Triton config ({plain}, other "
                                    f"non-engine fields at their defaults) but uses {', '.join(used)}")
    return problems


def validate_config_file(path) -> list[str]:
    """Human-readable problems of a config file ([] if it is valid).

    Native files are told by their ``schema_version`` key; anything else named
    like an engine file, or shaped like one (an object keyed by batch sizes),
    is checked as a vLLM/SGLang file, whose configs may hold only the engines'
    Triton keys.
    """
    path = Path(path)
    try:
        raw = read_json(path)
    except ConfigError as exc:
        return [str(exc).removeprefix(f"{path}: ")]
    parsed = parse_config_filename(path)
    if isinstance(raw, dict) and "schema_version" in raw:
        problems = native_problems(raw)
        if problems:
            return problems
        config = config_from_json(raw, str(path))
        return name_mismatches(path, config) + _backend_problems(config)
    if parsed is not None or looks_like_engine_file(raw):
        problems, unknown = engine_problems(raw, parsed.block_shape[1] if parsed is not None else 128)
        problems += [f"[{m!r}] has key(s) {keys} that are not the engines' Triton config keys"
                     for m, keys in unknown.items()]
        if parsed is None:
            problems.append("the file name is not an engine config name "
                            "(N=<N>,K=<K>,device_name=<device>,dtype=fp8_w8a8,block_shape=[<bn>,<bk>].json)")
        return problems
    return ["neither a native config (no schema_version key) nor a vLLM/SGLang file (keys are not batch sizes)"]
