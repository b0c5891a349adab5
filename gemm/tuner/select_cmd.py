"""``gemm select LOG... --out DIR``: config files re-derived from results logs, with the logs' provenance.

Anyone can audit a shipped config this way: the selection that ``gemm tune``
made at the end of its sweep is made again from the log it shipped with (or
from several logs of one device, e.g. a sweep and a later one that re-tuned
some shapes: for an (N, K, M) timed in a later log, that log's rows replace the earlier ones).
"""

from __future__ import annotations

import sys
from pathlib import Path

from gemm.tuner.tune_cmd import EXIT_ERROR, EXIT_OK, EXIT_USAGE


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_select(args) -> int:
    from gemm.configs import ConfigError, Provenance
    from gemm.configs.schema import utc_now
    from gemm.tuner.results import LogFormatError, Stage, Status, read_log
    from gemm.tuner.select import select
    from gemm.tuner.tune_cmd import write_choices

    if args.tie < 0:
        _say(f"gemm select: --tie must be >= 0, got {args.tie}")
        return EXIT_USAGE
    header, rows = None, {}
    for raw in args.logs:
        path = Path(raw)
        if not path.is_file():
            _say(f"gemm select: {path}: no such file")
            return EXIT_USAGE
        try:
            fingerprint, log_rows = read_log(path)
        except LogFormatError as exc:
            _say(f"gemm select: {exc}")
            return EXIT_USAGE
        if header is not None:
            differs = header.mismatches(fingerprint, ignore=("space_hash",))  # other searches may add points
            if differs:
                _say(f"gemm select: {path} is from another device or software than {args.logs[0]}: "
                     + "; ".join(differs))
                return EXIT_USAGE
        header = header or fingerprint
        timed = {r.point for r in log_rows if r.stage == Stage.FINAL and r.status == Status.OK}
        rows = {key: kept for key, kept in rows.items() if key not in timed}  # a later log's timings replace
        for row in log_rows:
            rows.setdefault(row.point, []).append(row)
    choices = select([row for point_rows in rows.values() for row in point_rows], args.tie)
    provenance = Provenance("measured", header.tool_version, header.torch, header.triton, header.cutlass,
                            utc_now())
    failed = False
    for (n, k), per_m in sorted(choices.items()):
        try:
            path = write_choices(Path(args.out), header.device_name, header.arch, n, k, per_m, header.out_dtype,
                                 header.block_shape, provenance)
        except ConfigError as exc:
            _say(f"gemm select: N={n} K={k}: {exc}")
            failed = True
            continue
        if path is None:
            _say(f"gemm select: N={n} K={k}: no entry from a registered backend")
        else:
            print(f"N={n} K={k}: {len(per_m)} M values -> {path}")
    if not choices:
        _say("gemm select: no timed candidate in the logs")
        return EXIT_ERROR
    return EXIT_ERROR if failed else EXIT_OK
