#!/usr/bin/env bash
# The tuner on a real Hopper GPU: a short smoke sweep, the full default preset with its wall time,
# and an exhaustive search at sampled points to check the pruned search against it.
#
#   scripts/tune_smoke_gpu.sh [smoke|full|exhaustive|report|all]     (default: all)
#
#   smoke       gemm tune --shape 7168,2048 --m 1,64,1024 --out $OUT/cfg (all backends), then validate,
#               show, export, and a check that the op dispatches to the tuned entries with right results.
#   full        the default preset (DeepSeek-V3 TP8 x vLLM's M grid, all backends). Each call stops after
#               TUNE_TIME_LIMIT seconds (default 480, to fit a 10-minute command limit) with exit 3; call
#               the same stage again (on the same machine) and it resumes. Every call's wall time is
#               appended to $TUNE_STATE/full_wall.txt and the total printed.
#   exhaustive  gemm tune --exhaustive at EXH_SHAPES x EXH_M (default 3 shapes x 4 M), then
#               gemm compare: the pruned sweep's pick at each point must reach >= 97% of the best.
#   report      plots (TFLOPS vs M, who wins where) and a tarball of configs and logs.
#
# Output files (at most 8, for a tool that fetches few): $OUT/cfg/<device>/<config>.json, smoke.txt,
# full.txt, exhaustive.txt, tflops.png, winners.png, tune_results.tgz. Sweep state (logs, configs)
# lives in $TUNE_STATE (default bench_out/tune_state, ignored by git) so later calls can resume.
# CUTLASS headers: from an installed nvidia-cutlass, else from .whl/nvidia_cutlass-*.whl if present.
#
# Dry run of the same steps on a CPU through the Triton interpreter (tiny shapes):
#   TUNE_EXTRA_ARGS=--interpret SMOKE_SHAPE=256,256 SMOKE_M=1,16 FULL_ARGS="--shape 256,256 --m 1,16" \
#   EXH_SHAPES=256,256 EXH_M=1,16 scripts/tune_smoke_gpu.sh all
set -uo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
OUT="${OUT:-bench_out/tune_smoke_out}"
STATE="${TUNE_STATE:-bench_out/tune_state}"
LIMIT="${TUNE_TIME_LIMIT:-480}"
SMOKE_SHAPE="${SMOKE_SHAPE:-7168,2048}"
SMOKE_M="${SMOKE_M:-1,64,1024}"
FULL_ARGS="${FULL_ARGS:-}"              # empty: the default preset and M grid
EXH_SHAPES="${EXH_SHAPES:-7168,2048 4608,7168 576,7168}"
EXH_M="${EXH_M:-1,64,512,4096}"
TUNE_EXTRA_ARGS="${TUNE_EXTRA_ARGS:-}"  # e.g. --interpret for a CPU dry run
STAGE="${1:-all}"
mkdir -p "$OUT" "$STATE"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
case " $TUNE_EXTRA_ARGS " in
    *" --interpret "*) DEVICE=cpu; export TRITON_INTERPRET=1 ;;
    *) DEVICE=cuda; unset TRITON_INTERPRET ;;
esac

gemm() { "$PY" -m gemm.cli "$@"; }
# shellcheck disable=SC2086  # TUNE_EXTRA_ARGS is a list of words
tune() { "$PY" -m gemm.cli tune $TUNE_EXTRA_ARGS "$@"; }
now() { date +%s; }

setup() {
    if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("cutlass_library") is None)'; then
        if ls .whl/nvidia_cutlass-*.whl >/dev/null 2>&1; then
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gemm-site \
                .whl/nvidia_cutlass-*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/gemm-site"
        else
            echo "note: no nvidia-cutlass here; the CUTLASS backend will be skipped"
        fi
    fi
    nvidia-smi -L 2>/dev/null || true
    "$PY" -c 'import sys, torch, triton
print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")'
    nvcc --version 2>/dev/null | tail -n 1 || true
}

op_check() {
    # The op, pointed at the smoke configs, must dispatch to the tuned entries and compute right results.
    GEMM_CONFIG_DIR="$OUT/cfg" SMOKE_SHAPE="$SMOKE_SHAPE" SMOKE_M="$SMOKE_M" DEVICE="$DEVICE" "$PY" - <<'PYEOF'
import os

import gemm
from gemm import dispatch
from gemm.configs import find_config
from gemm.problem import GemmProblem
from gemm.quant import random_problem_inputs
from gemm.reference import reference_matmul, relative_error

device = os.environ["DEVICE"]
index = 0 if device == "cuda" else None
n, k = (int(v) for v in os.environ["SMOKE_SHAPE"].split(","))
tuned = [int(v) for v in os.environ["SMOKE_M"].split(",")]
arch = dispatch.arch_for_device(device, index)
config = find_config(arch.config_device_name, n, k)
assert config is not None, f"no tuned config for {n}x{k} on {arch.config_device_name}"
failures = 0
for m in tuned + [max(tuned) + 3]:  # the tuned M values, and one more that takes the nearest entry
    backend, params = dispatch.choose(GemmProblem(m, n, k), device, index)
    a, b, sa, sb = random_problem_inputs(m, n, k, device=device, seed=m)
    err = relative_error(gemm.w8a8_block_fp8_matmul(a, b, sa, sb), reference_matmul(a, b, sa, sb))
    entry = config.entries.get(m)
    same = entry is None or (backend.name == entry.backend and params.to_dict() == entry.params)
    ok = same and err <= 1e-2
    failures += not ok
    print(f"op M={m}: {backend.name} {params.short()}; tuned entry {'matches' if entry and same else '-'}; "
          f"rel error {err:.2e} {'ok' if ok else 'FAILED'}")
print("op check:", "ok" if not failures else f"{failures} failures")
PYEOF
}

