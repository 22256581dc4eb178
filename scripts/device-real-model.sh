#!/usr/bin/env bash
# Runs on the GPU machine: the real default model under each of several builds, in one call.
# Per build: compile it (native, and `--weights f16` for the accuracy comparison the issues ask
# for), `refcheck --backend cuda` on both plans, `bench` ROUNDS times (builds interleaved within a
# round, so all see the same GPU state) and GPL-3 perplexity on cuda. Prints compact lines and a
# table; logs go to $OUT (or /tmp/out).
#
#   scripts/device-real-model.sh NAME=BIN [NAME=BIN ...]
#   MODEL (default ~/stage/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf, staged with
#   ../shared/tools/stage-chunks.sh), ROUNDS (default 2), F16=0 skips the f16 plan, PPL=0 skips the
#   perplexity, GPL3 (default .device/GPL-3: carry a copy of /usr/share/common-licenses/GPL-3).
#   PLAN=DIR uses a native plan compiled on the CPU machine for every build (their compilers must
#   agree: the plan format is checked at load) instead of compiling the GGUF: 7 carried chunks of
#   the plan's tar instead of the GGUF's 9; no f16 plan then (F16=0).
set -uo pipefail
model=${MODEL:-$HOME/stage/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
rounds=${ROUNDS:-2}
gpl3=${GPL3:-.device/GPL-3}
out=${OUT:-/tmp/out}
refs=tests/refs/generation-qwen2.5-coder-0.5b.json
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [ -n "${PLAN:-}" ]; then
  [ -f "$PLAN/weights.bin" ] || { echo "no plan at $PLAN (stage it first)"; exit 2; }
  F16=0
else
  [ -f "$model" ] || { echo "no model at $model (stage it first)"; exit 2; }
fi

# The native plan a build runs: PLAN's for every build, else its own compile of the GGUF.
plan_dir() { echo "${PLAN:-/tmp/cm-$1}"; }

refcheck() { # name bin plan_dir tag
  timeout 240 "$2" refcheck --refs "$refs" --backend cuda --model "$3" >"$out/refcheck-$1-$4.log" 2>&1
  printf '%-16s refcheck %-6s rc=%s  %s\n' "$1" "$4" "$?" \
    "$(grep -o 'max |Δtop5 logit| .*' "$out/refcheck-$1-$4.log" || tail -n 1 "$out/refcheck-$1-$4.log")"
}

for pair in "$@"; do
  name=${pair%%=*} bin=${pair#*=}
  t0=$SECONDS
  if [ -z "${PLAN:-}" ]; then
    timeout 180 "$bin" compile --model "$model" -o "$(plan_dir "$name")" --quiet >"$out/compile-$name.log" 2>&1 ||
      echo "compile $name failed: $(tail -n 1 "$out/compile-$name.log")"
  fi
  printf '%-16s plan %s (%ss), weights.bin %s bytes\n' "$name" "$(plan_dir "$name")" "$((SECONDS - t0))" \
    "$(stat -c %s "$(plan_dir "$name")/weights.bin" 2>/dev/null)"
  refcheck "$name" "$bin" "$(plan_dir "$name")" native
  if [ "${F16:-1}" != 0 ]; then
    timeout 180 "$bin" compile --model "$model" -o "/tmp/cm16-$name" --weights f16 --quiet >"$out/compile16-$name.log" 2>&1 ||
      echo "compile --weights f16 $name failed: $(tail -n 1 "$out/compile16-$name.log")"
    refcheck "$name" "$bin" "/tmp/cm16-$name" f16
  fi
done

for r in $(seq "$rounds"); do
  for pair in "$@"; do
    name=${pair%%=*} bin=${pair#*=}
    timeout 180 "$bin" bench --model "$(plan_dir "$name")" --json --quiet >"$out/bench-real-$name-$r.json" \
      2>"$out/bench-real-$name-$r.err" || echo "bench $name round $r failed: $(tail -n 1 "$out/bench-real-$name-$r.err")"
  done
done
python3 - "$out" "$rounds" "$@" <<'PY'
import json, os, statistics, sys
out, rounds, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
keys = ["decode_tok_s_depth0", "decode_tok_s_depth2048", "decode_step_us_back_to_back", "prefill_tok_s_512",
        "first_gemm_prefill_after_warm_up_ms", "decode_pct_of_floor", "weight_bytes_per_token"]
names = [p.split("=", 1)[0] for p in pairs]
def runs(n):
    ps = [f"{out}/bench-real-{n}-{r}.json" for r in range(1, rounds + 1)]
    return [json.load(open(p)) for p in ps if os.path.exists(p) and os.path.getsize(p) > 0]
print(f"{'real model, medians':<36} " + " ".join(f"{n[:16]:>16}" for n in names))
for k in keys:
    row = f"{k:<36} "
    for n in names:
        vs = [r[k] for r in runs(n) if k in r]
        row += f"{statistics.median(vs):>16.1f}" if vs else f"{'-':>16}"
        row += " "
    print(row)
for n in names:
    print(n, "runs:", " / ".join(f"{r['decode_tok_s_depth0']:.1f}, {r['decode_tok_s_depth2048']:.1f}, "
                                f"{r['prefill_tok_s_512']:.0f}" for r in runs(n)))
PY

if [ "${PPL:-1}" != 0 ]; then
  for pair in "$@"; do
    name=${pair%%=*} bin=${pair#*=}
    timeout 200 "$bin" perplexity --model "$(plan_dir "$name")" --file "$gpl3" --ctx 512 --backend cuda --quiet \
      >"$out/ppl-$name.log" 2>&1
    printf '%-16s perplexity rc=%s  %s\n' "$name" "$?" "$(grep -o 'PPL = .*' "$out/ppl-$name.log" || tail -n 1 "$out/ppl-$name.log")"
  done
fi
