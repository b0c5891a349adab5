"""Tables for people (pandas DataFrames): rows, the tuned choice per point, status counts, config entries."""

from __future__ import annotations

import collections
from typing import Iterable

from gemm.arch import ArchSpec
from gemm.configs import ConfigFile
from gemm.problem import GemmProblem
from gemm.tuner.presets import LayerShape
from gemm.tuner.results.measurement import Measurement, Stage, Status, short_params
from gemm.tuner.results.select import Choice, distinct_configs


def choices_table(selected: dict[tuple[int, int], dict[int, Choice]], shapes: Iterable[LayerShape],
                  arch: ArchSpec | None):
    """DataFrame, one row per tuned point: layer, N, K, M, backend, config, us, TFLOPS, floor %, vs plain Triton.

    ``floor %`` is the datasheet floor (``ArchSpec.floor_us``) over the time;
    ``vs plain`` is how much faster the choice is than the best plain Triton
    config (what engines' own kernel would run).
    """
    import pandas as pd

    names = {(s.n, s.k): s.name for s in shapes}
    records = []
    for (n, k), per_m in selected.items():
        for m, choice in sorted(per_m.items()):
            record = {"layer": names.get((n, k), ""), "N": n, "K": k, "M": m, "backend": choice.backend,
                      "config": short_params(choice.params, choice.backend), "us": round(choice.us, 2),
                      "TFLOPS": round(choice.tflops, 1) if choice.tflops else None}
            if arch is not None:
                problem = GemmProblem(m, n, k)
                record["floor %"] = round(100 * arch.floor_us(problem.flops, problem.min_bytes) / choice.us, 1)
            # How much faster than the best plain Triton config, the kernel engines' own code can run.
            plain_us = choice.engine_triton_us if choice.engine_triton is not None else None
            record["vs plain"] = f"{plain_us / choice.us:.2f}x" if plain_us else "-"
            records.append(record)
    return pd.DataFrame.from_records(records)


def status_table(rows: Iterable[Measurement]):
    """DataFrame of candidate counts per backend and final status (each candidate counted once per point)."""
    import pandas as pd

    order = [Stage.SPACE, Stage.VERIFY, Stage.SCREEN, Stage.FINAL]
    latest: dict[tuple, Measurement] = {}
    for row in rows:
        key = (row.candidate_key, row.point)
        if key not in latest or order.index(row.stage) > order.index(latest[key].stage):
            latest[key] = row
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in latest.values():
        counts[row.backend][row.status.value] += 1
    columns = [s.value for s in Status]
    frame = pd.DataFrame.from_dict({b: dict(c) for b, c in counts.items()}, orient="index", columns=columns)
    return frame.fillna(0).astype(int)


def shape_line(shape: LayerShape, choices: dict[int, Choice]) -> str:
    """One line after a shape finishes: how many points got a choice, from how many distinct configs."""
    if not choices:
        return f"N={shape.n} K={shape.k} ({shape.name}): no candidate passed"
    backends = collections.Counter(c.backend for c in choices.values())
    spread = ", ".join(f"{b} x{n}" for b, n in backends.most_common())
    return (f"N={shape.n} K={shape.k} ({shape.name}): {len(choices)} M values, "
            f"{distinct_configs(choices)} distinct configs ({spread})")


def to_dataframe(rows: Iterable[Measurement]):
    """A pandas DataFrame, one row per measurement.

    Columns: backend, config (short params string), params (canonical JSON),
    n, k, m, stage, status, message, us, tflops, rel_error, spread, reps,
    predicted_us.
    """
    import pandas as pd

    records = []
    for row in rows:
        record = row.to_json()
        record["params"] = row.params_key
        record["config"] = short_params(row.params, row.backend)
        records.append(record)
    columns = ["backend", "config", "params", "n", "k", "m", "stage", "status", "message", "us", "tflops",
               "rel_error", "spread", "reps", "predicted_us"]
    return pd.DataFrame.from_records(records, columns=columns)


def config_entries_table(configs: Iterable[ConfigFile]):
    """DataFrame, one row per tuned entry of the config files: device, N, K, M, backend, config, us,
    TFLOPS, engine_triton, source (the entry's provenance kind); sorted by device, N, K and M.

    ``us`` and ``TFLOPS`` are text for people: ``-`` where an entry has no time (predicted or imported:
    its source says which), never NaN or None."""
    import pandas as pd

    records = []
    for config in configs:
        for m, entry in config.entries.items():
            tflops = 2 * m * config.n * config.k / (entry.us * 1e-6) / 1e12 if entry.us else None
            records.append({
                "device": config.device_name, "N": config.n, "K": config.k, "M": m, "backend": entry.backend,
                "config": short_params(entry.params, entry.backend),
                "us": f"{entry.us:.2f}" if entry.us else "-",
                "TFLOPS": f"{tflops:.1f}" if tflops else "-",
                "engine_triton": short_params(entry.engine_triton) if entry.engine_triton else "",
                "source": config.provenance_of(m).kind,
            })
    if not records:
        return pd.DataFrame()
    return pd.DataFrame.from_records(records).sort_values(["device", "N", "K", "M"])
