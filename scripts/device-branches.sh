#!/usr/bin/env bash
# Runs on the GPU machine: judges candidate builds (branches) against a base build in one call.
# For every binary, `qwen-aot check --backend cuda` (every kernel against its CPU twin, and the
# whole random-weight model); then `qwen-aot bench --random` of the base and every candidate at the
# 0.5B and the 1.5B shapes, one after another in each round, so all see the same GPU state.
# Prints compact tables only (the device tool returns little else); logs go to $OUT or /tmp/out.
#
#   scripts/device-branches.sh BASE_BIN NAME=BIN [NAME=BIN ...]
#   ROUNDS (default 2), SHAPES (default "0.5b 1.5b"), CHECK=0 skips the checks, CHECK_BASE=0 skips
#   only the base's (a build of main already checked: ~90 s of device time saved).
#   A BIN ending in .xz is unpacked first (xz -T2 -6 halves what a call carries). NAME=VAR=VAL@BIN
#   runs BIN with VAR=VAL set (several: VAR=VAL,VAR2=VAL2@BIN), e.g. a kernel switch of the same
#   binary: `nofold=QWEN_AOT_ATTN_FOLD=0@.device/bin/qwen-aot-x` (its check is skipped).
#   Logs are packed into $OUT/logs.tgz at the end (the device tool returns few files).
#
# Built beforehand on the CPU machine by scripts/build-branches.sh, which prints the command.
set -uo pipefail
base=$1
shift
rounds=${ROUNDS:-2}
shapes=${SHAPES:-0.5b 1.5b}
out=${OUT:-/tmp/out}
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"

# BIN itself, or BIN.xz unpacked by scripts/device-unpack.sh (its whole folder, once) into
# /tmp/unpacked.
here=$(dirname "${BASH_SOURCE[0]}")
unpacked() {
  case "$1" in
    *.xz)
      local to="/tmp/unpacked/$(basename "$1" .xz)"
      [ -x "$to" ] || bash "$here/device-unpack.sh" "$(dirname "$1")" /tmp/unpacked >&2
      echo "$to"
      ;;
    *) echo "$1" ;;
  esac
}
# The env assignments of a NAME=VAR=VAL,...@BIN spec (none without '@'), and its binary.
spec_env() { case "$1" in *@*) echo "${1%@*}" | tr ',' ' ' ;; esac; }
spec_bin() { unpacked "${1##*@}"; }
base=$(unpacked "$base")

check() { # name bin
  local t0=$SECONDS
  timeout 300 "$2" check --backend cuda >"$out/check-$1.log" 2>&1
  local rc=$?
  printf '%-22s check rc=%s %4ss  PASS=%s FAIL=%s %s\n' "$1" "$rc" "$((SECONDS - t0))" \
    "$(grep -v 'all checks' "$out/check-$1.log" | grep -c ' PASS')" "$(grep -c ' FAIL' "$out/check-$1.log")" \
    "$(grep -o 'device memory in use: [0-9.]* MiB' "$out/check-$1.log")"
  grep ' FAIL' "$out/check-$1.log" | head -n 5
}

bench() { # name spec shape round
  # shellcheck disable=SC2046 # the spec's assignments are words on purpose
  env $(spec_env "$2") timeout 180 "$(spec_bin "$2")" bench --random --random-shape "$3" --json --quiet >"$out/bench-$1-$3-$4.json" \
    2>"$out/bench-$1-$3-$4.err" || echo "bench $1 $3 round $4 failed: $(tail -n1 "$out/bench-$1-$3-$4.err")"
}

if [ "${CHECK:-1}" != 0 ]; then
  echo "== checks"
  [ "${CHECK_BASE:-1}" != 0 ] && check base "$base"
  for pair in "$@"; do
    spec=${pair#*=}
    [ -z "$(spec_env "$spec")" ] && check "${pair%%=*}" "$(spec_bin "$spec")"
  done
fi

for shape in $shapes; do
  echo "== A/B at $shape ($rounds rounds, medians)"
  for r in $(seq "$rounds"); do
    bench base "$base" "$shape" "$r"
    for pair in "$@"; do bench "${pair%%=*}" "${pair#*=}" "$shape" "$r"; done
  done
  python3 - "$out" "$shape" "$rounds" "$@" <<'PY'
import json, statistics, sys, os
out, shape, rounds, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
keys = ["decode_tok_s_depth0", "decode_tok_s_depth128", "decode_tok_s_depth256", "decode_tok_s_depth512",
        "decode_tok_s_depth1024", "decode_tok_s_depth2048", "decode_step_us_back_to_back", "prefill_tok_s_512",
        "first_gemm_prefill_after_warm_up_ms", "gemm_ms_37", "decode_pct_of_floor"]
def value(run, key):  # gemm_ms_N: the short cuBLAS prefill of N tokens; depths between 0 and 2048
    if key.startswith("gemm_ms_"):
        return next(s["gemm_ms"] for s in run["short_prefills"] if s["tokens"] == int(key[8:]))
    if key not in run and key.startswith("decode_tok_s_depth"):
        depth = int(key[len("decode_tok_s_depth"):])
        return next(d["tok_s"] for d in run["decode_tok_s_by_depth"] if d["depth"] == depth)
    return run[key]
def runs(name):
    paths = [f"{out}/bench-{name}-{shape}-{r}.json" for r in range(1, rounds + 1)]
    return [json.load(open(p)) for p in paths if os.path.exists(p) and os.path.getsize(p) > 0]
base = runs("base")
if not base:
    sys.exit(f"no base runs at {shape}")
names = [p.split("=", 1)[0] for p in pairs]
print(f"{'metric':<36} {'base':>10} " + " ".join(f"{n[:14]:>14} {'ratio':>6}" for n in names))
for k in keys:
    b = statistics.median(value(r, k) for r in base)
    row = f"{k:<36} {b:>10.1f} "
    for n in names:
        c = runs(n)
        v = statistics.median(value(r, k) for r in c) if c else float("nan")
        row += f"{v:>14.1f} {v / b:>6.3f} "
    print(row)
print("launches per decode step:", base[0].get("launches_per_decode_step"),
      " bytes per token (MB):", round(base[0].get("weight_bytes_per_token", 0) / 1e6, 1))
PY
done
(cd "$out" && tar czf logs.tgz --remove-files -- *.log *.json *.err 2>/dev/null)
