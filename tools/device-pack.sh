#!/usr/bin/env bash
# Builds and packs what tools/device-check.sh needs on a GPU machine, on a machine without a GPU:
#
#   target/device/bins.tar.xz  the CUDA `semi` and the CUDA build of
#                              crates/diffusion/tests/device_parity.rs, in one xz stream with a
#                              window large enough that their shared kernels are stored once
#                              (67 MB + 54 MB -> 14 MB)
#   target/device/wheels/      diffusers 0.42.1 and importlib_metadata (the GPU machine's python
#                              has torch, transformers and the rest, but no diffusers), from PyPI
#                              (pinned by sha256)
#
# Carry target/device to the GPU machine. `.ci/run` runs this script (a build and a pack, no run). The build uses tools/cuda-env.sh (pinned CUDA 13.0,
# link stubs) and target/cuda; a first build takes about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/cuda-env.sh
source tools/cuda-env.sh
export CARGO_TARGET_DIR="$PWD/target/cuda"
cargo build --release --locked --features cuda -p semi-cli
test_bin="$(cargo test --release --locked --features cuda -p semi-diffusion --test device_parity \
    --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*device_parity[^"]*\)".*/\1/p' | tail -1)"
[ -x "$test_bin" ] || { echo "device-pack: no device_parity test binary was built" >&2; exit 1; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp target/cuda/release/semi "$stage/semi"
cp "$test_bin" "$stage/device_parity"
strip "$stage/semi" "$stage/device_parity" 2>/dev/null || true
mkdir -p target/device/wheels
tar -C "$stage" -cf - semi device_parity |
    xz -T1 --lzma2=preset=6,dict=256MiB >target/device/bins.tar.xz.part
mv target/device/bins.tar.xz.part target/device/bins.tar.xz

# The wheels, pinned (curl and sha256sum, no Python: CI runs this script).
while read -r sha url; do
    [ -n "$url" ] || continue
    file="target/device/wheels/${url##*/}"
    if ! echo "$sha  $file" | sha256sum -c --status 2>/dev/null; then
        curl -fsSL --retry 3 -o "$file.part" "$url"
        echo "$sha  $file.part" | sha256sum -c --status ||
            { echo "device-pack: $url does not match its pinned sha256" >&2; exit 1; }
        mv "$file.part" "$file"
    fi
done <<'WHEELS'
9154faa704ce00e0b77f568e0d64786064368528aab5fc14eeea92f87d788014 https://files.pythonhosted.org/packages/e1/e9/4328c781bc64f8b74363f66674c00e65021e9a857fb9cb4882ed447956cd/diffusers-0.42.1-py3-none-any.whl
c7a4bf1c7479601f6b8e437cfc14f4f77028ba62a8f34ae95cd93d9774dfba51 https://files.pythonhosted.org/packages/7f/61/0c0fae37eb561d8fddb788cbae0f227051628d70d67498a8a116c1f547d7/importlib_metadata-10.2.0-py3-none-any.whl
WHEELS
du -sh target/device/bins.tar.xz target/device/wheels
echo "device-pack: carry target/device; run: bash tools/device-check.sh" >&2
