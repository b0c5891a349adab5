"""Configs for a GPU from its spec alone: every backend's candidates ranked by the cost model.

For each shape and M, ``gemm.tuner.model.choice.predict_point`` (the same choice
the op makes for shapes nobody tuned) ranks every backend's checked candidates
for the target ``ArchSpec``; the fastest predicted becomes the entry, and the
fastest plain Triton one its ``engine_triton`` fallback (what ``gemm export``
gives engines). Nothing is run or compiled, so this works on any machine, for
GPUs nobody here has.

Files carry provenance ``"predicted"`` with the model's version and no times
(``us`` null): a prediction is a ranking, not a measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from gemm.arch import ArchSpec
from gemm.kernels.base import Backend
from gemm.problem import GemmProblem
from gemm.tuner.model.choice import PREDICTABLE_BACKENDS, Prediction, predict_point
from gemm.tuner.model.fitted import FittedModel
from gemm.tuner.presets import LayerShape

__all__ = ["PREDICTABLE_BACKENDS", "Prediction", "predict_point", "predict_shape", "prediction_records",
           "write_predicted_config"]


def predict_shape(shape: LayerShape, m_grid: Sequence[int], arch: ArchSpec, model: FittedModel,
                  backends: Sequence[str | Backend] = PREDICTABLE_BACKENDS, out_dtype: str = "bfloat16",
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
