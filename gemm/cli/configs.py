"""``gemm show | export | import | validate | build``: working with tuned-config files."""

from __future__ import annotations

import warnings
from pathlib import Path

from gemm.cli.checks import count, input_dir, input_file, output_dir
from gemm.cli.common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, UsageError
from gemm.cli.common import say as _say


def add_parsers(sub) -> None:
    """Register ``show``, ``export``, ``import``, ``validate`` and ``build``."""
    p = sub.add_parser("show", help="table of tuned config files")
    p.add_argument("paths", nargs="+", metavar="PATH", help="config files or directories")
    p.set_defaults(handler=run_show)

    p = sub.add_parser("export", help="write vLLM or SGLang Triton config files",
                       description="Engine files from native config files, from entries measured in the engine's "
                                   "own kernel (gemm tune --engine) only, unless --stand-ins.")
    p.add_argument("--format", required=True, choices=("vllm", "sglang"))
    p.add_argument("src", nargs="+", metavar="SRC", help="native config files or directories")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DST", help="directory for the exported files")
    where.add_argument("--install", action="store_true",
                       help="write into the config folder of the installed engine (found without importing it), "
                            "atomically, keeping every replaced file under its .gemm-backups/<time>/")
    p.add_argument("--engine-path", action="append", metavar="DIR",
                   help="with --install: the site-packages folder (or the package folder) of the engine, when it "
                        "is installed for another Python (repeatable)")
    p.add_argument("--stand-ins", action="store_true",
                   help="fill M without measurements of the engine's kernel with the nearest plain configs of our "
                        "Triton kernel (never replacing an existing file unless --force)")
    p.add_argument("--force", action="store_true", help="with --stand-ins: replace existing files too")
    p.set_defaults(handler=run_export)

    p = sub.add_parser("import", help="convert vLLM or SGLang config files to native ones")
    p.add_argument("src", nargs="+", metavar="SRC", help="engine config files or directories")
    p.add_argument("--out", required=True, metavar="DST", help="config root to write <device_name>/ files under")
    p.add_argument("--arch", help="GPU short name (e.g. H100) when the device name is not a known one")
    p.add_argument("--force", action="store_true",
                   help="imported entries replace measured ones at the same M (default: measured beats "
                        "imported beats predicted, and what was kept is said)")
    p.set_defaults(handler=run_import)

    p = sub.add_parser("validate", help="check config files; exit 1 if any is invalid")
    p.add_argument("paths", nargs="+", metavar="PATH", help="config files or directories")
    p.add_argument("--quiet", action="store_true", help="list only invalid files")
    p.set_defaults(handler=run_validate)

    p = sub.add_parser("build", help="compile the C++ kernels (CUTLASS, sm90) that config files name")
    p.add_argument("--configs", action="append", metavar="DIR",
                   help="config directory (default: the directories the op reads, the user config directory "
                        "and the shipped configs)")
    p.add_argument("--config", action="append", metavar="FILE", help="one config file (repeatable)")
    p.add_argument("--jobs", type=count(1, "nvcc processes"), help="parallel nvcc processes (default GEMM_BUILD_JOBS)")
    p.set_defaults(handler=run_build)


def config_files(paths, pattern: str = "*.json") -> tuple[list[Path], list[str]]:
    """Files named by ``paths`` (directories searched recursively), and messages for paths that do not exist."""
    files, missing = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob(pattern) if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(f"{path}: no such file or directory")
    return files, missing


def _warning_lines(caught) -> list[str]:
    return [f"  warning: {w.message}" for w in caught]


def run_show(args) -> int:
    """Table of the tuned entries in config files or directories."""
    import pandas as pd

    from gemm.configs import ConfigError, load_config_file
    from gemm.tuner.results.tables import config_entries_table

    files, missing = config_files(args.paths)
    for message in missing:
        _say(f"gemm show: {message}")
    configs, failed = [], bool(missing)
    for path in files:
        try:
            configs.append(load_config_file(path))
        except ConfigError as exc:
            _say(f"gemm show: {exc}")
            failed = True
    frame = config_entries_table(configs)
    if frame.empty:
        if not failed:
            _say("gemm show: no tuned entries found")
        return EXIT_ERROR if failed or not files else EXIT_OK
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        print(frame.to_string(index=False))
    return EXIT_ERROR if failed else EXIT_OK


def _convert_each(command: str, sources, convert) -> int:
    """``convert(path)`` for every config file under ``sources``, printing ``SRC -> DST`` and the warnings
    of each; exit 2 when there is no file, 1 when one could not be converted (or a source is missing)."""
    from gemm.configs import ConfigError

    files, missing = config_files(sources)
    for message in missing:
        _say(f"gemm {command}: {message}")
    if not files:
        if not missing:
            _say(f"gemm {command}: no config files to {command}")
        return EXIT_USAGE
    failed = bool(missing)
    for path in files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                written = convert(path)
            except (ConfigError, ValueError) as exc:
                message = str(exc)
                _say(f"gemm {command}: {message if message.startswith(str(path)) else f'{path}: {message}'}")
                failed = True
                continue
        print(f"{path} -> {written}")
        for line in _warning_lines(caught):
            print(line)
    return EXIT_ERROR if failed else EXIT_OK


def _out_dir(command: str, args) -> Path | None:
    try:
        return output_dir(args.out, "--out")
    except UsageError as exc:
        _say(f"gemm {command}: {exc}")
        return None


