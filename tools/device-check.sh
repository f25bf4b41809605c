#!/usr/bin/env bash
# The one prepared check for a GPU machine (docs/performance.md, "GPU check"). Build and pack on
# the CPU machine first (no GPU needed there):
#
#     bash tools/device-pack.sh          # CUDA semi + the device parity test, packed, + wheels
#
# then run it from the repository root on the GPU machine, with target/device carried:
#
#     bash tools/device-check.sh
#
# It needs nothing from a registry. The GPU machine's python3 has torch (cu130) and the nvidia-*
# wheels: the loader finds the CUDA libraries there, and the driver's libcuda.so.1 in the system.
# diffusers is not installed there: device-pack.sh puts its wheel in target/device/wheels/.
# Without it, only semi's rows are written.
#
# Writes to $OUT (default ./device-out), at most 8 files:
#   env.txt      the GPU, driver, torch, and the CUDA libraries the binary found
#   parity.md    tests/device_parity.rs on CUDA: f32 against the committed diffusers references,
#                f16 and bf16 against f32 (one table row per check)
#   smoke.txt    the toy model on CUDA against the CPU, f32, same seed
#   bench-f16.md semi bench on CUDA in f16, PyTorch + diffusers (SDPA) side by side with ratios:
#                UNet batch 1 and 2, probe passes at batch 1, 16 and 64, text encoder, VAE
#                decode, 50 DDIM steps, one 50-step generation end to end; peak GPU memory
#   bench-f32.md the same rows that matter in f32
#   bench-yolo.md YOLOv8n/m detection (semi eval detect's work) at batch 1 and 8, with ultralytics
#   log.txt      each step's time, exit status and nvidia-smi's highest memory use during it
# Each step has its own time limit; the whole stays under 9 minutes.
#
# `bash tools/device-check.sh --quick` (under 4.5 minutes, for a lease nearly spent): parity, and
# the f16 rows UNet batch 2, probe batches 1 and 64, VAE decode and the 50-step generation.
set -uo pipefail
QUICK=""
[ "${1:-}" = "--quick" ] && QUICK=1
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device-out}"
WORK="${TMPDIR:-/tmp}/semi-device"
mkdir -p "$OUT" "$WORK"
exec 3>&2
log() { echo "== $*" | tee -a "$OUT/log.txt" >&3; }

# The packed binaries (one xz stream, so the kernels they share are stored once).
if [ -f target/device/bins.tar.xz ]; then
    tar -xJf target/device/bins.tar.xz -C "$WORK" || log "cannot unpack target/device/bins.tar.xz"
fi
SEMI="${SEMI_BIN:-$WORK/semi}"
PARITY="${SEMI_PARITY_BIN:-$WORK/device_parity}"

# torch's CUDA libraries for the loader (cublas, curand, nvrtc, cudart of the cu13 wheels).
LIBS="$(python3 - <<'PY' 2>/dev/null
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for so in glob.glob(os.path.join(sp, "nvidia", "**", "lib", "*.so*"), recursive=True):
        dirs.add(os.path.dirname(so))
print(":".join(sorted(dirs)))
PY
)"
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The driver's libcuda.so.1, where the loader's cache does not have it.
if ! ldconfig -p 2>/dev/null | grep -q "libcuda.so.1 "; then
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
        [ -e "$d/libcuda.so.1" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
    done
fi
# The PyTorch side of `semi bench --torch` (the binary's built-in path is the build machine's).
export SEMI_BENCH_TORCH="$PWD/tools/bench_torch.py"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1
    nproc
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$SEMI" 2>&1 | grep -E "cuda|cublas|curand|nvrtc|not found"
} >"$OUT/env.txt"
log "env: $(sed -n 2p "$OUT/env.txt")"

if [ ! -x "$SEMI" ]; then
    log "no binary at $SEMI: run tools/device-pack.sh on the CPU machine and carry target/device"
    exit 1
fi

# diffusers from the carried wheels (no network here).
PYTORCH=""
if ls target/device/wheels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" target/device/wheels/*.whl >>"$OUT/log.txt" 2>&1 &&
        export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import diffusers" 2>>"$OUT/log.txt" && PYTORCH="python3"
log "PyTorch side: ${PYTORCH:-none (no diffusers)}"

