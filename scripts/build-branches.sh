#!/usr/bin/env bash
# Builds (on the CPU machine) the `qwen-aot` binary of the current checkout and of each named
# branch, stripped and xz-packed, into the git-ignored .device/bin/ (qwen-aot-base.xz,
# qwen-aot-<branch>.xz), for scripts/device-branches.sh to compare on the GPU machine; prints the
# device command last. Branches are checked out in temporary worktrees and share one target
# directory (target/branches): the dependencies are built once, the workspace crates and the
# kernel image once per build (about 5 minutes each on 2 cores).
#
#   scripts/build-branches.sh BRANCH [BRANCH ...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-cuda.sh >/dev/null
mkdir -p .device/bin
export CARGO_TARGET_DIR="$root/target/branches"

build() { # source_dir name
  # The builds share one target directory, where cargo knows the workspace crates by their path
  # relative to the workspace and rebuilds by mtime: a checkout whose sources are older than the
  # last build's artifacts would be judged fresh and get the other build's crates (it happened:
  # experiments/LOG.md, fortieth session). Touching the sources makes each build its own.
  find "$1/src" "$1/runtime" "$1/compiler" "$1/kernels" -type f -exec touch {} +
  touch "$1/build.rs"
  (cd "$1" && cargo build --release --bin qwen-aot)
  strip -o "/tmp/qwen-aot-$2" "$CARGO_TARGET_DIR/release/qwen-aot"
  xz -T2 -6 -c "/tmp/qwen-aot-$2" >".device/bin/qwen-aot-$2.xz"
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
  args+=("$name=.device/bin/qwen-aot-$name.xz")
done
du -sh .device
echo "on the GPU machine (carry .device):"
echo "  bash scripts/device-branches.sh .device/bin/qwen-aot-base.xz ${args[*]}"
