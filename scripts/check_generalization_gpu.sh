#!/usr/bin/env bash
# Shapes of other block-FP8 models, outside every preset (scripts/outside_shapes.py), on one Hopper GPU: does
# the pruned search still find what an exhaustive one finds, and how close does the untuned op come to the
# configs that search wrote?
#
#   scripts/check_generalization_gpu.sh [pruned|exhaustive|compare|untuned|all]     (default: all)
#
#   pruned      gemm tune --shape ... --m $GEN_M (the default pruning) into $STATE/pruned_cfg, log
#               $STATE/pruned.jsonl. About 2 minutes on an H200 (CUTLASS kernels prebuilt first).
#   exhaustive  the same points with --exhaustive (every verified candidate timed carefully), log
#               $STATE/exhaustive.jsonl. About 2-3 minutes.
#   compare     gemm compare of the two logs (pruned pick vs exhaustive best, times of the exhaustive run:
#               target >= 97% at every point) and scripts/check_pruning.py replaying each --prune level on
#               the exhaustive log. Seconds, no GPU needed.
#   untuned     scripts/check_untuned_gpu.py at the same points, the tuned op reading $STATE/pruned_cfg:
#               the untuned op (the cost model's choice) against the tuned op and cuBLAS per-tensor. About
#               1 minute.
#
# Each stage is one command of at most 10 minutes; pruned and exhaustive stop at TUNE_TIME_LIMIT seconds
# (default 480) with exit 3 and resume when called again on the same machine. Results go to $OUT
# (default bench_out/generalization): pruned.txt, exhaustive.txt, pruned_vs_exhaustive.txt,
# pruning_levels.txt, untuned/summary.md and untuned/untuned.csv.
set -uo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
OUT="${OUT:-bench_out/generalization}"
STATE="${GEN_STATE:-bench_out/generalization_state}"
LIMIT="${TUNE_TIME_LIMIT:-480}"
GEN_M="${GEN_M:-1,64,512,4096}"
STAGE="${1:-all}"
mkdir -p "$OUT" "$STATE"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

gemm() { "$PY" -m gemm.cli "$@"; }
now() { date +%s; }
read -r -a SHAPES <<< "$("$PY" scripts/outside_shapes.py --args)" || exit 1

sweep() {  # sweep NAME [extra gemm tune options...]
    local name="$1" log resume=() t0 rc
    shift
    log="$OUT/$name.txt"
    [ -f "$STATE/$name.jsonl" ] && resume=(--resume)
    t0=$(now)
    gemm tune "${SHAPES[@]}" --m "$GEN_M" --out "$STATE/${name}_cfg" --log "$STATE/$name.jsonl" "${resume[@]}" \
        --time-limit "$LIMIT" --no-progress "$@" 2>&1 | tail -n 60 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    echo "== $name sweep: exit $rc in $(( $(now) - t0 )) s" | tee -a "$log"
    if [ "$rc" = 3 ]; then echo "== not finished: run '$0 $name' again to resume" | tee -a "$log"; fi
}

compare() {
    gemm compare "$STATE/pruned.jsonl" "$STATE/exhaustive.jsonl" 2>&1 | tee "$OUT/pruned_vs_exhaustive.txt"
    "$PY" scripts/check_pruning.py "$STATE/exhaustive.jsonl" --out "$OUT/pruning_levels.csv" 2>&1 \
        | tee "$OUT/pruning_levels.txt"
}

untuned() {
    GEMM_CONFIG_DIR="$STATE/pruned_cfg" "$PY" scripts/check_untuned_gpu.py "${SHAPES[@]}" --m "$GEN_M" \
        --out "$OUT/untuned" 2>&1 | tail -n 30
}

case "$STAGE" in
    pruned) sweep pruned ;;
    exhaustive) sweep exhaustive --exhaustive ;;
    compare) compare ;;
    untuned) untuned ;;
    all) sweep pruned; sweep exhaustive --exhaustive; compare; untuned ;;
    *) echo "usage: $0 [pruned|exhaustive|compare|untuned|all]" >&2; exit 2 ;;
esac
