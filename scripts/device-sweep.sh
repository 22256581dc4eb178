#!/usr/bin/env bash
# Sweep one tuning environment variable on the GPU machine: `qwen-aot bench --random` (seeded
# random weights) once per value and round, values alternated within each round so every value
# sees the same GPU state. Prints the median of each metric per value, per shape.
#   usage: [SHAPES="0.5b 1.5b"] scripts/device-sweep.sh BIN VAR "V1 V2 ..." [ROUNDS (default 2)]
#   SHAPES: `bench --random-shape` values (default 0.5b).
#   e.g.   scripts/device-sweep.sh .device/bin/qwen-aot QWEN_AOT_L2_WINDOW_MB "0 16 24" 2
#          scripts/device-sweep.sh ~/bin/qwen-aot QWEN_AOT_ATTN_FOLD "0 4 8" 3   (the fold, by depth)
#   The table has the decode rate at every depth bench sweeps (decode_tok_s_depthN).
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
def depths(run):  # the decode rate at the depths between 0 and 2048 (bench's depth sweep), by depth
    return {d["depth"]: d["tok_s"] for d in run.get("decode_tok_s_by_depth", [])}
table = []
for v in values:
    tag = re.sub(r"[^A-Za-z0-9._=-]", "_", v)
    table.append((v, [json.load(open(f"{prefix}-{tag}-{r}.json")) for r in range(1, rounds + 1)]))
sweep = sorted({d for _, runs in table for r in runs for d in depths(r)})
cols = keys + [f"decode_tok_s_depth{d}" for d in sweep]
print(f"{var:<40} " + " ".join(f"{k:>24}" for k in cols))
for v, runs in table:
    vals = [statistics.median(r[k] for r in runs) for k in keys]
    vals += [statistics.median(depths(r).get(d, float("nan")) for r in runs) for d in sweep]
    print(f"{v:<40} " + " ".join(f"{x:>24.1f}" for x in vals))
PY
done
