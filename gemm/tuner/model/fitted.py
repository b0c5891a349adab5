"""The cost model's coefficients: the fitted ones shipped in ``coefficients.json``, or the priors.

A ``FittedModel`` holds the coefficients of every modelled backend
(``gemm.tuner.model.roofline``) and a version tag that predicted configs and
sweep hashes record. ``predict_us`` is what the tuner ranks candidates by.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from gemm.arch import ArchSpec
from gemm.problem import GemmProblem
from gemm.tuner.model.roofline import COEFFICIENT_TYPES, MODELS, SHARED_COEFFICIENTS, Coefficients, triton_us

#: Names the model family; a fit adds its own tag (``MODEL_VERSION`` + fitted logs) in the coefficients file.
MODEL_FAMILY = "roofline-2"
COEFFICIENTS_PATH = Path(__file__).with_name("coefficients.json")


@dataclass(frozen=True)
class FittedModel:
    """The coefficients of every modelled backend and the version tag stored in configs it predicts.

    ``archs`` names the GPUs (``ArchSpec.name``, e.g. "H200") whose measurements the fit saw. The op
    predicts its choice for untuned shapes only on those (``covers``); ``gemm predict`` may
    extrapolate to any GPU whose spec is known.
    """

    version: str
    coefficients: dict[str, Coefficients]
    archs: tuple[str, ...] = ()

    def covers(self, arch: ArchSpec) -> bool:
        """True when the fit saw measurements of ``arch``'s GPU model."""
        return arch.name in self.archs

    def to_json(self, fitted_on: list[str] | None = None, quality: dict | None = None) -> dict:
        return {"model_family": MODEL_FAMILY, "version": self.version, "archs": list(self.archs),
                "fitted_on": fitted_on or [], "quality": quality or {},
                "backends": {name: dataclasses.asdict(c) for name, c in sorted(self.coefficients.items())}}

    @classmethod
    def from_json(cls, raw: dict, source: str) -> "FittedModel":
        """Parse a coefficients document; ValueError naming ``source`` and the bad field."""
        if not isinstance(raw, dict) or raw.get("model_family") != MODEL_FAMILY:
            raise ValueError(f"{source}: not a {MODEL_FAMILY} coefficients file "
                             f"(model_family {raw.get('model_family') if isinstance(raw, dict) else None!r})")
        coefficients = dict(prior_model().coefficients)
        for name, values in (raw.get("backends") or {}).items():
            if name not in COEFFICIENT_TYPES:
                raise ValueError(f"{source}: unknown backend {name!r}; expected one of {sorted(COEFFICIENT_TYPES)}")
            kind = COEFFICIENT_TYPES[name]
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"{source}: backends.{name} has unknown coefficients {sorted(unknown)}")
            bad = [k for k, v in values.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)]
            if bad:
                raise ValueError(f"{source}: backends.{name} coefficients {bad} must be positive numbers")
            coefficients[name] = kind(**{k: float(v) for k, v in values.items()})
        archs = raw.get("archs", [])
        if not isinstance(archs, list) or not all(isinstance(a, str) and a for a in archs):
            raise ValueError(f"{source}: archs must be a list of GPU names such as 'H200', got {archs!r}")
        return cls(str(raw.get("version") or MODEL_FAMILY), coefficients, tuple(archs))


def prior_model() -> FittedModel:
    """The hand-set priors (what a fit starts from)."""
    return FittedModel(f"{MODEL_FAMILY}-prior", {name: kind() for name, kind in COEFFICIENT_TYPES.items()})


@functools.lru_cache(maxsize=None)
def _load_model(path: str) -> FittedModel:
    file = Path(path)
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not JSON ({exc})") from None
    return FittedModel.from_json(raw, str(file))


def default_model() -> FittedModel:
    """The fitted model shipped with the package (the priors if no fit is stored)."""
    if not COEFFICIENTS_PATH.is_file():
        return prior_model()
    return _load_model(str(COEFFICIENTS_PATH))


def load_model(path: Path | str | None) -> FittedModel:
    """The model stored at ``path`` (None: the shipped one). ValueError naming the file when it is
    missing or not a coefficients file: a model asked for by name is never silently replaced."""
    if path is None:
        return default_model()
    file = Path(path).resolve()
    if not file.is_file():
        raise ValueError(f"--model: no coefficients file at {path}")
    return _load_model(str(file))


def model_version() -> str:
    """The version tag of the shipped model (written into predicted configs and sweep hashes)."""
    return default_model().version


def predict_with(model: FittedModel, backend_name: str, problem: GemmProblem, params: dict,
                 arch: ArchSpec) -> float | None:
    """``model``'s microseconds for a candidate, or None for a backend it does not describe."""
    function = MODELS.get(backend_name)
    coefficients = model.coefficients.get(SHARED_COEFFICIENTS.get(backend_name, backend_name))
    if function is None or coefficients is None:
        return None
    return function(problem, params, arch, coefficients)


def predict_us(backend_name: str, problem: GemmProblem, params: dict, arch: ArchSpec) -> float | None:
    """The shipped model's microseconds for a candidate, or None for backends the model does not describe."""
    return predict_with(default_model(), backend_name, problem, params, arch)


def predict_triton_us(problem: GemmProblem, params: dict, arch: ArchSpec) -> float:
    """The shipped model's microseconds for one launch of the Triton kernel with ``params``."""
    return triton_us(problem, params, arch, default_model().coefficients["triton"])
