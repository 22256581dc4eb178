#!/usr/bin/env bash
# Runs on the GPU machine: cold start of a one-shot `generate` on a compiled directory, for
# several builds interleaved (so all see the same page cache and GPU state). Each run is a fresh
# process (`generate --backend cuda --chat PROMPT -n 16 -v`); prints, per build, the median over
# RUNS runs of the time to the first token after the start of main, and of the start-up phases
# that decide it (the executor, the derived weights' rebuild, CUDA context and upload).
#
#   scripts/device-cold-start.sh DIR NAME=GENERATE_BIN [NAME=GENERATE_BIN ...]
#   RUNS (default 5); logs go to $OUT (or /tmp/out).
set -uo pipefail
dir=$1
shift
runs=${RUNS:-5}
out=${OUT:-/tmp/out}
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
for r in $(seq "$runs"); do
  for pair in "$@"; do
    name=${pair%%=*} bin=${pair#*=}
    timeout 60 "$bin" --backend cuda --model "$dir" --chat "Write a haiku about GPU computing." -n 16 -v \
      >"$out/cold-$name-$r.out" 2>"$out/cold-$name-$r.err" || echo "$name run $r failed: $(tail -n 1 "$out/cold-$name-$r.err")"
  done
done
python3 - "$out" "$runs" "$@" <<'PY'
import re, statistics, sys
out, runs, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
phases = ["open the compiled model", "executor: devices, weights, buffers", "weights: rebuild the derived weights",
          "CUDA: driver, context, stream", "CUDA: kernel module load", "CUDA: weights upload",
          "prefill to the first token"]
print(f"{'build':<12} {'first token ms':>14} " + " ".join(f"{p[:22]:>22}" for p in phases))
for pair in pairs:
    name = pair.split("=", 1)[0]
    first, took = [], {p: [] for p in phases}
    for r in range(1, runs + 1):
        try:
            text = open(f"{out}/cold-{name}-{r}.err").read()
        except OSError:
            continue
        m = re.search(r"first token ([0-9.]+) ms", text)
        if m:
            first.append(float(m.group(1)))
        for line in text.splitlines():
            m = re.match(r"\s*([0-9.]+)\s+([0-9.]+)\s+(.*\S)", line)
            if m and m.group(3) in took:
                took[m.group(3)].append(float(m.group(2)))
    med = lambda v: f"{statistics.median(v):.1f}" if v else "-"
    print(f"{name:<12} {med(first):>14} " + " ".join(f"{med(took[p]):>22}" for p in phases))
PY
