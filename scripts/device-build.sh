#!/usr/bin/env bash
# Builds (here, on the machine without a GPU) everything scripts/device-test.sh runs on the GPU
# machine, and copies it, stripped, into the git-ignored .device/ folder to be carried:
#   .device/bin/qwen-aot       the CLI (check --backend cuda, bench)
#   .device/bin/cuda_kernels   runtime/tests/cuda_kernels.rs (kernels vs CPU twins)
#   .device/bin/kernels        benches/kernels.rs (criterion, per-kernel GB/s)
#   .device/bin/sync_chain     experiments/sync_chain.cu (cost of one dependency link, by kind)
#   .device/bin/stream_chain   experiments/stream_chain.cu (links vs weight streaming, overlapped or not)
#   .device/bin/ring_chain     experiments/ring_chain.cu (the same chain as one persistent kernel)
#   .device/bin/mega_chain     experiments/mega_chain.cu (a persistent decode-layer chain with real GEMVs)
#   .device/bin/cluster_chain  experiments/cluster_chain.cu (links inside a thread-block cluster)
#   .device/kernels.fatbin     the embedded kernel image (for the runtime test binary)
#   .device/test_kernels.fatbin  the test kernels' image (kernels/test/*.cu; the same test binary)
# Usage: scripts/device-build.sh   (CARGO_TARGET_DIR is honoured)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-cuda.sh >/dev/null
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p .device/bin

cargo build --release --bin qwen-aot
test_bin="$(cargo test --release -p qwen-aot-runtime --features cuda --test cuda_kernels --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]=="cuda_kernels": print(m["executable"])' | tail -n1)"
bench_bin="$(cargo bench --bench kernels --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]=="kernels": print(m["executable"])' | tail -n1)"

cargo build --release --bin generate
install -m 755 "$target/release/qwen-aot" .device/bin/qwen-aot
install -m 755 "$target/release/generate" .device/bin/generate
[[ -n "$test_bin" ]] && install -m 755 "$test_bin" .device/bin/cuda_kernels
[[ -n "$bench_bin" ]] && install -m 755 "$bench_bin" .device/bin/kernels
# The dependency-link microbenchmark (experiments/sync_chain.cu), a standalone CUDA program.
"$(bash scripts/setup-cuda.sh 2>/dev/null | tail -n1)" -O3 -arch=sm_90 --cudadevrt none \
  -L.toolchain/cuda/nvidia/cu13/lib -o .device/bin/sync_chain experiments/sync_chain.cu
# Whether link latency can hide behind weight streaming (experiments/stream_chain.cu; as one
# persistent kernel: ring_chain.cu, mega_chain.cu; inside a cluster: cluster_chain.cu), standalone too.
for prog in stream_chain ring_chain mega_chain cluster_chain; do
  "$(bash scripts/setup-cuda.sh 2>/dev/null | tail -n1)" -O3 -arch=sm_90 --cudadevrt none \
    -L.toolchain/cuda/nvidia/cu13/lib -o ".device/bin/$prog" "experiments/$prog.cu"
done
fatbin="$(ls -t "$target"/release/build/qwen-aot-*/out/kernels.fatbin | head -n1)"
install -m 644 "$fatbin" .device/kernels.fatbin
install -m 644 "$(dirname "$fatbin")/test_kernels.fatbin" .device/test_kernels.fatbin
strip .device/bin/* 2>/dev/null || true
du -sh .device/bin/* .device/kernels.fatbin .device/test_kernels.fatbin
