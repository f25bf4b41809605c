#!/usr/bin/env bash
# Sweep the strengths of Paint and Soft on the embedded toy model (docs/strengths.md).
#
#   tools/sweep_strengths.sh                                      # defaults below
#   N=100 CONFIGS="paint:0.1,0.5,2 soft:0.5 semi+soft:0.5" OUT=/tmp/semi-sweep tools/sweep_strengths.sh
#
# Random two-object toy layouts (toy-layouts seed 1), DDIM $STEPS steps at guidance $GUIDANCE
# (the toy model card's setting), base seed 0 for every run, so every configuration starts
# from the same noise; the exact toy detector scores every image. Each `method:weight` of
# $CONFIGS (default: every method of $METHODS at every weight of $WEIGHTS) is one `semi eval
# run` into $OUT/<method>-w<weight> with --paint-weight and --soft-weight set to the weight (a
# method uses only its own); the $REFERENCE methods (no guidance) run once into
# $OUT/reference. Resumable: rerunning skips finished images. The table (mean IoU overall and
# by size, success rate) is printed and written to $OUT/sweep.md. SemI methods use the cache
# ticket store under $SEMI_CACHE (N = 100 noise images, every pair of the six categories).
set -euo pipefail
SEMI=${SEMI:-target/release/semi}
OUT=${OUT:-/tmp/semi-sweep}
N=${N:-200}
STEPS=${STEPS:-25}
GUIDANCE=${GUIDANCE:-2}
WEIGHTS=${WEIGHTS:-"0.05 0.2 0.5 1 2"}
METHODS=${METHODS:-"paint soft semi+paint semi+soft"}
REFERENCE=${REFERENCE:-"sd,semi"}
if [ -z "${CONFIGS:-}" ]; then
    CONFIGS=""
    for m in $METHODS; do CONFIGS="$CONFIGS $m:${WEIGHTS// /,}"; done
fi
COMMON=(--model toy --steps "$STEPS" --guidance "$GUIDANCE" --seed 0 --detector toy --sheet 8)

mkdir -p "$OUT"
"$SEMI" eval toy-layouts --n "$N" --objects 2 --seed 1 --out "$OUT/layouts.jsonl"
"$SEMI" eval run --layouts "$OUT/layouts.jsonl" --methods "$REFERENCE" --out "$OUT/reference" \
    "${COMMON[@]}" >/dev/null
echo "reference ($REFERENCE) done" >&2
for c in $CONFIGS; do
    m=${c%%:*}
    for w in $(echo "${c#*:}" | tr , ' '); do
        "$SEMI" eval run --layouts "$OUT/layouts.jsonl" --methods "$m" --out "$OUT/$m-w$w" \
            --paint-weight "$w" --soft-weight "$w" "${COMMON[@]}" >/dev/null
        echo "$m weight $w done" >&2
    done
done

# One row per (method, weight) from each run's summary.csv (subsets all, small, medium, large).
row='$2 == "all" { o = $3; iou = $5; suc = $6 }
     $2 == "small" { s = $5 } $2 == "medium" { md = $5 } $2 == "large" { l = $5 }
     END { printf "| %s | %s | %d | %.3f | %.3f | %.3f | %.3f | %.1f |\n", m, w, o, iou, s, md, l, 100 * suc }'
{
    echo "| method | weight | objects | IoU | IoU_s | IoU_m | IoU_l | R_suc % |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for r in ${REFERENCE//,/ }; do
        awk -F, -v r="$r" '$1 == r' "$OUT/reference/report/summary.csv" \
            | awk -F, -v m="$r" -v w="-" "$row"
    done
    for c in $CONFIGS; do
        m=${c%%:*}
        for w in $(echo "${c#*:}" | tr , ' '); do
            awk -F, -v m="$m" -v w="$w" "$row" "$OUT/$m-w$w/report/summary.csv"
        done
    done
} | tee "$OUT/sweep.md"
