#!/usr/bin/env bash
# Runs on the GPU machine: the decode step's per-kernel budget by ablation. For each kernel class,
# `qwen-aot bench --random` with that class not launched (QWEN_AOT_DIAG_SKIP, runtime/src/cuda/
# diag_skip.rs): the step's time it saves is the class's marginal share. EMPTY_BIN, a build with
# NVCC_APPEND_FLAGS=-DQA_DIAG_EMPTY (every kernel ends at its PDL wait), gives the floor of the
# links alone. Prints one table (µs per step, and per layer); logs go to $OUT (or /tmp/out).
#
#   scripts/device-ablate.sh BASE_BIN [EMPTY_BIN]
#   SHAPE (0.5b or 1.5b, default 0.5b), ROUNDS (default 2), LABELS ("name::prefix,prefix ..."; the
#   default names every decode kernel class of the shape's random model).
#
# Built on the CPU machine: BASE_BIN is an ordinary release build; EMPTY_BIN the same with
#   NVCC_APPEND_FLAGS=-DQA_DIAG_EMPTY CARGO_TARGET_DIR=target/empty cargo build --release --bin qwen-aot
# (skipping the argmax makes the bench stop: its id check sees garbage logits).
set -uo pipefail
base=$1
empty=${2:-}
shape=${SHAPE:-0.5b}
rounds=${ROUNDS:-2}
out=${OUT:-/tmp/out}
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
case $shape in
  # The default model's o_proj and gate|up run on kernels/q5_direct.cu, its LM head on q8_direct.cu
  # (the bench's greedy steps take the argmax entry point, which cannot be skipped: see above).
  0.5b) layers=24 default="qkv::gemv_m_rope attention::attention_split o_proj::gemv_q5_direct_store
          gate_up::gemv_q5_direct_swiglu down::gemv_m_store_q6_k,gemv_m_store_wide embed::embed" ;;
  1.5b) layers=28 default="qkv::gemv_m_rope attention::attention_split o_proj::gemv_m_store_q4_k gate_up::gemv_m_swiglu
          down+lm_head::gemv_m_store_q6_k embed::embed" ;;
  *) echo "SHAPE must be 0.5b or 1.5b"; exit 2 ;;
esac
labels=${LABELS:-$default}

one() { # name bin skip round
  QWEN_AOT_DIAG_SKIP="$3" timeout 120 "$2" bench --random-shape "$shape" --json --quiet --reps 3 \
    >"$out/ablate-$shape-$1-$4.json" 2>"$out/ablate-$shape-$1-$4.err" ||
    echo "$1 round $4 failed: $(tail -n 1 "$out/ablate-$shape-$1-$4.err")"
}
for r in $(seq "$rounds"); do
  one all "$base" "" "$r"
  for l in $labels; do one "${l%%::*}" "$base" "${l#*::}" "$r"; done
  [ -n "$empty" ] && one links-only "$empty" "" "$r"
done
python3 - "$out" "$shape" "$layers" <<'PY'
import glob, json, os, statistics, sys
out, shape, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
def step(name):
    v = []
    for p in glob.glob(f"{out}/ablate-{shape}-{name}-*.json"):
        if os.path.getsize(p) > 0:
            v.append(json.load(open(p))["decode_step_us_back_to_back"])
    return statistics.median(v) if v else float("nan")
names = []
for p in sorted(glob.glob(f"{out}/ablate-{shape}-*.json")):
    n = os.path.basename(p)[len(f"ablate-{shape}-"):].rsplit("-", 1)[0]
    if n not in names and n != "all":
        names.append(n)
full = step("all")
print(f"{shape}: step with every kernel {full:.1f} us (medians of the rounds)")
print(f"{'without':16} {'step us':>9} {'saved us':>9} {'per layer':>10}")
for n in names:
    s = step(n)
    print(f"{n:16} {s:9.1f} {full - s:9.1f} {(full - s) / layers:10.2f}")
PY
