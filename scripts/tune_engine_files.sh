#!/usr/bin/env bash
# Engine config files for the H200, measured in each engine's own block-FP8 Triton kernel, compared with the
# files the engine ships (vLLM 0.33.0, SGLang 0.5.23; carried under engine_configs/baselines/).
#
#   scripts/tune_engine_files.sh [OUT [vllm] [sglang]]
#
# On one H200, with the project on PYTHONPATH (set here) and torch + triton installed (no gemm install
# needed). Per engine it runs two engine sweeps, each with the engine's shipped files as --baseline:
#   1. the DeepSeek-V3 TP8 preset (9 shapes), M 1..4096 plus 8192;
#   2. the TP1 and TP4 shapes not in TP8 (13 more), the same M;
# then makes the files again from both logs with `gemm select --baseline` (the audit path), exports them
# and writes the comparison:
#   OUT/<engine>/logs/*.jsonl(.gz)     results logs (every candidate, verified and timed)
#   OUT/<engine>/NVIDIA_H200/          native files the sweeps wrote (backend vllm_triton / sglang_triton)
#   OUT/<engine>/reports/              each sweep's own comparison, named after its log
#   OUT/<engine>/selected/             the same files, made again from the logs
#   OUT/files/<engine>/                the engine files (only entries measured in the engine's kernel)
#   OUT/reports/NVIDIA_H200-<engine>-vs-<baseline>.{csv,md}   ours/baseline per point and per M range
#   OUT/SUMMARY.md                     the per-range tables and each sweep's wall time
#   OUT/engine_files.tgz               all of the above but the native files
#
# Each invocation sweeps for at most TIME_LIMIT seconds (default 540) and exits 3 when that was not enough:
# run the same command again and it continues where it stopped (finished sweeps are not redone); what it
# has so far is also packed into OUT/engine_files-partial.tgz (unpack it into OUT to resume elsewhere).
# SEED_LOGS=DIR starts a sweep whose log OUT does not hold yet from DIR/<device>-<engine>-<sweep>.jsonl.gz
# (e.g. engine_configs/logs, where finished and unfinished sweeps are shipped): the sweep resumes from its
# rows, so a fresh machine redoes nothing that was measured.
# SWEEPS (default "tp8 tp1-tp4") limits which sweeps this invocation may run, e.g. SWEEPS=tp8 for the TP8
# files first: it then stops (exit 3, packed) where the next sweep would start. OUT
# defaults to bench_out/engine_files (ignored by git), so it travels with the working tree.
#
# Estimated on the H200 from earlier sweeps' 25-75 ms per candidate and point (verify, screen, final):
# TP8 about 11.4k candidates x points, 6-7 minutes per engine; the 13 other shapes about 16.5k, 12-15
# minutes (five of them are large); so about 20 minutes per engine, 40 for both.
#
# A dry run on a CPU through the Triton interpreter (tiny shapes, a baseline folder for that device):
#   DEVICE=CPU_interpreter BASELINE_ROOT=/tmp/base TP8_ARGS="--shape 128,256" EXTRA_ARGS="--shape 256,128" \
#   M_ARGS="--m 1,16" TUNE_EXTRA_ARGS="--interpret --workers 0 --budget 1" scripts/tune_engine_files.sh /tmp/out
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$REPO/bench_out/engine_files}
[ $# -gt 0 ] && shift
ENGINES=${*:-vllm sglang}
PY=${PYTHON:-python3}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
LIMIT=${TIME_LIMIT:-540}
SWEEPS=${SWEEPS:-tp8 tp1-tp4}
DEVICE=${DEVICE:-NVIDIA_H200}
BASELINE_ROOT=${BASELINE_ROOT:-$REPO/engine_configs/baselines}
TP8_ARGS=${TP8_ARGS:---preset deepseek-v3-tp8}
M_ARGS=${M_ARGS:---m-extra 8192}
TUNE_EXTRA_ARGS=${TUNE_EXTRA_ARGS:-}
START=$(date +%s)
if [ -n "${SEED_LOGS:-}" ] && [ ! -d "$SEED_LOGS" ]; then
    echo "tune_engine_files: SEED_LOGS=$SEED_LOGS is not a directory (expected a folder of <device>-<engine>-<sweep>.jsonl.gz logs)" >&2
    exit 2
fi
mkdir -p "$OUT/reports" "$OUT/files"
case " $TUNE_EXTRA_ARGS " in
    *" --interpret "*) export TRITON_INTERPRET=1 ;;
esac

baseline_of() {
    case $1 in
        vllm) echo "$BASELINE_ROOT/vllm-0.33.0" ;;
        sglang) echo "$BASELINE_ROOT/sglang-0.5.23" ;;
        *) echo "unknown engine $1 (expected vllm or sglang)" >&2; exit 2 ;;
    esac
}

