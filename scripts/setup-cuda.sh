#!/usr/bin/env bash
# Installs the CUDA compiler (nvcc + NVVM + headers) from PyPI into the project-local, git-ignored
# prefix `.toolchain/cuda`, so that `cargo build` (build.rs) can compile kernels/*.cu on a machine
# without a system CUDA toolkit (developers, CI). No GPU or driver is needed to compile.
#
# Idempotent: does nothing when the pinned versions are already installed. Prints the nvcc path
# as its last line. Versions match the device machine's driver (CUDA 13.0).
#
# Usage: scripts/setup-cuda.sh            (from anywhere inside the repository)
#        PYTHON=python3.12 scripts/setup-cuda.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$root/.toolchain/cuda"
python="${PYTHON:-python3}"
packages=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
)
stamp="$prefix/.installed"
want="${packages[*]}"
nvcc="$prefix/nvidia/cu13/bin/nvcc"

if [[ -x "$nvcc" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup-cuda: already installed (${#packages[@]} packages) in $prefix" >&2
else
  echo "setup-cuda: installing ${packages[*]} into $prefix" >&2
  rm -rf "$prefix"
  mkdir -p "$prefix"
  "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --no-deps --target "$prefix" "${packages[@]}"
  if [[ ! -x "$nvcc" ]]; then
    found="$(find "$prefix" -type f -name nvcc -perm -u+x | head -n1 || true)"
    if [[ -z "$found" ]]; then
      echo "setup-cuda: nvcc not found under $prefix after install" >&2
      exit 1
    fi
    nvcc="$found"
  fi
  printf '%s' "$want" > "$stamp"
fi

# The wheels ship nvcc's helpers (cicc, ptxas, fatbinary, nvlink) next to it; check they run.
"$nvcc" --version | tail -n1 >&2
echo "$nvcc"
