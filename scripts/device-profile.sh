#!/usr/bin/env bash
# Per-kernel GPU time of one decode step, on the GPU machine: Nsight Compute (ncu) profiles 123+
# consecutive launches in the middle of `qwen-aot bench --random` (no CUDA graph, so every launch
# is its own kernel; ncu serialises them (clocks and caches left as they are), so each time is the kernel alone, without the PDL
# overlap it gets inside the graph). Prints time per kernel family (count, total, mean) and the
# total: compare it with the bench's decode step time to see what launch gaps cost.
#   usage: [SHAPE=1.5b] [KERNEL=regex] scripts/device-profile.sh BIN [LAUNCHES (default: one decode step of BIN's plan)]
# SHAPE: the random model's shape (bench --random-shape; default 0.5b). KERNEL: profile instead the
# first LAUNCHES launches whose name matches (e.g. KERNEL=dequant: the prefill's dequantisation).
# SKIP: launches skipped first (default 40000: past the bench's warm-up, its short prefills on both
# paths and the cuBLAS warm-up (20000 still lands in the cuBLAS prefills), into the depth-0 decode runs;
# a window of one step's launches anywhere in it holds every decode kernel once).
set -uo pipefail
bin=$1 count=${2:-0}
shape=${SHAPE:-0.5b}
select=(--launch-skip "${SKIP:-40000}")
[ -n "${KERNEL:-}" ] && select=(--kernel-name "regex:$KERNEL" --launch-skip 0)
out=${OUT:-/tmp/out}
mkdir -p "$out"
ncu=/usr/local/cuda/bin/ncu
if [ "$count" = 0 ]; then
  count=$(QWEN_AOT_NO_GRAPH=1 timeout 120 "$bin" bench --random --random-shape "$shape" --json --quiet 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["launches_per_decode_step"])')
fi
# Skip the warm-up (prefill + 8 decode steps) and land inside the first timed decode run.
QWEN_AOT_NO_GRAPH=1 timeout 300 "$ncu" --csv --clock-control none --cache-control none --metrics gpu__time_duration.sum "${select[@]}" --launch-count "$count" \
  "$bin" bench --random --random-shape "$shape" --json --quiet >"$out/ncu.csv" 2>"$out/ncu.err" || { echo "ncu failed: $(tail -n3 "$out/ncu.err")"; exit 1; }
python3 - "$out/ncu.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, body = rows[0], rows[1:]
ki, vi, ui = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
agg = collections.OrderedDict()
total = 0.0
for r in body:
    v = float(r[vi].replace(",", ""))
    v = v / 1000.0 if r[ui] in ("nsecond", "ns") else v * (1000.0 if r[ui] in ("msecond", "ms") else 1.0)
    name = r[ki].split("(")[0]
    c, t = agg.get(name, (0, 0.0))
    agg[name] = (c + 1, t + v)
    total += v
print(f"{'kernel':<28} {'count':>5} {'total us':>9} {'mean us':>8}")
for k, (c, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{k:<28} {c:>5} {t:>9.1f} {t / c:>8.2f}")
print(f"{'all':<28} {sum(c for c, _ in agg.values()):>5} {total:>9.1f}")
PY
