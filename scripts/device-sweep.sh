#!/usr/bin/env bash
# Sweep one tuning environment variable on the GPU machine: `qwen-aot bench --random` (seeded
# random weights) once per value and round, values alternated within each round so every value
# sees the same GPU state. Prints the median of each metric per value, per shape.
#   usage: [SHAPES="0.5b 1.5b"] scripts/device-sweep.sh BIN VAR "V1 V2 ..." [ROUNDS (default 2)]
#   SHAPES: `bench --random-shape` values (default 0.5b).
#   e.g.   scripts/device-sweep.sh .device/bin/qwen-aot QWEN_AOT_L2_WINDOW_MB "0 16 24" 2
set -uo pipefail
bin=$1 var=$2 values=$3 rounds=${4:-2}
out=${OUT:-/tmp/out}
mkdir -p "$out"
for shape in ${SHAPES:-0.5b}; do
for r in $(seq "$rounds"); do
  for v in $values; do
    log="$out/sweep-$var-$shape-${v//[^A-Za-z0-9._=-]/_}-$r"  # values may hold '/' (QWEN_AOT_QMMA_SHAPE)
    env "$var=$v" timeout 120 "$bin" bench --random --random-shape "$shape" --json --quiet >"$log.json" 2>"$log.err" \
      || { echo "$var=$v $shape run $r failed: $(tail -n1 "$log.err")"; exit 1; }
  done
done
echo "== $shape"
python3 - "$out/sweep-$var-$shape" "$rounds" "$var" $values <<'PY'
import json, re, statistics, sys
prefix, rounds, var, values = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
keys = ["decode_tok_s_depth0", "decode_tok_s_depth2048", "decode_step_us_back_to_back", "prefill_tok_s_512", "decode_pct_of_floor"]
print(f"{var:<40} " + " ".join(f"{k:>24}" for k in keys))
for v in values:
    tag = re.sub(r"[^A-Za-z0-9._=-]", "_", v)
    runs = [json.load(open(f"{prefix}-{tag}-{r}.json")) for r in range(1, rounds + 1)]
    print(f"{v:<40} " + " ".join(f"{statistics.median(r[k] for r in runs):>24.1f}" for k in keys))
PY
done
