#!/usr/bin/env bash
# compute-sanitizer memcheck on the GPU machine: one prefill and one decode step of the compiled
# default model (after scripts/device-accept.sh compiled it), through the CUDA graph and without.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
compiled=${1:-/tmp/qwen-aot-cache/default}
export PATH=/usr/local/cuda/bin:$PATH
status=0
for graph in 1 0; do
  QWEN_AOT_NO_GRAPH=$((1 - graph)) compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
    .device/bin/generate --model "$compiled" --backend cuda --prompt "Hello, GPU" --max-tokens 2 --quiet \
    >"$out/memcheck-graph$graph.txt" 2>&1
  rc=$?
  echo "memcheck graph=$graph rc=$rc: $(grep -E 'ERROR SUMMARY|LEAK SUMMARY' "$out/memcheck-graph$graph.txt" | tr '\n' ' ')"
  [ $rc -eq 0 ] || status=1
done
exit $status