smoke() {
    local log="$OUT/smoke.txt" t0 rc
    rm -rf "$OUT/cfg"
    t0=$(now)
    tune --shape "$SMOKE_SHAPE" --m "$SMOKE_M" --out "$OUT/cfg" --log "$STATE/smoke.jsonl" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    echo "== smoke tune: exit $rc, wall $(( $(now) - t0 )) s" | tee -a "$log"
    gemm validate "$OUT/cfg" 2>&1 | tee -a "$log"
    gemm show "$OUT/cfg" 2>&1 | tee -a "$log"
    gemm export --format vllm "$OUT/cfg" --out "$STATE/smoke_vllm" --stand-ins --force 2>&1 | tee -a "$log"
    op_check 2>&1 | tee -a "$log"
}

full() {
    local log="$OUT/full.txt" resume=() t0 rc dt
    [ -f "$STATE/full.jsonl" ] && resume=(--resume)
    t0=$(now)
    # shellcheck disable=SC2086  # FULL_ARGS is a list of words
    tune $FULL_ARGS --out "$STATE/full_cfg" --log "$STATE/full.jsonl" "${resume[@]}" --time-limit "$LIMIT" 2>&1 \
        | tee -a "$log"
    rc=${PIPESTATUS[0]}
    dt=$(( $(now) - t0 ))
    echo "$dt $rc" >> "$STATE/full_wall.txt"
    cp "$log" "$STATE/full_$(date +%H%M%S).txt"
    echo "== full sweep call: exit $rc in $dt s; calls so far (s exit): $(tr '\n' ' ' < "$STATE/full_wall.txt");" \
         "total $(awk '{s += $1} END {print s}' "$STATE/full_wall.txt") s" | tee -a "$log"
    if [ "$rc" = 3 ]; then echo "== not finished: run '$0 full' again to resume" | tee -a "$log"; fi
}

exhaustive() {
    local log="$OUT/exhaustive.txt" resume=() shapes=() s t0 rc pruned
    for s in $EXH_SHAPES; do shapes+=(--shape "$s"); done
    [ -f "$STATE/exhaustive.jsonl" ] && resume=(--resume)
    t0=$(now)
    tune --exhaustive "${shapes[@]}" --m "$EXH_M" --out "$STATE/exh_cfg" --log "$STATE/exhaustive.jsonl" \
        "${resume[@]}" --time-limit "$LIMIT" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    echo "== exhaustive sweep: exit $rc in $(( $(now) - t0 )) s" | tee -a "$log"
    if [ "$rc" = 3 ]; then echo "== not finished: run '$0 exhaustive' again to resume" | tee -a "$log"; return 0; fi
    pruned="$STATE/full.jsonl"
    if [ ! -f "$pruned" ]; then  # no full sweep on this machine: prune-search the same points instead
        pruned="$STATE/pruned_sample.jsonl"
        tune "${shapes[@]}" --m "$EXH_M" --out "$STATE/pruned_cfg" --log "$pruned" --no-progress 2>&1 \
            | tail -n 40 | tee -a "$log"
    fi
    echo "== pruned picks ($pruned) vs the exhaustive best, times from the exhaustive run" | tee -a "$log"
    gemm compare "$pruned" "$STATE/exhaustive.jsonl" 2>&1 | tee -a "$log"
}

report() {
    local source=""
    for f in full smoke; do
        if [ -f "$STATE/$f.jsonl" ]; then source="$STATE/$f.jsonl"; break; fi
    done
    if [ -n "$source" ]; then gemm plot "$source" --out "$OUT" || true; fi
    if [ -d "$STATE/full_cfg" ]; then
        { gemm show "$STATE/full_cfg"; gemm validate --quiet "$STATE/full_cfg"; } > "$STATE/full_configs.txt" 2>&1
    fi
    tar czf "$OUT/tune_results.tgz" -C "$STATE" . && echo "== wrote $OUT/tune_results.tgz"
}

setup
case "$STAGE" in
    smoke) smoke ;;
    full) full ;;
    exhaustive) exhaustive ;;
    report) report ;;
    all) smoke; full; exhaustive; report ;;
    *) echo "usage: $0 [smoke|full|exhaustive|report|all]" >&2; exit 2 ;;
esac
