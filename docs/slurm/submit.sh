#!/usr/bin/env bash
# The whole Table 1 run as one chain of Slurm jobs:
#   collect (array) -> merge tickets -> generate (one array per method) -> detect (YOLOv8, one
#   task per method, when $YOLO is set) -> merge + report.
# Run prepare.sh first. Methods without tickets (sd, paint, soft, swap) start at once.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/config.sh"
export SEMI_SLURM_DIR="$HERE"   # sbatch copies scripts away; config.sh is found through this

collect=$(sbatch --parsable --array=0-$((COLLECT_SHARDS - 1)) "$HERE/collect-tickets.sbatch")
merged=$(sbatch --parsable --dependency=afterok:"$collect" "$HERE/merge-tickets.sbatch")
echo "tickets: collect $collect, merge $merged"

generate=()
for METHOD in $METHODS; do
    dep=()
    if method_uses_tickets "$METHOD"; then
        dep=(--dependency=afterok:"$merged")
    fi
    id=$(sbatch --parsable ${dep[@]+"${dep[@]}"} --array=0-$((GENERATE_SHARDS - 1)) \
        --job-name="semi-gen-$METHOD" --export=ALL,METHOD="$METHOD" \
        "$HERE/eval-generate.sbatch")
    echo "generate $METHOD: $id"
    generate+=("$id")
done

deps=$(IFS=:; echo "${generate[*]}")
if [ -n "$YOLO" ]; then
    # eval-detect checks that every image is there only by reading them: merge first.
    n=$(echo $METHODS | wc -w)
    detect=$(sbatch --parsable --dependency=afterok:"$deps" --array=0-$((n - 1)) \
        "$HERE/eval-detect.sbatch")
    echo "detect: $detect"
    deps=$detect
fi
finish=$(sbatch --parsable --dependency=afterok:"$deps" "$HERE/eval-finish.sbatch")
echo "merge + report: $finish (report in $REPORT)"
