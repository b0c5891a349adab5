"""``gemm predict`` (configs for a GPU from its spec) and ``gemm fit`` (the model's coefficients from logs)."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from gemm.tuner.tune_cmd import EXIT_ERROR, EXIT_OK, EXIT_USAGE, resolve_m_grid


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _shapes(args):
    from gemm.tuner.presets import DEFAULT_PRESET, dedupe_shapes, parse_shape, preset_shapes

    if args.shape:
        return dedupe_shapes([parse_shape(text) for text in args.shape])
    shapes = []
    for name in args.preset or [DEFAULT_PRESET]:
        shapes += preset_shapes(name)
    return dedupe_shapes(shapes)


def _backends(args) -> tuple[str, ...]:
    from gemm.tuner.predict import PREDICTABLE_BACKENDS

    if not args.backends:
        return PREDICTABLE_BACKENDS
    names = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in names if b not in PREDICTABLE_BACKENDS]
    if unknown or not names:
        raise ValueError(f"--backends: expected a comma-separated subset of {list(PREDICTABLE_BACKENDS)}, "
                         f"got {args.backends!r}")
    return names


def run_predict(args) -> int:
    """Write predicted configs for ``--arch`` under ``--out/<device_name>/``."""
    import pandas as pd

    from gemm import envs
    from gemm.arch import KNOWN_ARCHS, get_arch
    from gemm.configs import ConfigError
    from gemm.tuner.model import load_model
    from gemm.tuner.predict import predict_shape, write_predicted_config
    from gemm.tuner.results import short_params

    try:
        arch = get_arch(args.arch)
    except KeyError:
        _say(f"gemm predict: --arch {args.arch!r} is not a known GPU; expected one of {', '.join(KNOWN_ARCHS)}")
        return EXIT_USAGE
    try:
        shapes, m_grid, backends = _shapes(args), resolve_m_grid(args), _backends(args)
        model = load_model(args.model)
    except (ValueError, OSError) as exc:
        _say(f"gemm predict: {exc}")
        return EXIT_USAGE
    out_root = Path(args.out) if args.out else envs.config_root()
    _say(f"gemm predict: {len(shapes)} shapes x {len(m_grid)} M for {arch.device_name} "
         f"({arch.num_sms} SMs, {arch.fp8_tflops:g} FP8 TFLOPS, {arch.hbm_tbps:g} TB/s) with model {model.version}")
    records, written = [], []
    for shape in shapes:
        predictions = predict_shape(shape, m_grid, arch, model, backends, args.out_dtype)
        try:
            path = write_predicted_config(out_root, arch, shape, predictions, model, args.out_dtype)
        except (ConfigError, OSError) as exc:
            _say(f"gemm predict: N={shape.n} K={shape.k}: {exc}")
            return EXIT_ERROR
        if path is None:
            _say(f"gemm predict: N={shape.n} K={shape.k}: no backend can run this shape on {arch.name}; no file")
            continue
        written.append(path)
        for m, p in predictions.items():
            records.append({"N": shape.n, "K": shape.k, "M": m, "backend": p.backend,
                            "config": short_params(p.params, p.backend), "predicted_us": round(p.predicted_us, 2),
                            "TFLOPS": round(2 * m * shape.n * shape.k / p.predicted_us / 1e6, 1)})
    if records:
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(pd.DataFrame.from_records(records).to_string(index=False))
    print(f"\n{len(written)} predicted config files written under {out_root / arch.config_device_name}")
    return EXIT_OK if written else EXIT_ERROR


def run_fit(args) -> int:
    """Fit the model's coefficients to results logs and write them (with quality numbers) to ``--out``."""
    from gemm.tuner.model import COEFFICIENTS_PATH, MODEL_FAMILY
    from gemm.tuner.model_fit import cross_validate, fit_model, load_observations, quality_of, summarize

    try:
        observations = load_observations(args.logs)
    except (OSError, ValueError) as exc:
        _say(f"gemm fit: {exc}")
        return EXIT_USAGE
    if not observations:
        _say("gemm fit: the logs hold no timed OK candidates to fit")
        return EXIT_USAGE
    archs = sorted({o.arch.name for o in observations})
    version = args.version or f"{MODEL_FAMILY}-{'+'.join(archs)}-{datetime.date.today():%Y%m%d}"
    _say(f"gemm fit: {len(observations)} timed candidates from {len(args.logs)} logs ({', '.join(archs)})")
    model = fit_model(observations, version)
    quality = {"in_sample": summarize(model, observations).to_json()}
    if args.cross_validate:
        _say("gemm fit: leave-one-shape-out cross-validation (one fit per shape)")
        quality["leave_one_shape_out"] = quality_of(cross_validate(observations, version)).to_json()
    for path in args.check or []:
        # Logs of another GPU (or sweep) the fit has not seen: how well the fitted model transfers.
        try:
            held_out = load_observations([path])
        except (OSError, ValueError) as exc:
            _say(f"gemm fit: --check {exc}")
            return EXIT_USAGE
        quality[f"check:{Path(path).name}"] = summarize(model, held_out).to_json()
    if len(args.check or []) > 1:  # e.g. every sweep of another GPU: one score over all their points
        quality["check:all"] = summarize(model, load_observations(args.check)).to_json()
    out = Path(args.out) if args.out else COEFFICIENTS_PATH
    document = model.to_json([Path(p).name for p in args.logs], quality)
    from gemm.configs.store import atomic_write_json

    atomic_write_json(out, document)
    print(json.dumps({"version": version, "quality": quality}, indent=2))
    print(f"coefficients written to {out}")
    return EXIT_OK

