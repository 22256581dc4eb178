#!/usr/bin/env bash
# A/B decode benchmark on the GPU machine: `qwen-aot bench --random` (seeded random weights, the
# 0.5B shapes; no model upload needed) with a baseline binary and a candidate, alternated
# A B A B in one call so both see the same GPU state. Prints one line per run and the ratio of
# medians last.   usage: scripts/device-ab.sh BASE_BIN NEW_BIN [ROUNDS (default 2)]
set -uo pipefail
base=$1 new=$2 rounds=${3:-2}
out=${OUT:-/tmp/out}
mkdir -p "$out"
for r in $(seq "$rounds"); do
  for side in base new; do
    bin=$base; [ "$side" = new ] && bin=$new
    timeout 120 "$bin" bench --random --json --quiet >"$out/ab-$side-$r.json" 2>"$out/ab-$side-$r.err" || { echo "$side run $r failed: $(tail -n1 "$out/ab-$side-$r.err")"; exit 1; }
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
keys = ["decode_tok_s_depth0", "decode_tok_s_depth2048", "decode_step_us_back_to_back", "prefill_tok_s_512", "decode_pct_of_floor"]
runs = {s: [json.load(open(f"{out}/ab-{s}-{r}.json")) for r in range(1, rounds + 1)] for s in ("base", "new")}
print(f"{'metric':<26} {'base (median)':>14} {'new (median)':>14} {'new/base':>9}")
for k in keys:
    b = statistics.median(r[k] for r in runs["base"]); n = statistics.median(r[k] for r in runs["new"])
    print(f"{k:<26} {b:>14.1f} {n:>14.1f} {n / b:>9.3f}")
print("launches per decode step:", runs["base"][0]["launches_per_decode_step"], "->", runs["new"][0]["launches_per_decode_step"])
PY
