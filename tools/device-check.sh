#!/usr/bin/env bash
# The one prepared check for a GPU machine (docs/performance.md, "GPU check"). Run it through the
# `device` tool from the repository root, with the CUDA binary built beforehand on the CPU machine:
#
#     source tools/cuda-env.sh
#     cargo build --release --features cuda -p semi-cli --target-dir target/cuda
#     mkdir -p target/device && xz -T2 -c target/cuda/release/semi >target/device/semi.xz
#     # device tool:  run  command="bash tools/device-check.sh"  carry=["target/device"]
#
# (xz: the binary is 70 MB with its kernels, the carry limit 64 MiB; packed it is 14 MB.)
#
# It needs nothing from a registry. The GPU machine's python3 has torch (cu130) and the nvidia-*
# wheels. The loader finds the CUDA libraries there, and the driver's libcuda.so.1 in the system.
# diffusers is not installed there: put its wheel (and its pure-Python dependencies) in
# target/device/wheels/ to get the PyTorch rows. Without them, only semi's rows are written.
#
# Writes to $OUT (default ./device-out):
#   env.txt     the GPU, driver, torch and semi versions
#   smoke.txt   the toy model on CUDA in f32 against the CPU (the same seed gives the same image
#               up to float rounding; CPU parity with diffusers is proven in CI)
#   bench-*.md  semi bench on CUDA: f32 and f16, with PyTorch side by side when diffusers is
#               there (ratio column)
# Each step has its own time limit, so the whole stays under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device-out}"
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/log.txt" >&2; }
SEMI="${SEMI_BIN:-target/device/semi}"
if [ ! -x "$SEMI" ] && [ -f target/device/semi.xz ]; then
    SEMI="$OUT/.bin/semi"
    mkdir -p "$OUT/.bin" && xz -dc target/device/semi.xz >"$SEMI" && chmod +x "$SEMI"
fi

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

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$SEMI" 2>&1 | grep -E "cuda|cublas|curand|nvrtc|not found"
} >"$OUT/env.txt"
log "env: $(head -2 "$OUT/env.txt" | tail -1)"

if [ ! -x "$SEMI" ]; then
    log "no binary at $SEMI: build it on the CPU machine (see the top of this script)"
    exit 1
fi

# diffusers from carried wheels, if any (no network here).
PYTORCH=""
if ls target/device/wheels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --find-links target/device/wheels --target "$OUT/.py" \
        diffusers >>"$OUT/log.txt" 2>&1 &&
        export PYTHONPATH="$OUT/.py${PYTHONPATH:+:$PYTHONPATH}" && PYTORCH="python3"
fi
python3 -c "import diffusers" 2>/dev/null && PYTORCH="python3"

log "smoke: toy model, CUDA f32 against CPU"
export SEMI_CACHE="$OUT/.cache"
{
    for dev in cpu cuda; do
        timeout 120 "$SEMI" generate --device "$dev" --dtype f32 --prompt "a circle and a square" \
            --seed 3 --steps 10 --out "$OUT/smoke-$dev.png" 2>&1 | tail -2
    done
    if [ -f "$OUT/smoke-cpu.png" ] && [ -f "$OUT/smoke-cuda.png" ]; then
        cmp -l "$OUT/smoke-cpu.png" "$OUT/smoke-cuda.png" | wc -l | sed 's/^/PNG bytes differing: /'
    else
        echo "no image to compare (see the errors above)"
    fi
} >"$OUT/smoke.txt" 2>&1

for dtype in f16 f32; do
    log "bench: SD-1.5 size on CUDA, $dtype"
    args=(bench --device cuda --dtype "$dtype" --runs 5)
    [ -n "$PYTORCH" ] && args+=(--torch "$PYTORCH")
    timeout 180 "$SEMI" "${args[@]}" >"$OUT/bench-$dtype.md" 2>>"$OUT/log.txt" ||
        log "bench $dtype failed or timed out (see log.txt)"
done
log "done: $(ls "$OUT" | tr '\n' ' ')"
