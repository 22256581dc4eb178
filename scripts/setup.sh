#!/usr/bin/env bash
# Everything a fresh machine needs before `cargo test`: the CUDA compiler from PyPI (so every
# kernel is compiled and checked by the build, even without a GPU) and the default model.
# Idempotent and cached: a second run does nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup-cuda.sh" >/dev/null
bash "$root/scripts/fetch-model.sh" >/dev/null
