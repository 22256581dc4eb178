#!/usr/bin/env bash
# One device call for the quantized-weights work (issue 15): every kernel vs its CPU twin, the
# random-model benches (0.5B native and f16 in the same call, 1.5B native), and a per-kernel time
# breakdown of a native decode step under ncu (serialised launches: compare kernels, not steps).
# Runs on the GPU machine with .device/ carried (scripts/device-build.sh); logs under $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
B=.device/bin
out="${OUT:-/tmp/quant-probe}"
mkdir -p "$out"
if [[ "${SKIP_KERNELS:-0}" != 1 ]]; then
  QWEN_AOT_FATBIN="$PWD/.device/kernels.fatbin" timeout 300 "$B/cuda_kernels" --nocapture --test-threads=1 >"$out/kernels.log" 2>&1
  echo "kernel-test rc=$? $(grep -c FAIL "$out/kernels.log") FAIL rows; $(grep 'test result' "$out/kernels.log")"
  grep FAIL "$out/kernels.log" | head -20
fi
# The whole model on random weights in the default model's formats and in f16: GPU vs CPU logits.
timeout 120 "$B/qwen-aot" check --backend cuda --model-only >"$out/check.log" 2>&1
echo "== check --model-only (random native + f16 models) rc=$?"
grep -E "PASS|FAIL|memory" "$out/check.log" | head -12
# QUANT_PROBE_VARIANTS: extra builds to compare (e.g. "qwen-aot-b"), each a binary in .device/bin;
# "v2" is this build with every quantized GEMV on kernels/qgemv.cu (QWEN_AOT_QGEMV=v2).
for bin in qwen-aot ${QUANT_PROBE_VARIANTS:-}; do
  env=()
  [[ "$bin" == v2 ]] && { env=(QWEN_AOT_QGEMV=v2); bin=qwen-aot; }
  for a in "--random" "--random --random-weights f16" "--random-shape 1.5b"; do
    [[ ( "$bin" != qwen-aot || ${#env[@]} -gt 0 ) && "$a" == *f16* ]] && continue
    env "${env[@]}" timeout 240 "$B/$bin" bench $a --reps 3 >"$out/bench.log" 2>&1
    echo "== ${env[*]} $bin bench $a rc=$?"
    grep -E "decode|prefill|weights read|floor" "$out/bench.log"
  done
done
if command -v ncu >/dev/null && [[ "${SKIP_NCU:-0}" != 1 ]]; then
  timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum -k regex:'gemv|attention' \
    --launch-skip 400 --launch-count 130 "$B/qwen-aot" bench --random --reps 1 >"$out/ncu.log" 2>&1
  echo "== ncu rc=$?"
  python3 - "$out/ncu.log" <<'PY'
import re, sys, collections
t = collections.defaultdict(list); b = collections.defaultdict(list); name = None
for line in open(sys.argv[1]):
    m = re.match(r'\s*(\S+?)(\(.*\))? \(\d+, \d+, \d+\)x\(\d+, \d+, \d+\)', line)
    if m: name = m.group(1); continue
    m = re.search(r'gpu__time_duration.sum\s+(\S+)\s+([\d.,]+)', line)
    if m and name:
        v = float(m.group(2).replace(',', '')); t[name].append(v * {'usecond': 1, 'nsecond': 1e-3, 'msecond': 1e3}.get(m.group(1), 1))
    m = re.search(r'dram__bytes_read.sum\s+(\S+)\s+([\d.,]+)', line)
    if m and name:
        v = float(m.group(2).replace(',', '')); b[name].append(v * {'byte': 1, 'Kbyte': 1e3, 'Mbyte': 1e6, 'Gbyte': 1e9}.get(m.group(1), 1))
for k in sorted(t, key=lambda k: -sum(t[k])):
    us = sorted(t[k]); med = us[len(us) // 2]; mb = sorted(b[k])[len(b[k]) // 2] / 1e6 if b[k] else 0
    print(f"{k:36s} n={len(us):3d} median {med:8.2f} us  {mb:8.2f} MB  {mb / med * 1e-3 if med else 0:7.2f} TB/s")
PY
fi
