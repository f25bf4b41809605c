#!/usr/bin/env bash
# Sweep the strengths of Paint and Soft on the embedded toy model (docs/strengths.md).
#
#   tools/sweep_strengths.sh                      # defaults below
#   N=200 WEIGHTS="0.05 0.2 0.5 1 2" OUT=/tmp/semi-sweep tools/sweep_strengths.sh
#
# Random two-object toy layouts (seed 1), DDIM $STEPS steps at guidance $GUIDANCE (the toy model
# card's setting), base seed 0 for every run so each configuration starts from the same noise;
# the exact toy detector scores every image. Each weight is one `semi eval run` of the methods
# in $METHODS with --paint-weight and --soft-weight both set to it; `sd` and `semi` (no
# guidance) are run once as the references. Everything is resumable: rerunning skips finished
# images. The table (mean IoU and success rate over all objects, per method and weight) is
# printed and written to $OUT/sweep.md.
set -euo pipefail
SEMI=${SEMI:-target/release/semi}
OUT=${OUT:-/tmp/semi-sweep}
N=${N:-200}
STEPS=${STEPS:-25}
GUIDANCE=${GUIDANCE:-2}
WEIGHTS=${WEIGHTS:-"0.05 0.2 0.5 1 2"}
METHODS=${METHODS:-"paint,soft,semi+paint,semi+soft"}
COMMON=(--model toy --steps "$STEPS" --guidance "$GUIDANCE" --seed 0 --detector toy --sheet 8)

mkdir -p "$OUT"
"$SEMI" eval toy-layouts --n "$N" --objects 2 --seed 1 --out "$OUT/layouts.jsonl"
"$SEMI" eval run --layouts "$OUT/layouts.jsonl" --methods sd,semi --out "$OUT/reference" \
    "${COMMON[@]}" >/dev/null
for w in $WEIGHTS; do
    "$SEMI" eval run --layouts "$OUT/layouts.jsonl" --methods "$METHODS" --out "$OUT/w$w" \
        --paint-weight "$w" --soft-weight "$w" "${COMMON[@]}" >/dev/null
    echo "weight $w done" >&2
done

# One row per (method, weight) from each run's summary.csv (subset "all").
{
    echo "| method | weight | objects | mean IoU | success % |"
    echo "|---|---:|---:|---:|---:|"
    awk -F, '$2 == "all" { printf "| %s | - | %s | %.3f | %.1f |\n", $1, $3, $5, 100 * $6 }' \
        "$OUT/reference/report/summary.csv"
    for w in $WEIGHTS; do
        awk -F, -v w="$w" '$2 == "all" {
            printf "| %s | %s | %s | %.3f | %.1f |\n", $1, w, $3, $5, 100 * $6 }' \
            "$OUT/w$w/report/summary.csv"
    done
} | tee "$OUT/sweep.md"
