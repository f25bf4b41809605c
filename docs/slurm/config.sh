# Shared settings for the Slurm examples. Edit, then `source` (the scripts do it themselves).
# Every path must be on a file system all nodes see.

# The SD v1.4 model (diffusers folder) and where everything goes.
export SEMI=${SEMI:-semi}                       # the semi binary (on PATH or a full path)
export MODEL=${MODEL:-$HOME/models/stable-diffusion-v1-4}
export WORK=${WORK:-$HOME/semi-eval}            # all outputs below here
export COCO=${COCO:-$HOME/coco/annotations}     # instances_val2017.json, captions_val2017.json

export LAYOUTS=$WORK/layouts.jsonl              # the 6000 samples (semi eval samples)
export PAIRS=$WORK/pairs.txt                    # category pairs of those samples
export IMAGES=$WORK/images.json                 # COCO image list for external detectors
export GT=$WORK/gt.json                         # the layouts' boxes as COCO ground truth
export STORE=$WORK/tickets                      # the merged ticket store
export STORE_SHARDS=$WORK/tickets-shards        # one store per collection shard
export OUT=$WORK/generated                      # <OUT>/<method>/<id>.png
export REPORT=$WORK/report                      # table.md, summary.csv, chart.png, ...
export RESULTS=$WORK/detections                 # <RESULTS>/<method>.json, COCO results
# YOLOv8 weights for eval-detect (tools/convert_yolo.py's safetensors); empty: bring your own
# detector's results files to $RESULTS and submit.sh skips the detection step.
export YOLO=${YOLO:-}

export SEED=${SEED:-0}                          # base seed: layout seeds derive from it
export N_NOISE=${N_NOISE:-100}                  # N of the paper (Table 2 default)
export COLLECT_SHARDS=${COLLECT_SHARDS:-8}      # array size of the ticket collection
export GENERATE_SHARDS=${GENERATE_SHARDS:-16}   # array size per method of the generation

# Paper Table 1 methods. A name is an init (sd = gaussian, semi, swap, semi+swap) and at most
# one guidance (paint, soft) joined by "+": `semi eval generate --method NAME` parses it, and the
# canonical name (init first) is the output folder, <OUT>/<method>/.
export METHODS=${METHODS:-"sd paint soft swap semi semi+soft semi+swap semi+swap+soft"}

# Sampler settings shared by every method (the paper: DDIM 50 steps, guidance 7.5).
export STEPS=${STEPS:-50}
export GUIDANCE=${GUIDANCE:-7.5}

# Whether a method needs the ticket store.
method_uses_tickets() {
    case "$1" in semi*) return 0 ;; *) return 1 ;; esac
}
