#!/usr/bin/env bash
# Runs on the GPU machine: what a constraint costs per token on the GPU, with the real default
# model. For each build (NAME=GENERATE_BIN, that build's `generate`), ROUNDS rounds of `generate
# --backend cuda` on one chat prompt, at most 128 tokens, of four kinds:
#   plain   no constraint;
#   schema  a JSON schema, greedy (most steps take the device's argmax: the grammar allows it);
#   digits  a Lark grammar of digits only: the model's own choice is refused at nearly every step,
#           so the host fetches the row and draws among the allowed tokens;
#   hot     the schema, sampled (temperature 0.8, seed 3): every step's row crosses to the host.
# Checks that every schema answer that ended by itself parses as JSON and that every build and
# round gives the same ids for each kind. Prints decode tokens/s per run and the medians; logs go
# to $OUT (or /tmp/out).
#
#   scripts/device-structured.sh NAME=GENERATE_BIN [NAME=GENERATE_BIN ...]
#   MODEL (default ~/stage/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf), ROUNDS (default 3), BACKEND
#   (default cuda; cpu to try the script here)
set -uo pipefail
model=${MODEL:-$HOME/stage/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
rounds=${ROUNDS:-3}
out=${OUT:-/tmp/out}
mkdir -p "$out"
rm -f "$out"/structured-*  # an earlier run's files would join this run's comparison
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
[ -f "$model" ] || { echo "no model at $model (stage it first)"; exit 2; }
schema='{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "toys": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "toys"]}'
prompt="Describe a cat with many toys, as JSON."
digits="$out/digits.lark"
printf 'start: /[0-9]{1,40}/\n' >"$digits"

run() { # name bin kind round
  local log="$out/structured-$1-$3-$4.json" extra=()
  [ "$3" = schema ] && extra=(-j "$schema")
  [ "$3" = digits ] && extra=(--grammar-file "$digits")
  [ "$3" = hot ] && extra=(-j "$schema" --temp 0.8 -s 3)
  timeout 120 "$2" --backend "${BACKEND:-cuda}" -m "$model" --chat "$prompt" -n 128 --json --quiet "${extra[@]}" >"$log" 2>"$log.err" \
    || { echo "$1 $3 round $4 failed: $(tail -n1 "$log.err")"; return; }
  python3 - "$log" "$1" "$3" "$4" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
ok = ""
if sys.argv[3] in ("schema", "hot") and v["stop_reason"] == "eos":
    try:
        json.loads(v["text"]); ok = " (parses as JSON)"
    except ValueError as e:
        ok = f" FAIL: not JSON ({e})"
print(f"{sys.argv[2]:<12} {sys.argv[3]:<7} round {sys.argv[4]}: {len(v['ids'])} tokens, {v['decode_tok_s'] or 0:.1f} tok/s, stop {v['stop_reason']}{ok}")
PY
}

for r in $(seq "$rounds"); do
  for pair in "$@"; do
    for kind in plain schema digits hot; do run "${pair%%=*}" "${pair#*=}" "$kind" "$r"; done
  done
done | tee "$out/structured.txt"
echo "== medians (tok/s)"
python3 - "$out/structured.txt" <<'PY'
import re, statistics, sys
rates = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\s+(\S+)\s+round \d+: \d+ tokens, ([0-9.]+) tok/s", line)
    if m:
        rates.setdefault((m[1], m[2]), []).append(float(m[3]))
for (name, kind), v in sorted(rates.items()):
    print(f"{name:<12} {kind:<7} {statistics.median(v):8.1f}  ({len(v)} runs)")
PY
echo "== the same ids from every build and round"
python3 - "$out" "$@" <<'PY'
import glob, json, os, sys
out, names = sys.argv[1], [p.split("=", 1)[0] for p in sys.argv[2:]]
for kind in ["plain", "schema", "digits", "hot"]:
    seen = {}
    for n in names:
        for path in sorted(glob.glob(f"{out}/structured-{n}-{kind}-*.json")):
            if os.path.getsize(path) > 0:
                seen[f"{n} {path.rsplit('-', 1)[1][:-5]}"] = json.load(open(path))["ids"]
    if not seen:
        print(f"{kind:<7} no runs")
        continue
    same = len({tuple(v) for v in seen.values()}) == 1
    first = next(iter(seen.values()))
    print(f"{kind:<7} {len(seen)} runs: {'same ids' if same else 'IDS DIFFER'} ({len(first)} tokens)")
PY
