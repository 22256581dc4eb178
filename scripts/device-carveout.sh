#!/usr/bin/env bash
# The L1/shared-memory split each decode kernel gets, and what it costs: per carveout spec
# (QWEN_AOT_SMEM_CARVEOUT, see runtime/src/cuda/device.rs), Nsight Compute's shared-memory
# configuration of one layer's decode kernels, then one `qwen-aot bench --random` run.
#   usage: scripts/device-carveout.sh BIN "spec1;spec2;..."   e.g. ... "$bin" "-1;43"
set -uo pipefail
bin=$1
out=${OUT:-/tmp/out}
mkdir -p "$out"
ncu=/usr/local/cuda/bin/ncu
# No graph, so ncu sees each launch; skip 2500 launches (prefill and warm-up) to land on one
# decode layer's kernels (8 launches: qkv, attention, o_proj, gate|up, down, ...).
IFS=';' read -ra specs <<<"$2"
for s in "${specs[@]}"; do
  QWEN_AOT_SMEM_CARVEOUT="$s" QWEN_AOT_NO_GRAPH=1 timeout 200 $ncu --csv --metrics launch__shared_mem_config_size --launch-skip 2500 --launch-count 8 "$bin" bench --random --json --quiet > "$out/ncu.csv" 2>/dev/null
  cfg=$(grep '^"' "$out/ncu.csv" | python3 -c '
import csv,sys
rows=list(csv.reader(sys.stdin)); h=rows[0]; k=h.index("Kernel Name"); v=h.index("Metric Value")
print(" ".join(r[k].split("(")[0].replace("gemv_f16","g").replace("attention_split_d64","attn")+":"+str(int(r[v].replace(",",""))//1024) for r in rows[1:]))')
  QWEN_AOT_SMEM_CARVEOUT="$s" timeout 120 "$bin" bench --random --json --quiet > "$out/b.json" 2>/dev/null
  r=$(python3 -c 'import json;d=json.load(open("'$out'/b.json"));print(d["decode_tok_s_depth0"],d["decode_tok_s_depth2048"],d["decode_step_us_back_to_back"],round(d["prefill_tok_s_512"]))')
  echo "[$s] $r | $cfg"
done
