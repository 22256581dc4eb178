#!/usr/bin/env bash
# Runs on the GPU machine (no Rust toolchain there), from the repository root, with the .device/
# folder that scripts/device-build.sh filled carried along. Writes logs under /tmp/device-test
# (packed into $OUT/device-test-logs.tgz when $OUT is set: the device tool returns few files)
# and prints a short summary last.
#
#   scripts/device-test.sh [all|check|sanitize|bench]     (default: all)
#
#   check     runtime/tests/cuda_kernels.rs (every kernel vs its CPU twin, 0.5B and odd shapes),
#             then `qwen-aot check --backend cuda` (kernels again + whole random-weight model,
#             GPU vs CPU executor, decode through the CUDA graph), then the same with
#             QWEN_AOT_NO_GRAPH=1 and with QWEN_AOT_NO_CUBLAS=1 (GEMV fallback for prefill).
#   sanitize  compute-sanitizer memcheck and racecheck on the kernel test (odd shapes + one 0.5B
#             decode shape: sanitizers slow kernels down by 10-100x).
#   bench     benches/kernels.rs (criterion, short runs) and `qwen-aot bench --random` if present.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
what="${1:-all}"
out=/tmp/device-test
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export QWEN_AOT_FATBIN="$PWD/.device/kernels.fatbin"
bin=.device/bin
summary=()
run() { # name, command...
  local name="$1"; shift
  local t0=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-28s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$(grep -E 'passed|FAIL|all checks|error' "$out/$name.log" | tail -n1 | cut -c1-90)")")
  return 0
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

if [[ "$what" == all || "$what" == check ]]; then
  run kernel-test "$bin/cuda_kernels" --nocapture --test-threads=1
  run qwen-aot-check "$bin/qwen-aot" check --backend cuda
  QWEN_AOT_NO_GRAPH=1 run check-no-graph "$bin/qwen-aot" check --backend cuda
  QWEN_AOT_NO_PDL=1 run check-no-pdl "$bin/qwen-aot" check --backend cuda
  QWEN_AOT_NO_CUBLAS=1 run kernel-test-no-cublas "$bin/cuda_kernels" --nocapture --test-threads=1
fi
if [[ "$what" == all || "$what" == sanitize ]]; then
  cs="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  QWEN_AOT_CHECK_SHAPES=odd run memcheck "$cs" --tool memcheck --error-exitcode 99 "$bin/cuda_kernels" --nocapture --test-threads=1 kernels_match
  # cuBLAS off: racecheck reports a hazard inside cuBLAS' own GEMM kernel (nvjet_*), not ours.
  QWEN_AOT_NO_CUBLAS=1 QWEN_AOT_CHECK_SHAPES=odd run racecheck "$cs" --tool racecheck --error-exitcode 99 "$bin/cuda_kernels" --nocapture --test-threads=1 kernels_match
fi
if [[ "$what" == all || "$what" == bench ]]; then
  run bench-kernels "$bin/kernels" --bench --warm-up-time 0.5 --measurement-time 1 --sample-size 10
  QWEN_AOT_NO_PDL=1 run bench-kernels-no-pdl "$bin/kernels" --bench --warm-up-time 0.5 --measurement-time 1 --sample-size 10
  if [[ "${QWEN_AOT_CLI_BENCH:-0}" == 1 ]]; then
    run qwen-aot-bench "$bin/qwen-aot" bench --random
  fi
fi

echo
echo "== logs in $out"
for f in kernel-test qwen-aot-check; do
  [[ -f "$out/$f.log" ]] && { echo "-- $f (failures / summary)"; grep -E 'FAIL|passed|PASS$|whole model|device:' "$out/$f.log" | grep -v ' PASS$' | head -20; }
done
for b in bench-kernels bench-kernels-no-pdl; do
  [[ -f "$out/$b.log" ]] && { echo "-- $b"; sed -n '/^kernel /,/^$/p;/^decode (random/,/^(weights/p' "$out/$b.log"; }
done
[[ -f "$out/qwen-aot-bench.log" ]] && { echo "-- qwen-aot bench"; tail -n 15 "$out/qwen-aot-bench.log"; }
for s in memcheck racecheck; do
  [[ -f "$out/$s.log" ]] && { echo "-- $s"; grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' "$out/$s.log" | tail -n 3; }
done
echo "== summary"
printf '%s\n' "${summary[@]}"
[[ -n "${OUT:-}" ]] && tar czf "$OUT/device-test-logs.tgz" -C "$out" . && echo "logs: \$OUT/device-test-logs.tgz"