def run_export(args) -> int:
    """Native config files -> vLLM / SGLang Triton config files under ``--out``, or into the installed engine."""
    from gemm.configs import export_config

    if args.engine_path and not args.install:
        _say("gemm export: --engine-path names where the engine is installed; give --install too")
        return EXIT_USAGE
    if args.force and not args.stand_ins:
        _say("gemm export: --force lets stand-ins replace existing files; give --stand-ins too")
        return EXIT_USAGE
    if args.install:
        return _install(args)
    out = _out_dir("export", args)
    if out is None:
        return EXIT_USAGE
    return _convert_each("export", args.src,
                         lambda path: export_config(path, args.format, out, args.stand_ins, args.force))


def _install(args) -> int:
    from gemm.configs.install import backup_stamp, engine_config_dir, install_config

    try:
        paths = [input_dir(path, "--engine-path") for path in args.engine_path] if args.engine_path else None
        folder = engine_config_dir(args.format, paths)
    except (UsageError, ValueError) as exc:  # EngineNotFound is a ConfigError, a ValueError
        _say(f"gemm export: {exc}")
        return EXIT_USAGE
    print(f"installing into {folder}")
    stamp = backup_stamp()

    def install(path):
        done = install_config(path, args.format, folder, stamp, args.stand_ins, args.force)
        if done.unchanged:
            return f"{done.path} (unchanged)"
        return f"{done.path}" + (f" (replaced; the old file is kept as {done.backup})" if done.backup else " (new)")

    return _convert_each("export", args.src, install)


def run_import(args) -> int:
    """vLLM / SGLang Triton config files -> native files under ``--out/<device_name>/``; measured entries there
    are kept over imported ones unless ``--force``, and the kept ones are listed."""
    from gemm.configs import import_config

    out = _out_dir("import", args)
    if out is None:
        return EXIT_USAGE
    arch = None
    if args.arch is not None:
        from gemm.arch import KNOWN_ARCHS, get_arch

        try:
            arch = get_arch(args.arch).name
        except KeyError:
            _say(f"gemm import: --arch {args.arch!r} is not a known GPU; expected one of {', '.join(KNOWN_ARCHS)} "
                 f"(leave --arch out for another GPU: its device name is recorded as its arch)")
            return EXIT_USAGE
    return _convert_each("import", args.src, lambda path: import_config(path, out, arch, args.force))


def run_validate(args) -> int:
    """Check config files (native, vLLM or SGLang); exit 1 when any is invalid or a path is missing."""
    from gemm.configs import validate_config_file

    files, missing = config_files(args.paths)
    for message in missing:
        print(f"INVALID {message}")
    if not files and not missing:
        print("INVALID no config files (*.json) found under " + ", ".join(map(str, args.paths)))
        return EXIT_ERROR
    invalid = len(missing)
    for path in files:
        problems = validate_config_file(path)
        if problems:
            invalid += 1
            print(f"INVALID {path}")
            for problem in problems:
                print(f"  - {problem}")
        elif not args.quiet:
            print(f"ok      {path}")
    total = len(files) + len(missing)
    print(f"{total - invalid} of {total} config files valid")
    return EXIT_ERROR if invalid else EXIT_OK


def run_build(args) -> int:
    """Compile every C++ kernel (CUTLASS and Hopper ``sm90``) that config files name, ahead of time
    (needs nvcc, not a GPU); prints each library with its compile time."""
    from gemm import envs
    from gemm.kernels.base import BackendUnavailable, CompileError
    from gemm.kernels.cutlass import aot as cutlass_aot
    from gemm.kernels.sm90 import aot as sm90_aot

    try:
        paths = [str(input_file(path, "--config")) for path in args.config or []]
        paths += [str(input_dir(path, "--configs")) for path in args.configs or []]
    except UsageError as exc:
        _say(f"gemm build: {exc}")
        return EXIT_USAGE
    if not paths:
        paths = [str(root) for root in envs.config_roots() if root.is_dir()]
    try:
        families = [("CUTLASS", cutlass_aot, cutlass_aot.kernel_configs_in_config_files(paths)),
                    ("Hopper (sm90)", sm90_aot, sm90_aot.kernel_configs_in_config_files(paths))]
    except (FileNotFoundError, ValueError) as exc:
        _say(f"gemm build: {exc}")
        return EXIT_USAGE
    if not any(wanted for _, _, wanted in families):
        print("no CUTLASS or sm90 entries in " + ", ".join(paths) + "; nothing to build")
        return EXIT_OK

    def report(outcome) -> None:
        name = getattr(getattr(outcome, "config", None), "name", None) or outcome.spec.name
        if outcome.error is None:
            took = "cached" if outcome.result.cached else f"{outcome.result.seconds:.1f} s"
            print(f"  {name}: {took}", flush=True)

    for title, module, wanted in families:
        if not wanted:
            continue
        print(f"building {len(wanted)} {title} kernels")
        try:
            built = module.build_kernels(wanted, jobs=args.jobs, progress=report)
        except BackendUnavailable as exc:
            _say(f"gemm build: {exc}")
            return EXIT_USAGE
        except CompileError as exc:
            _say(f"gemm build: {exc}")
            return EXIT_ERROR
        for item in built:
            print(getattr(item, "path", item))
    return EXIT_OK