# step NAME SECONDS CMD...: runs CMD under a time limit and logs its time, its exit status and
# the most GPU memory nvidia-smi saw in use meanwhile (the whole GPU, sampled every 100 ms).
step() {
    local name="$1" limit="$2"
    shift 2
    log "$name (limit ${limit}s)"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$WORK/smi.txt" 2>/dev/null &
    local smi=$! t0=$SECONDS
    # In a child bash, so NAME can be one of the functions below (exported).
    timeout "$limit" bash -c '"$@"' step "$@"
    local rc=$?
    kill "$smi" 2>/dev/null
    wait "$smi" 2>/dev/null
    local most
    most="$(sort -n "$WORK/smi.txt" 2>/dev/null | tail -1)"
    log "$name: exit $rc after $((SECONDS - t0)) s, GPU memory in use at most ${most:-?} MiB"
}

export SEMI_CACHE="$WORK/cache" SEMI PARITY WORK

if [ -x "$PARITY" ]; then
    parity() {
        echo "| device | check | dtype | relative error | bound |"
        echo "|---|---|---|---|---|"
        SEMI_TEST_DEVICE=cuda SEMI_TEST_FIXTURES="$PWD/crates/diffusion/tests/fixtures" \
            "$PARITY" --nocapture --test-threads 1 >"$WORK/parity.out" 2>&1
        local rc=$?
        grep -oE '\| (cpu|cuda) \|.*' "$WORK/parity.out"
        echo
        grep -E "test result|panicked|FAILED|error" "$WORK/parity.out" | head -40
        return $rc
    }
    export -f parity
    step "parity: tests/device_parity.rs on CUDA" "$([ -n "$QUICK" ] && echo 100 || echo 150)" parity >"$OUT/parity.md" 2>&1
else
    log "no parity binary at $PARITY (device-pack.sh builds it)"
fi

smoke() {
    for dev in cpu cuda; do
        "$SEMI" generate --device "$dev" --dtype f32 --prompt "a circle and a square" \
            --seed 3 --steps 10 --out "$WORK/smoke-$dev.png" 2>&1 | tail -2
    done
    if [ -f "$WORK/smoke-cpu.png" ] && [ -f "$WORK/smoke-cuda.png" ]; then
        cmp -l "$WORK/smoke-cpu.png" "$WORK/smoke-cuda.png" | wc -l | sed 's/^/PNG bytes differing: /'
    else
        echo "no image to compare (see the errors above)"
        return 1
    fi
}
torch=()
[ -n "$PYTORCH" ] && torch=(--torch "$PYTORCH")
if [ -n "$QUICK" ]; then
    step "bench (quick): SD-1.5 size on CUDA, f16" 160 "$SEMI" bench --device cuda --dtype f16 \
        --runs 3 --probe-batches 1,64 --only "UNet forward, batch 2" --only "probe pass" \
        --only "VAE decode, batch 1" --only "50-step generation" "${torch[@]}" \
        >"$OUT/bench-f16.md" 2>>"$OUT/log.txt"
    log "done: $(ls "$OUT" | tr '\n' ' ')"
    exit 0
fi

export -f smoke
step "smoke: toy model, CUDA f32 against CPU" 60 smoke >"$OUT/smoke.txt" 2>&1

step "bench: SD-1.5 size on CUDA, f16" 220 "$SEMI" bench --device cuda --dtype f16 --runs 3 \
    --probe-batches 1,16,64 --only "UNet forward" --only "probe pass" --only "CLIP" \
    --only "VAE decode, batch 1" --only "denoising, 50 DDIM" --only "50-step generation" "${torch[@]}" \
    >"$OUT/bench-f16.md" 2>>"$OUT/log.txt"
step "bench: SD-1.5 size on CUDA, f32" 100 "$SEMI" bench --device cuda --dtype f32 --runs 3 \
    --probe-batches 1,64 --only "UNet forward" --only "probe pass" --only "VAE decode, batch 1" \
    "${torch[@]}" >"$OUT/bench-f32.md" 2>>"$OUT/log.txt"
step "bench: YOLOv8n/m detect on CUDA, f32" 60 "$SEMI" bench --device cuda --runs 3 \
    --only YOLOv8 "${torch[@]}" >"$OUT/bench-yolo.md" 2>>"$OUT/log.txt"
log "done: $(ls "$OUT" | tr '\n' ' ')"
