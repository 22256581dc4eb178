#!/usr/bin/env bash
# Speculative decoding against plain decoding on the prompts in scripts/speculative-prompts/ (code edits that
# copy their context, and new text that does not): `generate --chat PROMPT -n 200 --json` with
# --draft-max 0 and N in ABBA order, ROUNDS rounds; prints per prompt the median tokens/s of each,
# their ratio, the drafts kept / checked, and whether every run gave the same ids.
# usage: scripts/speculative-ab.sh GENERATE_BIN [ROUNDS=2] [DRAFT_MAX=8] [BACKEND=cpu]
set -euo pipefail
gen=${1:?usage: $0 GENERATE_BIN [ROUNDS] [DRAFT_MAX] [BACKEND]}
rounds=${2:-2}
draft=${3:-8}
backend=${4:-cpu}
dir="$(cd "$(dirname "$0")" && pwd)/speculative-prompts"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$rounds"); do
  for p in "$dir"/*.txt; do
    for d in 0 "$draft" "$draft" 0; do
      "$gen" --backend "$backend" --chat "$(cat "$p")" -n 200 --draft-max "$d" --json 2>/dev/null |
        python3 -c 'import json,sys; g=json.load(sys.stdin); print(sys.argv[1], sys.argv[2], g["decode_tok_s"], g["draft_tokens"], g["accepted_draft_tokens"], hash(tuple(g["ids"])), len(g["ids"]))' \
          "$(basename "$p" .txt)" "$d" >>"$out"
    done
  done
done
python3 - "$out" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"{'prompt':24s} {'tokens':>6s} {'plain':>8s} {'drafts':>8s} {'ratio':>6s} {'kept/checked':>13s} same ids")
for name in sorted({r[0] for r in rows}):
    plain = [float(r[2]) for r in rows if r[0] == name and r[1] == "0"]
    spec = [r for r in rows if r[0] == name and r[1] != "0"]
    rate = st.median(float(r[2]) for r in spec)
    same = len({r[5] for r in rows if r[0] == name}) == 1
    print(f"{name:24s} {spec[0][6]:>6s} {st.median(plain):8.1f} {rate:8.1f} {rate / st.median(plain):6.3f} {spec[0][4] + '/' + spec[0][3]:>13s} {same}")
PY
