#!/usr/bin/env bash
# Runs on the GPU machine: unpacks the xz-compressed binaries that a call carried (five stripped
# `qwen-aot` builds are ~94 MB, over the 64 MiB a call may carry; compressed ~51 MB) into DEST,
# executable, where later calls of the same lease still find them. Uses xz when the machine has it,
# else Python's lzma module.
#
#   scripts/device-unpack.sh SRC_DIR DEST_DIR      (every SRC_DIR/*.xz -> DEST_DIR/<name>)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SRC_DIR DEST_DIR" >&2; exit 2; }
src=$1 dest=$2
shopt -s nullglob
files=("$src"/*.xz)
[ ${#files[@]} -gt 0 ] || { echo "no *.xz files in $src" >&2; exit 2; }
mkdir -p "$dest"
for f in "${files[@]}"; do
  out="$dest/$(basename "$f" .xz)"
  # Unpacked beside, then renamed: an interrupted run leaves no truncated executable.
  if command -v xz >/dev/null; then
    xz -dc "$f" >"$out.tmp"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$out.tmp"
  fi
  chmod +x "$out.tmp"
  mv "$out.tmp" "$out"
  echo "unpacked $out ($(stat -c %s "$out") bytes)"
done
