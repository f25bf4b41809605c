#!/usr/bin/env bash
# The measurement of docs/toyworld-latent.md: does SemI carry more than colour?
#
# 500 two-object layouts of the latent toy world, the same noise per layout for every row
# (the layouts' seeds), scored by shape (`--detector toy-shapes`). Rows: Gaussian noise, SemI,
# SemI + recalibration, the colour-matched, category-swapped and any-object controls, Swap and
# SemI+Soft. Then one standard error on each figure and the paired differences
# (crates/cli/examples/paired.rs), and the hypothesis test at every cross-attention layer.
#
#   tools/toyworld-latent-measure.sh [OUT] [MODEL] [N]
#
# OUT defaults to /tmp/latent-measure, MODEL to the built-in `toy-latent`, N (layouts) to 500;
# HYP_N (hypothesis scenes) to 200. LAYERS probes other layers than the model's default
# (`--layers` of `semi tickets collect`); ROWS=controls makes only Gaussian noise, SemI and the
# three controls (and skips the hypothesis test).
# Every `semi eval run` is resumable: run the script again and finished images are skipped (a
# larger N extends the same layouts: layout i depends only on the seed and i).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/latent-measure}
MODEL=${2:-toy-latent}
N=${3:-500}
cargo build --release -q -p semi-cli --bin semi --example paired --example hypothesis
SEMI=target/release/semi
mkdir -p "$OUT"
$SEMI eval toy-layouts --world latent --n "$N" --objects 2 --seed 7 --out "$OUT/layouts.jsonl"
# One ticket store for every row: all 15 pairs of the six shapes, 100 noise images each.
LAYER_FLAGS=()
if [ -n "${LAYERS:-}" ]; then LAYER_FLAGS=(--layers "$LAYERS"); fi
$SEMI tickets collect --model "$MODEL" --store "$OUT/store" --n 100 "${LAYER_FLAGS[@]}" \
    --categories circle,square,triangle,ring,diamond,cross >"$OUT/store.log" 2>&1 ||
    { tail -5 "$OUT/store.log"; exit 1; }
# The settings of every row; the rows differ only in method, control and recalibration.
COMMON=(--layouts "$OUT/layouts.jsonl" --model "$MODEL" --store "$OUT/store" --steps 10
        --guidance 2 --t-obj 0.7 --t-bg 0.3 "${LAYER_FLAGS[@]}")
run() { # OUT_SUBDIR METHODS [FLAGS...]: two one-thread processes per method, then the report
    local dir=$1 methods=$2
    shift 2
    for m in ${methods//,/ }; do
        for i in 0 1; do
            RAYON_NUM_THREADS=1 $SEMI eval generate "${COMMON[@]}" --out "$OUT/$dir" --method "$m" \
                --shard "$i/2" "$@" >"$OUT/$dir.$m.$i.log" 2>&1 &
        done
        wait -n && wait -n || { tail -5 "$OUT/$dir.$m".*.log; exit 1; }
    done
    $SEMI eval run "${COMMON[@]}" --out "$OUT/$dir" --methods "$methods" --detector toy-shapes "$@" \
        >"$OUT/$dir.log" 2>&1 || { tail -5 "$OUT/$dir.log"; exit 1; }
    echo "done: $dir ($methods $*)"
}
o() { echo "$OUT/$1/report/objects.csv:$2"; }
if [ "${ROWS:-all}" = controls ]; then
    run base sd,semi --recalibrate false
else
    run base sd,semi,swap,semi+soft --recalibrate false
    run recalibrated semi --recalibrate true
fi
run colour-matched semi --recalibrate false --control colour-matched
run category-swapped semi --recalibrate false --control category-swapped
run any-object semi --recalibrate false --control any-object
ROW_ARGS=(--row "Gaussian noise=$(o base sd)" --row "SemI=$(o base semi)")
if [ "${ROWS:-all}" != controls ]; then
    ROW_ARGS+=(--row "SemI + recalibration=$(o recalibrated semi)")
fi
ROW_ARGS+=(--row "colour-matched control=$(o colour-matched semi)"
           --row "category-swapped control=$(o category-swapped semi)"
           --row "any-object control=$(o any-object semi)")
if [ "${ROWS:-all}" != controls ]; then
    ROW_ARGS+=(--row "Swap=$(o base swap)" --row "SemI+Soft=$(o base semi+soft)")
fi
target/release/examples/paired "${ROW_ARGS[@]}" \
    --against "Gaussian noise" --against "colour-matched control" --against SemI | tee "$OUT/table.md"
[ "${ROWS:-all}" = controls ] && exit 0
# The hypothesis test runs once per OUT (delete hypothesis.md to run it again).
[ -f "$OUT/hypothesis.md" ] && { echo "kept: $OUT/hypothesis.md"; exit 0; }
HYP_MODEL=$MODEL
if [ "$MODEL" = toy-latent ]; then HYP_MODEL=models/toy-latent; fi
target/release/examples/hypothesis --model "$HYP_MODEL" --world latent --each-layer --n "${HYP_N:-200}" \
    --out "$OUT/hypothesis.json" | tee "$OUT/hypothesis.md"
