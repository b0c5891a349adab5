"""Configs for a GPU from its spec alone: every backend's candidates ranked by the cost model.

For each shape and M, each backend proposes its search space for the target
``ArchSpec``, its constraint checks drop what cannot run there, and the model
(``gemm.tuner.model``) times the rest; the fastest predicted candidate of all
backends becomes the entry, and the fastest plain Triton one its
``engine_triton`` fallback (what ``gemm export`` gives engines). Nothing is run
or compiled, so this works on any machine, for GPUs nobody here has.

Files carry provenance ``"predicted"`` with the model's version and no times
(``us`` null): a prediction is a ranking, not a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gemm.arch import ArchSpec
from gemm.problem import GemmProblem
from gemm.tuner.model.fitted import FittedModel, predict_with
from gemm.tuner.presets import LayerShape

PREDICTABLE_BACKENDS = ("triton", "cutlass", "cublas")


@dataclass(frozen=True)
class Prediction:
    """The model's pick at one point, and its predicted microseconds."""

    m: int
    backend: str
    params: dict
    predicted_us: float
    engine_triton: dict | None = None


def _candidates(backend_name: str, problem: GemmProblem, arch: ArchSpec):
    from gemm.kernels import get_backend

    backend = get_backend(backend_name)
    for params in backend.param_space(problem, arch):
        if backend.check(problem, params, arch) is None:
            yield params.to_dict()


def predict_point(problem: GemmProblem, arch: ArchSpec, model: FittedModel,
                  backends: Sequence[str] = PREDICTABLE_BACKENDS) -> Prediction | None:
    """The fastest predicted candidate of ``backends`` for ``problem`` on ``arch`` (None if none can run)."""
    from gemm.configs.engines import is_plain_triton

    best: tuple[float, str, dict] | None = None
    plain: tuple[float, dict] | None = None
    for backend in backends:
        for params in _candidates(backend, problem, arch):
            us = predict_with(model, backend, problem, params, arch)
            if us is None or not math.isfinite(us):
                continue
            if best is None or us < best[0]:
                best = (us, backend, params)
            if is_plain_triton(backend, params) and (plain is None or us < plain[0]):
                plain = (us, params)
    if best is None:
        return None
    us, backend, params = best
    return Prediction(problem.m, backend, params, us, plain[1] if plain is not None else None)


def predict_shape(shape: LayerShape, m_grid: Sequence[int], arch: ArchSpec, model: FittedModel,
                  backends: Sequence[str] = PREDICTABLE_BACKENDS, out_dtype: str = "bfloat16",
                  block_shape: tuple[int, int] = (128, 128)) -> dict[int, Prediction]:
    """``{m: Prediction}`` for one weight shape over ``m_grid`` (points no backend can run are left out)."""
    out = {}
    for m in m_grid:
        problem = GemmProblem(m, shape.n, shape.k, block_shape[0], block_shape[1], out_dtype)
        prediction = predict_point(problem, arch, model, backends)
        if prediction is not None:
            out[m] = prediction
    return out


def prediction_records(shape: LayerShape, predictions: dict[int, Prediction]) -> list[dict]:
    """One record per predicted point of a shape: N, K, M, backend, config, predicted_us, TFLOPS."""
    from gemm.tuner.results.measurement import short_params

    return [{"N": shape.n, "K": shape.k, "M": m, "backend": p.backend, "config": short_params(p.params, p.backend),
             "predicted_us": round(p.predicted_us, 2),
             "TFLOPS": round(2 * m * shape.n * shape.k / p.predicted_us / 1e6, 1)} for m, p in predictions.items()]


def write_predicted_config(out_root: Path, arch: ArchSpec, shape: LayerShape, predictions: dict[int, Prediction],
                           model: FittedModel, out_dtype: str = "bfloat16",
                           block_shape: tuple[int, int] = (128, 128), force: bool = False) -> Path | None:
    """Write (merge) the predicted config file of one shape; None when there is no entry.

    Measured and imported entries already there are kept over predicted ones at their M (``force``
    replaces them); ``write_config`` warns what was kept."""
    from gemm.configs import ConfigEntry, ConfigFile, Provenance, write_config

    if not predictions:
        return None
    entries = {m: ConfigEntry(p.backend, dict(p.params), None, p.engine_triton) for m, p in predictions.items()}
    config = ConfigFile(arch.config_device_name, arch.name, shape.n, shape.k, tuple(block_shape), out_dtype,
                        Provenance.current("predicted", model.version), entries)
    return write_config(out_root, config, force)
