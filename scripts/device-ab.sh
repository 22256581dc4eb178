#!/usr/bin/env bash
# A/B decode benchmark on the GPU machine: `qwen-aot bench --random` (seeded random weights, the
# 0.5B shapes; no model upload needed) with a baseline binary and a candidate, alternated
# A B A B in one call so both see the same GPU state; medians and their ratio, as
# scripts/device-branches.sh prints them (this is that script without the checks, at one shape).
#   usage: scripts/device-ab.sh BASE_BIN NEW_BIN [ROUNDS (default 2)]
set -uo pipefail
ROUNDS=${3:-2} SHAPES=0.5b CHECK=0 exec bash "$(dirname "${BASH_SOURCE[0]}")/device-branches.sh" "$1" "new=$2"
