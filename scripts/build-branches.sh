#!/usr/bin/env bash
# Builds (on the CPU machine) the `qwen-aot` binary of the current checkout and of each named
# branch, stripped, into the git-ignored .device/bin/ (qwen-aot-base, qwen-aot-<branch>), for
# scripts/device-branches.sh to compare on the GPU machine; prints the device command last.
# Branches are checked out in temporary worktrees and share one target directory
# (target/branches), so each build recompiles only what the branch changed.
#
#   scripts/build-branches.sh BRANCH [BRANCH ...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-cuda.sh >/dev/null
mkdir -p .device/bin
export CARGO_TARGET_DIR="$root/target/branches"

build() { # source_dir name
  (cd "$1" && cargo build --release --bin qwen-aot)
  strip -o ".device/bin/qwen-aot-$2" "$CARGO_TARGET_DIR/release/qwen-aot"
}

build "$root" base
args=()
for branch in "$@"; do
  wt="$(mktemp -d)/wt"
  git worktree add --detach "$wt" "$branch" >/dev/null
  ln -s "$root/.toolchain" "$wt/.toolchain"
  name="${branch//\//-}"
  build "$wt" "$name"
  git worktree remove --force "$wt"
  args+=("$name=.device/bin/qwen-aot-$name")
done
du -sh .device
echo "on the GPU machine (carry .device):"
echo "  bash scripts/device-branches.sh .device/bin/qwen-aot-base ${args[*]}"
