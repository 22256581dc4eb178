#!/usr/bin/env bash
# Runs on the GPU machine: the prefill dequantisation scratch sized by the model (the default) against
# the old 32 MB cap (QWEN_AOT_DEQUANT_SCRATCH_MB=32), one binary, at the 7B, 3B, 1.5B and 0.5B random
# shapes, after `check --random-shape` at 7B and 1.5B. Carry the xz-compressed binary as
# .device/bin/qwen-aot.xz; results under $OUT.
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
mkdir -p ~/bin && xz -dc .device/bin/qwen-aot.xz > ~/bin/qwen-aot && chmod +x ~/bin/qwen-aot
B=~/bin/qwen-aot
for s in 7b 1.5b; do t0=$SECONDS; timeout 100 $B check --backend cuda --model-only --random-shape $s --quiet > $OUT/check-$s.log 2>&1; echo "check $s rc=$? $((SECONDS-t0))s $(grep -c ' PASS' $OUT/check-$s.log) PASS $(grep -c ' FAIL' $OUT/check-$s.log) FAIL $(grep -o 'device memory in use: .*' $OUT/check-$s.log | tail -1)"; done
run() { # shape tag round env
  env $4 timeout 150 $B bench --random-shape $1 --reps 3 --json --quiet > $OUT/b-$1-$2-$3.json 2>$OUT/b-$1-$2-$3.err || echo "bench $1 $2 failed: $(tail -1 $OUT/b-$1-$2-$3.err)"
}
for s in 7b 3b 1.5b 0.5b; do
  n=2; [ $s = 0.5b ] && n=1
  for r in $(seq $n); do run $s old $r QWEN_AOT_DEQUANT_SCRATCH_MB=32; run $s new $r X=1; done
done
python3 - $OUT <<'PY'
import json,glob,statistics,sys,os
out=sys.argv[1]
print(f"{'shape':<6}{'tag':<5}{'prefill512 tok/s':>18}{'ms':>8}{'gemm37 ms':>11}{'gemm128 ms':>11}{'d0 tok/s':>10}{'d2048':>9}")
for s in ['7b','3b','1.5b','0.5b']:
    for t in ['old','new']:
        rs=[json.load(open(p)) for p in sorted(glob.glob(f"{out}/b-{s}-{t}-*.json")) if os.path.getsize(p)>0]
        if not rs: continue
        m=lambda f: statistics.median(f(r) for r in rs)
        g=lambda n: m(lambda r: next(x['gemm_ms'] for x in r['short_prefills'] if x['tokens']==n))
        pf=m(lambda r:r['prefill_tok_s_512'])
        print(f"{s:<6}{t:<5}{pf:>18.1f}{512e3/pf:>8.2f}{g(37):>11.2f}{g(128):>11.2f}{m(lambda r:r['decode_tok_s_depth0']):>10.1f}{m(lambda r:r['decode_tok_s_depth2048']):>9.1f}  runs {[round(r['prefill_tok_s_512']) for r in rs]}")
PY
