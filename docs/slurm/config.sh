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
export STORE=$WORK/tickets                      # the merged ticket store
export STORE_SHARDS=$WORK/tickets-shards        # one store per collection shard
export OUT=$WORK/generated                      # <OUT>/<method>/<id>.png
export REPORT=$WORK/report                      # table.md, summary.csv, chart.png, ...

export SEED=${SEED:-0}                          # base seed: layout seeds derive from it
export N_NOISE=${N_NOISE:-100}                  # N of the paper (Table 2 default)
export COLLECT_SHARDS=${COLLECT_SHARDS:-8}      # array size of the ticket collection
export GENERATE_SHARDS=${GENERATE_SHARDS:-16}   # array size per method of the generation

# Paper Table 1 methods. Names are directory names: letters, digits, . _ - +
export METHODS=${METHODS:-"sd paint soft swap semi semi+soft semi+swap semi+soft+swap"}

# Generation flags per method: initial noise and attention guidance.
method_flags() {
    case "$1" in
        sd)             echo "--init gaussian --guidance none" ;;
        paint)          echo "--init gaussian --guidance paint" ;;
        soft)           echo "--init gaussian --guidance soft" ;;
        swap)           echo "--init swap --guidance none" ;;
        semi)           echo "--init semi --guidance none" ;;
        semi+soft)      echo "--init semi --guidance soft" ;;
        semi+swap)      echo "--init semi+swap --guidance none" ;;
        semi+soft+swap) echo "--init semi+swap --guidance soft" ;;
        *) echo "unknown method $1" >&2; return 1 ;;
    esac
}

# Whether a method needs the ticket store.
method_uses_tickets() {
    case "$1" in semi*) return 0 ;; *) return 1 ;; esac
}
