#!/usr/bin/env bash
# Runs on the GPU machine: the decode attention at several depths under Nsight Compute, to see
# where a deeper context's time goes (experiments/LOG.md, 44th session: at 0.5B the step grows
# 2.1 µs a layer from d1024 to d2048 for 0.8 MB more K/V a layer, and neither the merge, the
# block count, the head groups nor the K/V's eviction by the weights explains it).
#
# For every depth D: `bench --random --depth D` alone (the decode graph's rate at D), then ncu on
# one decode step's attention launches (KERNEL, every layer's once: the window starts 72 steps'
# launches in, past the warm-up's 8 steps, in the middle of the first timed run of 128), without
# the graph so that each launch is its own kernel. Application replay: every metric pass runs the
# whole bench again, so each pass sees the L2 the real run leaves (kernel replay would re-run a
# launch on the cache its previous pass warmed, and the hit rates would lie). Clocks and caches
# are left as they are. ncu serialises the launches: a time here is the kernel alone, without the
# PDL overlap it gets inside the graph.
#
#   usage: [SHAPE=0.5b] [DEPTHS="512 1024 2048"] [KERNEL=attention_split] scripts/device-attn-depth.sh BIN
# Prints one table (a row per depth: the graph's µs a step, then per launch the mean of the
# layers' metrics); the raw CSVs go to $OUT (or /tmp/out).
set -uo pipefail
bin=$1
shape=${SHAPE:-0.5b}
depths=${DEPTHS:-512 1024 2048}
kernel=${KERNEL:-attention_split}
out=${OUT:-/tmp/out}
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
ncu=/usr/local/cuda/bin/ncu
metrics=gpu__time_duration.sum,launch__grid_size,sm__cycles_active.avg,sm__cycles_active.max,dram__bytes_read.sum,lts__t_sector_hit_rate.pct,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__warps_active.avg.pct_of_peak_sustained_active

for d in $depths; do
  timeout 120 "$bin" bench --random --random-shape "$shape" --depth "$d" --reps 3 --json --quiet \
    >"$out/rate-$d.json" 2>"$out/rate-$d.err" || { echo "bench --depth $d failed: $(tail -n2 "$out/rate-$d.err")"; continue; }
  layers=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"])' "$out/rate-$d.json")
  QWEN_AOT_NO_GRAPH=1 timeout 300 "$ncu" --csv --print-units base --replay-mode application --clock-control none --cache-control none \
    --kernel-name "regex:$kernel" --launch-skip $((72 * layers)) --launch-count "$layers" --metrics "$metrics" \
    "$bin" bench --random --random-shape "$shape" --depth "$d" --reps 1 --json --quiet \
    >"$out/ncu-$d.csv" 2>"$out/ncu-$d.err" || echo "ncu at depth $d failed: $(tail -n3 "$out/ncu-$d.err")"
done

python3 - "$out" "$depths" <<'PY'
import collections, csv, json, os, sys
out, depths = sys.argv[1], sys.argv[2].split()
cols = [("gpu__time_duration.sum", "us", 1e-3), ("launch__grid_size", "blocks", 1),
        ("sm__cycles_active.avg", "cyc avg", 1), ("sm__cycles_active.max", "cyc max", 1),
        ("dram__bytes_read.sum", "DRAM KB", 1e-3), ("lts__t_sector_hit_rate.pct", "L2 hit %", 1),
        ("l1tex__data_pipe_lsu_wavefronts_mem_shared.sum", "smem wf", 1),
        ("l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum", "smem confl", 1),
        ("smsp__warps_active.avg.pct_of_peak_sustained_active", "warps %", 1)]
# ncu's units vary with the magnitude: normalise times to ns and bytes to bytes first.
scale = {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}
print(f"{'depth':>6} {'step us':>8} {'launches':>8} " + " ".join(f"{c[1]:>10}" for c in cols))
for d in depths:
    try:
        rate = json.load(open(f"{out}/rate-{d}.json"))
        step = 1e6 / rate["decode_tok_s"]
    except (OSError, ValueError, KeyError):
        step = float("nan")
    path = f"{out}/ncu-{d}.csv"
    vals = collections.defaultdict(list)
    if os.path.exists(path):
        rows = list(csv.reader(l for l in open(path) if l.startswith('"')))
        if rows:
            head = rows[0]
            ni, ui, vi = head.index("Metric Name"), head.index("Metric Unit"), head.index("Metric Value")
            for r in rows[1:]:
                v = float(r[vi].replace(",", "")) * scale.get(r[ui], 1)
                vals[r[ni]].append(v)
    n = len(vals.get("gpu__time_duration.sum", []))
    cells = []
    for name, _, k in cols:
        v = vals.get(name)
        cells.append(f"{sum(v) / len(v) * k:>10.1f}" if v else f"{'-':>10}")
    print(f"{d:>6} {step:>8.1f} {n:>8} " + " ".join(cells))
print("per launch: the mean over one step's layers; step us: the decode graph's, 1e6 / tok/s at that depth")
PY
(cd "$out" && tar czf attn-depth.tgz --remove-files -- *.csv *.json *.err 2>/dev/null)
