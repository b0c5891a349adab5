"""``gemm predict`` (configs for a GPU from its spec) and ``gemm fit`` (the model's coefficients from logs)."""

from __future__ import annotations

import datetime
import json
import warnings
from pathlib import Path

from gemm.cli.checks import input_file, output_dir, output_file, text
from gemm.cli.common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, m_grid, name_list, shapes
from gemm.cli.common import say as _say
from gemm.tuner.presets import DEFAULT_PRESET, PRESETS


def add_parsers(sub) -> None:
    """Register ``predict`` and ``fit``."""
    p = sub.add_parser("predict", help="configs for a GPU from its spec alone (cost model, nothing is run)",
                       description="Rank every backend's candidates with the fitted cost model for a GPU's spec "
                                   "and write the best per M as config files with provenance 'predicted'.")
    p.add_argument("--arch", required=True, help="GPU short name (H20, H100, H200, H800, ...)")
    p.add_argument("--preset", nargs="+", choices=sorted(PRESETS), metavar="NAME",
                   help=f"shape presets (default {DEFAULT_PRESET}; see `gemm presets`)")
    p.add_argument("--shape", action="append", metavar="N,K", help="a weight shape (repeatable); replaces presets")
    p.add_argument("--m", metavar="LIST", help="comma-separated M values (default: vLLM's grid 1..4096)")
    p.add_argument("--m-extra", metavar="LIST", help="M values added to the grid, e.g. 8192")
    p.add_argument("--backends", metavar="LIST", help="subset of triton,cutlass,cublas (default all)")
    p.add_argument("--out-dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--out", metavar="DIR", help="config root: files go to DIR/<device_name>/ (default: the user "
                                                "config directory the op reads first, GEMM_CONFIG_DIR or "
                                                "~/.local/share/gemm/tuned_configs)")
    p.add_argument("--model", metavar="PATH", help="coefficients file (default: the one shipped with gemm)")
    p.add_argument("--force", action="store_true",
                   help="predicted entries replace measured and imported ones at the same M "
                        "(default: those are kept, and said)")
    p.set_defaults(handler=run_predict)

    p = sub.add_parser("fit", help="fit the cost model's coefficients to results logs")
    p.add_argument("logs", nargs="+", metavar="LOG", help="results logs (.jsonl or .jsonl.gz) of gemm tune")
    p.add_argument("--out", metavar="PATH", help="coefficients file to write (default: coefficients.json in the "
                                                 "user data directory, ~/.local/share/gemm; use it with "
                                                 "gemm predict --model PATH)")
    p.add_argument("--version", type=text("a version tag"),
                   help="version tag stored in predicted configs (default from GPUs and date)")
    p.add_argument("--cross-validate", action="store_true",
                   help="also score leave-one-shape-out fits (one fit per shape: slower)")
    p.add_argument("--check", nargs="+", metavar="LOG",
                   help="score the fitted model on logs it was not fitted on (e.g. another GPU's)")
    p.set_defaults(handler=run_fit)


def _backends(args) -> tuple[str, ...]:
    from gemm.tuner.model.predict import PREDICTABLE_BACKENDS

    if not args.backends:
        return PREDICTABLE_BACKENDS
    names = name_list(args.backends, "--backends")
    unknown = [b for b in names if b not in PREDICTABLE_BACKENDS]
    if unknown:
        raise ValueError(f"--backends: expected a comma-separated subset of {list(PREDICTABLE_BACKENDS)}, "
                         f"got {args.backends!r}")
    return names


def run_predict(args) -> int:
    """Write predicted configs for ``--arch`` under ``--out/<device_name>/``."""
    import pandas as pd

    from gemm import envs
    from gemm.arch import KNOWN_ARCHS, get_arch
    from gemm.configs import ConfigError
    from gemm.tuner.model.fitted import load_model
    from gemm.tuner.model.predict import prediction_records, predict_shape, write_predicted_config

    try:
        arch = get_arch(args.arch)
    except KeyError:
        _say(f"gemm predict: --arch {args.arch!r} is not a known GPU; expected one of {', '.join(KNOWN_ARCHS)}")
        return EXIT_USAGE
    try:
        swept, grid, backends = shapes(args, args.preset), m_grid(args), _backends(args)
        out_root = output_dir(args.out, "--out") if args.out else envs.config_root()
        model = load_model(input_file(args.model, "--model") if args.model else None)
    except (ValueError, OSError) as exc:
        _say(f"gemm predict: {exc}")
        return EXIT_USAGE
    _say(f"gemm predict: {len(swept)} shapes x {len(grid)} M for {arch.device_name} "
         f"({arch.num_sms} SMs, {arch.fp8_tflops:g} FP8 TFLOPS, {arch.hbm_tbps:g} TB/s) with model {model.version}")
    records, written = [], []
    for shape in swept:
        predictions = predict_shape(shape, grid, arch, model, backends, args.out_dtype)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                path = write_predicted_config(out_root, arch, shape, predictions, model, args.out_dtype,
                                              force=args.force)
            except ConfigError as exc:
                _say(f"gemm predict: N={shape.n} K={shape.k}: {exc}")
                return EXIT_ERROR
        for warning in caught:
            _say(f"gemm predict: {warning.message}")
        if path is None:
            _say(f"gemm predict: N={shape.n} K={shape.k}: no backend can run this shape on {arch.name}; no file")
            continue
        written.append(path)
        records += prediction_records(shape, predictions)
    if records:
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(pd.DataFrame.from_records(records).to_string(index=False))
    print(f"\n{len(written)} predicted config files written under {out_root / arch.config_device_name}")
    return EXIT_OK if written else EXIT_ERROR


def run_fit(args) -> int:
    """Fit the model's coefficients to results logs and write them (with quality numbers) to ``--out``."""
    from gemm import envs
    from gemm.configs.store import atomic_write_json
    from gemm.tuner.model.fit import cross_validate, fit_model, load_observations, quality_of, summarize
    from gemm.tuner.model.fitted import MODEL_FAMILY

    try:
        out = (output_file(args.out, "--out", "coefficients.json") if args.out
               else envs.user_data_dir() / "coefficients.json")
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
    document = model.to_json([Path(p).name for p in args.logs], quality)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, document)
    print(json.dumps({"version": version, "quality": quality}, indent=2))
    print(f"coefficients written to {out}; predict with them: gemm predict --model {out} ...")
    return EXIT_OK

