#!/usr/bin/env bash
# Acceptance run for the CUDA backend, on the GPU machine (see ../shared/DEVICE.md). Expects the
# binaries in .device/bin (scripts/device-build.sh), the reference JSON in .device/refs, GPL-3 in
# .device/GPL-3 and the default model at $MODEL (staged with ../shared/tools/stage-chunks.sh).
# Logs land under $OUT (or /tmp/out). Two phases, each well inside one device call (10 minutes):
#
#   scripts/device-accept.sh 1   compile the model; `qwen-aot check --backend cuda` on it (kernels,
#                                whole model, device sampling); greedy ids of every reference case
#                                on cuda and cpu vs the reference; `qwen-aot bench`
#   scripts/device-accept.sh 2   compute-sanitizer memcheck of one prefill + decode (graph and not);
#                                a seeded sampled generation twice; perplexity of GPL-3 on cuda;
#                                soak (200 generations); out of GPU memory is one clear error;
#                                check on a random model without the graph
set -uo pipefail
phase=${1:-1}
out=${OUT:-/tmp/out}
mkdir -p "$out"
bin=.device/bin
model=${MODEL:-$HOME/stage/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
export QWEN_AOT_CACHE=/tmp/qwen-aot-cache
export PATH=/usr/local/cuda/bin:$PATH
compiled=$QWEN_AOT_CACHE/default
status=0
# step NAME SECONDS COMMAND...: runs with a time limit, output to the terminal and $out/NAME.txt.
step() {
  local name=$1 limit=$2; shift 2
  echo; echo "===== $name"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "----- $name: exit $rc"
  [ "$rc" -eq 0 ] || status=1
}

if [ "$phase" = 1 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  step compile 120 "$bin/qwen-aot" compile --model "$model" -o "$compiled" --quiet
  # Kernels are checked on random inputs by `qwen-aot check` without --model (or cuda_kernels);
  # here the real model: GPU vs CPU logits, device sampling, device memory in use.
  step check 200 "$bin/qwen-aot" check --backend cuda --model "$compiled" --model-only
  step reference-cases 120 python3 scripts/compare-generations.py "$bin/generate" "$compiled" .device/refs/generation-qwen2.5-coder-0.5b.json "$out"
  step bench 150 "$bin/qwen-aot" bench --model "$compiled" --quiet
else
  for graph in 1 0; do
    QWEN_AOT_NO_GRAPH=$((1 - graph)) step "memcheck-graph$graph" 150 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
      "$bin/generate" --model "$compiled" --backend cuda --prompt "Hello, GPU" --max-tokens 3 --quiet
  done
  for run in 1 2; do
    step "sampled-$run" 30 "$bin/generate" --model "$compiled" --backend cuda --chat "Write a haiku about GPU computing." \
      --temperature 0.8 --top-k 40 --top-p 0.95 --seed 1234 --max-tokens 48 --json --quiet
  done
  python3 -c 'import json,sys; a,b=(json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:]); same=a["ids"]==b["ids"]; print("seeded sampling repeated:", "identical" if same else "DIFFERENT", len(a["ids"]), "ids"); sys.exit(0 if same else 1)' "$out/sampled-1.txt" "$out/sampled-2.txt" || status=1
  step perplexity-cuda 120 "$bin/qwen-aot" perplexity --model "$compiled" --file .device/GPL-3 --ctx 512 --backend cuda --quiet
  step soak 150 "$bin/qwen-aot" soak --model "$compiled" --backend cuda --n 200 --quiet
  # Out of GPU memory: another process holds all but 900 MiB (room for the CUDA context, not for the weights); generate must fail with one clear
  # line and exit 1 (not a panic, not a CUDA error code).
  rm -f /tmp/hog.ready
  python3 -c 'import torch,time; f,_=torch.cuda.mem_get_info(); x=torch.empty(f-(900<<20),dtype=torch.uint8,device="cuda"); open("/tmp/hog.ready","w").write("1"); time.sleep(90)' &
  hog=$!
  for _ in $(seq 60); do [ -f /tmp/hog.ready ] && break; sleep 0.5; done
  timeout 60 "$bin/generate" --model "$compiled" --backend cuda --prompt "hi" --max-tokens 2 --quiet >"$out/oom.txt" 2>&1
  rc=$?
  kill $hog 2>/dev/null; wait $hog 2>/dev/null
  echo; echo "===== oom"; cat "$out/oom.txt"; echo "----- oom: exit $rc"
  { [ $rc -eq 1 ] && grep -q "out of GPU memory" "$out/oom.txt" && ! grep -q panicked "$out/oom.txt"; } || status=1
  QWEN_AOT_NO_GRAPH=1 step check-random-no-graph 150 "$bin/qwen-aot" check --backend cuda
fi
echo; echo "device-accept phase $phase status: $status"
exit $status
