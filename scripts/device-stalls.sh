#!/usr/bin/env bash
# Where one decode kernel's warps wait, on the GPU machine: Nsight Compute's full sections
# (speed of light, occupancy, warp states, scheduler, memory) for one launch of each kernel named,
# inside `qwen-aot bench --random` (no CUDA graph: each launch is its own kernel; ncu serialises
# it, so there is no PDL overlap). Prints the details page per kernel; the raw report goes to $OUT.
# SOURCE=1 adds the executed instructions per SASS opcode and the 30 SASS lines executed most
# (ncu's source page): where a kernel's instructions go, prologue and epilogue included.
# BENCH_ARGS: more arguments for the bench (e.g. "--depth 2048 --reps 1": the decode at one depth
# alone; then SKIP=$((72 * layers)) lands in its first timed run).
#   usage: [SHAPE=1.5b] [SKIP=launches of that name to pass first] [SOURCE=1] [BENCH_ARGS=...] scripts/device-stalls.sh BIN KERNEL [KERNEL ...]
#   e.g.   SHAPE=1.5b scripts/device-stalls.sh .device/bin/qwen-aot gemv_m_swiglu_q4_k gemv_m_store_q6_k
set -uo pipefail
bin=$1
shift
shape=${SHAPE:-0.5b}
out=${OUT:-/tmp/out}
mkdir -p "$out"
ncu=/usr/local/cuda/bin/ncu
for kernel in "$@"; do
  # SKIP defaults past the warm-up and the bench's prefills, into its depth-0 decode runs.
  QWEN_AOT_NO_GRAPH=1 timeout 300 "$ncu" --set full --clock-control none --kernel-name "$kernel" --launch-skip "${SKIP:-2000}" --launch-count 1 \
    -f -o "$out/stalls-$kernel" "$bin" bench --random --random-shape "$shape" ${BENCH_ARGS:-} --json --quiet >"$out/stalls-$kernel.log" 2>&1 ||
    { echo "ncu $kernel failed: $(tail -n3 "$out/stalls-$kernel.log")"; continue; }
  echo "===== $kernel ($shape)"
  "$ncu" --import "$out/stalls-$kernel.ncu-rep" --page details --print-units base \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --section LaunchStats 2>&1 |
    grep -E 'Duration|SM Frequency|Memory Throughput|DRAM Throughput|L2 Hit|L1/TEX Hit|Issued Warp|Eligible Warps|Active Warps Per Sch|Warp Cycles Per Issued|Grid Size|Registers Per|Dynamic Shared|Occupancy  |Compute \(SM\)|SM Active'
  # The stall reasons: cycles per issued instruction that warps spent in each state, largest first.
  "$ncu" --import "$out/stalls-$kernel.ncu-rep" --page raw --csv 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
head, vals = rows[0], rows[-1]
st = [(float(v.replace(",", "")), h) for h, v in zip(head, vals)
      if h.startswith("smsp__average_warps_issue_stalled_") and h.endswith("_per_issue_active.ratio") and v]
print("stall reasons (warp cycles per issued instruction):")
for v, h in sorted(st, reverse=True)[:10]:
    print(f"  {h[len("smsp__average_warps_issue_stalled_"):-len("_per_issue_active.ratio")]:<24} {v:8.2f}")
m = dict(zip(head, vals))
print("warp instructions executed:", m.get("smsp__inst_executed.sum"), " DRAM bytes:", m.get("dram__bytes.sum"))'
  [ "${SOURCE:-0}" = 1 ] || continue
  "$ncu" --import "$out/stalls-$kernel.ncu-rep" --page source --print-source sass --csv >"$out/source-$kernel.csv" 2>&1 ||
    { echo "source page failed: $(tail -n 2 "$out/source-$kernel.csv")"; continue; }
  python3 - "$out/source-$kernel.csv" <<'PY'
import collections, csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
head = next(i for i, r in enumerate(rows) if "Source" in r)
cols, body = rows[head], rows[head + 1 :]
src = cols.index("Source")
ex = next(i for i, c in enumerate(cols) if c.startswith("Instructions Executed"))
num = lambda v: float(v.replace(",", "") or 0)
total = sum(num(r[ex]) for r in body if len(r) > ex)
by_op = collections.Counter()
for r in body:
    if len(r) > ex and r[src].strip():
        op = r[src].split()[0]
        op = r[src].split()[1] if op.startswith("@") and len(r[src].split()) > 1 else op
        by_op[op.split(".")[0]] += num(r[ex])
print(f"executed warp instructions by opcode (total {total:,.0f}):")
print("  " + "  ".join(f"{op} {n / total:.1%}" for op, n in by_op.most_common(16)))
print("the 30 SASS lines executed most (index in the listing, count, instruction):")
top = sorted(((num(r[ex]), i, r[src].strip()) for i, r in enumerate(body) if len(r) > ex), reverse=True)[:30]
for n, i, t in sorted(top, key=lambda x: x[1]):
    print(f"  {i:5d} {n:10,.0f}  {t[:90]}")
# Where the warps wait: the sampled stalls per SASS line (a line's samples are charged to the
# instruction that could not issue, so a wait on a load shows on the load's first consumer).
smp = next((i for i, c in enumerate(cols) if c.startswith("Warp Stall Sampling (All")), None)
if smp is not None:
    total_s = sum(num(r[smp]) for r in body if len(r) > smp) or 1.0
    print(f"the 30 SASS lines with the most stall samples (of {total_s:,.0f}; index, share, instruction):")
    top = sorted(((num(r[smp]), i, r[src].strip()) for i, r in enumerate(body) if len(r) > smp), reverse=True)[:30]
    for n, i, t in sorted(top, key=lambda x: x[1]):
        print(f"  {i:5d} {n / total_s:6.1%}  {t[:90]}")
PY
done
