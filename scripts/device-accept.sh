#!/usr/bin/env bash
# Acceptance run for the CUDA backend, on the GPU machine (see ../shared/DEVICE.md). Expects the
# binaries in .device/bin, the reference JSON in .device/refs and the default model at $MODEL
# (staged there with ../shared/tools/stage-chunks.sh). Everything lands under $OUT (or /tmp/out).
#
#   1. compile the model; 2. `qwen-aot check --backend cuda` on it (kernels + whole model);
#   3. greedy ids of every reference case on cuda and cpu, compared with each other and with the
#      reference up to its first low-margin position; 4. `qwen-aot bench`; 5. perplexity of
#      GPL-3 on cuda and cpu; 6. soak (200 generations). scripts/device-sanitize.sh runs
#      compute-sanitizer on one prefill and one decode step.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
bin=.device/bin
model=${MODEL:-$HOME/stage/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
export QWEN_AOT_CACHE=/tmp/qwen-aot-cache
export PATH=/usr/local/cuda/bin:$PATH
compiled=$QWEN_AOT_CACHE/default
status=0
step() { echo; echo "===== $*"; }

step compile
"$bin/qwen-aot" compile --model "$model" -o "$compiled" --quiet 2>&1 | tail -4 || status=1

step "check --backend cuda --model (default model)"
"$bin/qwen-aot" check --backend cuda --model "$compiled" 2>&1 | tee "$out/check.txt" || status=1

step "reference cases: cuda vs cpu vs reference"
python3 scripts/compare-generations.py "$bin/generate" "$compiled" .device/refs/generation-qwen2.5-coder-0.5b.json "$out" || status=1

step "bench"
"$bin/qwen-aot" bench --model "$compiled" --quiet 2>&1 | tee "$out/bench.txt" || status=1
"$bin/qwen-aot" bench --model "$compiled" --quiet --json >"$out/bench.json" 2>&1 || status=1

step "perplexity, GPL-3, ctx 512: cuda then cpu"
for b in cuda cpu; do
  "$bin/qwen-aot" perplexity --model "$compiled" --file .device/GPL-3 --ctx 512 --backend $b --quiet 2>&1 | tee -a "$out/perplexity.txt" || status=1
done

step "soak: 200 generations on cuda"
"$bin/qwen-aot" soak --model "$compiled" --backend cuda --n 200 --quiet 2>&1 | tee "$out/soak.txt" || status=1

echo; echo "device-accept status: $status"
exit $status
