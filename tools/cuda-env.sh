# Source this file (`source tools/cuda-env.sh`) to build semi with `--features cuda` on a machine
# without a GPU or a CUDA toolkit:
#
#     source tools/cuda-env.sh
#     cargo build --release --features cuda -p semi-cli
#
# On first use it fetches a pinned CUDA 13.0 compiler from PyPI (the NVIDIA wheels nvcc, nvvm,
# runtime, crt and cccl; curl, sha256sum and unzip, no Python) into $SEMI_CUDA_HOME (default
# ~/.cache/semi/cuda-13.0). CUDA 13.0 because the GPU machine's driver is 580 (CUDA 13.0): PTX
# from a newer nvcc would not load there. It also writes link stubs for the libraries cudarc
# links (libcuda, libnvrtc, libcurand, libcublas, libcublasLt): functions that fail, with the
# real libraries' sonames; libcudart is the wheel's own. The binary then runs wherever the real ones are on the loader's
# path (the driver's libcuda.so.1, and for the rest e.g. torch's nvidia wheels); see
# tools/device-check.sh. Without a GPU, `semi ... --device cuda` says so in one line.
#
# Exports CUDA_ROOT, CUDA_HOME, PATH, CUDA_COMPUTE_CAP (90: H100/H200; override before sourcing)
# and CUDARC_CUDA_VERSION (13000).

_semi_cuda_setup() {
    local home="${SEMI_CUDA_HOME:-$HOME/.cache/semi/cuda-13.0}"
    local root="$home/nvidia/cu13"
    local repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    # name sha256 url: the pinned wheels (linux x86_64).
    local wheels="
56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03 https://files.pythonhosted.org/packages/71/8b/a546c12881fffeba927d810598987df25d74b8b241788c7db8dfc93b0173/nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548 https://files.pythonhosted.org/packages/2e/24/d1558f3b68b1d26e706813b1d10aa1d785e4698c425af8db8edc3dced472/nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4 https://files.pythonhosted.org/packages/05/69/a1ec4d9f0747d85964206feb47bf359f48a2d6af74c0add8abba6efe3dda/nvidia_cuda_crt-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649 https://files.pythonhosted.org/packages/ab/fb/0384bb2129bed6b1b39f8e44471c615ab5ab29b7e55817538a1d390d8f84/nvidia_cuda_cccl-13.0.85-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0 https://files.pythonhosted.org/packages/15/b0/ee41e6d1108d959b5097163e7190c2d0f7857dea75606ce358f0275891b4/nvidia_nvvm-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
"
    if [ ! -x "$root/bin/nvcc" ] || [ ! -x "$root/nvvm/bin/cicc" ]; then
        echo "cuda-env: fetching the CUDA 13.0 compiler wheels into $home" >&2
        mkdir -p "$home/wheels" || return 1
        local sha url file
        while read -r sha url; do
            [ -n "$url" ] || continue
            file="$home/wheels/${url##*/}"
            if ! echo "$sha  $file" | sha256sum -c --status 2>/dev/null; then
                curl -fsSL --retry 3 -o "$file.part" "$url" || return 1
                mv "$file.part" "$file"
                echo "$sha  $file" | sha256sum -c --status ||
                    { echo "cuda-env: $file does not match its pinned sha256" >&2; return 1; }
            fi
            unzip -qo "$file" 'nvidia/*' -d "$home" || return 1
        done <<<"$wheels"
        chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
    fi
    _semi_cuda_stubs "$root" "$repo" || return 1
    export CUDA_ROOT="$root" CUDA_HOME="$root"
    case ":$PATH:" in *":$root/bin:"*) ;; *) export PATH="$root/bin:$PATH" ;; esac
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    # cudarc knows CUDA versions up to 13.4 and guesses from nvcc otherwise: pin it.
    export CUDARC_CUDA_VERSION=13000
    echo "cuda-env: nvcc $("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $CUDA_COMPUTE_CAP, stubs in $root/lib/stubs" >&2
}

# Link stubs: every function cudarc declares for a library, as a C function that returns 100
# (CUDA_ERROR_NO_DEVICE; an error status for the other libraries), in a
# shared library with the real one's soname. Made from the cudarc sources cargo fetched. With
# LD_LIBRARY_PATH=$CUDA_ROOT/lib/stubs the binary also starts where no driver is installed, and
# `--device cuda` reports that there is no device.
_semi_cuda_stubs() {
    local root="$1" repo="$2" stubs="$1/lib/stubs"
    [ -f "$stubs/.done" ] && return 0
    (cd "$repo" && cargo fetch --locked -q) || return 1
    local cudarc
    cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 2>/dev/null | head -1 || true)"
    if [ -z "$cudarc" ]; then
        echo "cuda-env: cannot find the cudarc 0.19.10 sources in the cargo registry" >&2
        return 1
    fi
    mkdir -p "$stubs" || return 1
    # The runtime is the real one from the wheel: candle's compiled kernels call its internals
    # (__cudaRegisterFatBinary, ...), and it needs no driver until it is used.
    ln -sf ../libcudart.so.13 "$stubs/libcudart.so"
    ln -sf ../libcudart.so.13 "$stubs/libcudart.so.13"
    local spec dir lib soname
    for spec in driver:cuda:libcuda.so.1 nvrtc:nvrtc:libnvrtc.so.13 \
        curand:curand:libcurand.so.10 cublas:cublas:libcublas.so.13 cublaslt:cublasLt:libcublasLt.so.13; do
        IFS=: read -r dir lib soname <<<"$spec"
        grep -hoE '^ {12}fn [A-Za-z0-9_]+\(' "$cudarc/src/$dir/sys/mod.rs" |
            sed -E 's/^ *fn ([A-Za-z0-9_]+)\(/int \1(void) { return 100; }/' | sort -u >"$stubs/$lib.c"
        gcc -shared -fPIC -o "$stubs/lib$lib.so" -Wl,-soname,"$soname" "$stubs/$lib.c" || return 1
        ln -sf "lib$lib.so" "$stubs/$soname"
    done
    touch "$stubs/.done"
}

_semi_cuda_setup
unset -f _semi_cuda_setup _semi_cuda_stubs
