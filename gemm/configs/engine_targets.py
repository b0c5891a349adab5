"""The inference engines whose block-FP8 Triton kernel the project tunes config files for.

One ``Engine`` per engine: the version whose kernel ``gemm.kernels.classic_triton`` mirrors, the
backend that runs that kernel as the engine launches it, where the engine's package keeps its
block-FP8 config files, and the serving flag that makes the engine run its Triton kernel (by default
both engines run another library's kernel on Hopper and never read these files).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Engine:
    """One engine. ``config_dir`` is the path, inside its installed package ``package``, of the folder its
    block-FP8 kernel reads ``N=..,K=..,device_name=..`` files from (no environment variable moves it);
    file names follow ``gemm.configs.naming`` with style ``name``."""

    name: str
    title: str
    version: str
    backend: str
    package: str
    config_dir: tuple[str, ...]
    serve_flag: str


ENGINES: dict[str, Engine] = {
    "vllm": Engine("vllm", "vLLM", "0.33.0", "vllm_triton", "vllm",
                   ("model_executor", "layers", "quantization", "utils", "configs"), "--linear-backend triton"),
    "sglang": Engine("sglang", "SGLang", "0.5.23", "sglang_triton", "sglang",
                     ("kernels", "ops", "gemm", "configs"), "--fp8-gemm-backend triton"),
}


def engine_named(name: str) -> Engine:
    """The engine called ``name`` ("vllm" or "sglang"); ValueError naming the choices otherwise."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; expected one of {list(ENGINES)}")
    return ENGINES[name]


def engine_of_backend(backend: str) -> Engine | None:
    """The engine whose kernel ``backend`` runs, or None for the project's own backends."""
    return next((engine for engine in ENGINES.values() if engine.backend == backend), None)