# The TP1 and TP4 shapes that TP8 does not have, as --shape options.
if [ -z "${EXTRA_ARGS:-}" ]; then
    EXTRA_ARGS=$($PY -c '
from gemm.tuner.presets import preset_shapes
tp8 = {(s.n, s.k) for s in preset_shapes("deepseek-v3-tp8")}
extra = []
for preset in ("deepseek-v3-tp1", "deepseek-v3-tp4"):
    for s in preset_shapes(preset):
        if (s.n, s.k) not in tp8 and (s.n, s.k) not in extra:
            extra.append((s.n, s.k))
print(" ".join(f"--shape {n},{k}" for n, k in extra))
') || exit 1
fi

# stop_for_now: what the finished and unfinished sweeps have so far (logs, native files, each sweep's report)
# in OUT/engine_files-partial.tgz, one file to carry elsewhere and unpack into OUT there; then exit 3.
stop_for_now() {
    local parts=()
    for engine in $ENGINES; do
        [ -d "$OUT/$engine" ] && parts+=("$engine")
    done
    [ ${#parts[@]} -gt 0 ] && tar -czf "$OUT/engine_files-partial.tgz" -C "$OUT" "${parts[@]}"
    exit 3
}

# sweep ENGINE NAME OPTIONS...: one resumable engine sweep; exits 3 when out of time.
sweep() {
    local engine=$1 name=$2
    shift 2
    local dir="$OUT/$engine" log="$OUT/$engine/logs/$DEVICE-$engine-$name.jsonl"
    [ -f "$dir/.done-$name" ] && return 0
    case " $SWEEPS " in
        *" $name "*) ;;
        *) echo "tune_engine_files: $engine $name is not among SWEEPS ($SWEEPS); run again to do it" >&2
           stop_for_now ;;
    esac
    local left=$((LIMIT - ($(date +%s) - START)))
    if [ "$left" -lt 60 ]; then
        echo "tune_engine_files: time limit reached before $engine $name; run the same command again" >&2
        stop_for_now
    fi
    mkdir -p "$dir/logs"
    local seed="${SEED_LOGS:-}/$(basename "$log").gz"
    if [ -n "${SEED_LOGS:-}" ] && [ ! -f "$log" ] && [ -f "$seed" ]; then
        gzip -dc "$seed" > "$log.tmp" && mv "$log.tmp" "$log" || { echo "tune_engine_files: cannot unpack $seed" >&2; exit 1; }
        echo "tune_engine_files: $engine $name continues from $seed" >&2
    fi
    echo "tune_engine_files: $engine $name (up to $left s)" >&2
    local began
    began=$(date +%s)
    # shellcheck disable=SC2086  # M_ARGS and TUNE_EXTRA_ARGS are lists of options
    $PY -m gemm.cli tune --engine "$engine" --baseline "$(baseline_of "$engine")" "$@" $M_ARGS $TUNE_EXTRA_ARGS \
        --out "$dir" --log "$log" --resume --time-limit "$left" --no-progress 2>&1 | tee -a "$dir/tune-$name.txt"
    local code=${PIPESTATUS[0]}
    echo "$engine $name: $(( $(date +%s) - began )) s (exit $code)" >> "$dir/wall_times.txt"
    if [ "$code" -eq 3 ]; then
        echo "tune_engine_files: $engine $name stopped at the time limit; run the same command again" >&2
        stop_for_now
    fi
    [ "$code" -eq 0 ] || exit "$code"
    touch "$dir/.done-$name"
}

for engine in $ENGINES; do
    baseline_of "$engine" > /dev/null || exit 2
    # shellcheck disable=SC2086  # lists of options
    sweep "$engine" tp8 $TP8_ARGS
    # shellcheck disable=SC2086
    sweep "$engine" tp1-tp4 $EXTRA_ARGS
done

summary="$OUT/SUMMARY.md"
echo "# Engine files for the $DEVICE, measured in the engines' kernels" > "$summary"
logs=()
for engine in $ENGINES; do
    dir="$OUT/$engine"
    $PY -m gemm.cli select "$dir/logs/$DEVICE-$engine-tp8.jsonl" "$dir/logs/$DEVICE-$engine-tp1-tp4.jsonl" \
        --baseline "$(baseline_of "$engine")" --out "$dir/selected" --report "$OUT/reports" || exit 1
    $PY -m gemm.cli export --format "$engine" "$dir/selected/$DEVICE" --out "$OUT/files/$engine" || exit 1
    report="$OUT/reports/$DEVICE-$engine-vs-$(basename "$(baseline_of "$engine")").md"
    {
        echo
        echo "## $engine against $(basename "$(baseline_of "$engine")")"
        echo
        sed -n '/^| M range/,/^$/p' "$report"
        echo "Sweep wall times (each invocation):"
        echo
        sed 's/^/    /' "$dir/wall_times.txt"
    } >> "$summary"
    for log in "$dir"/logs/*.jsonl; do
        gzip -kf "$log"
        logs+=("${log#"$OUT"/}.gz")
    done
done
tar -czf "$OUT/engine_files.tgz" -C "$OUT" SUMMARY.md files reports "${logs[@]}"
echo "tune_engine_files: done; files in $OUT/files, comparison in $OUT/reports, summary $summary," \
     "all of it in $OUT/engine_files.tgz" >&2
