#!/usr/bin/env bash
# Step 0 (login node, minutes, no GPU): pick the COCO samples, their category pairs and the
# image list for external detectors.
set -euo pipefail
source "$(dirname "$0")/config.sh"
mkdir -p "$WORK"

"$SEMI" eval samples \
    --instances "$COCO/instances_val2017.json" \
    --captions "$COCO/captions_val2017.json" \
    --one 3000 --two 3000 --size 512 --seed "$SEED" \
    --out "$LAYOUTS" \
    --pairs-out "$PAIRS" \
    --images-out "$IMAGES" \
    --gt-out "$GT"
