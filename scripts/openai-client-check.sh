#!/usr/bin/env bash
# The official `openai` Python client against `qwen-aot serve` on the CPU (a CI step): installs
# the client into a virtual environment under target/, starts the server on a free localhost
# port, computes the expected greedy answers with `generate --chat`, runs
# scripts/openai_client_check.py, stops the server with SIGTERM and requires exit status 0.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
venv=target/openai-venv
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check openai
cargo build --release --bin qwen-aot --bin generate

log=$(mktemp)
"$bin/qwen-aot" serve --backend cpu --host 127.0.0.1 --port 0 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
base=
for _ in $(seq 600); do
    base=$(grep -o 'http://[0-9.:]*' "$log" | head -n1 || true)
    [[ -n $base ]] && curl -sf "$base/health" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "the server exited" >&2; exit 1; }
    sleep 0.5
done
curl -sf "$base/health" >/dev/null || { cat "$log"; echo "the server never became healthy" >&2; exit 1; }

expected=$("$venv/bin/python" - "$bin/generate" <<'PY'
import json, subprocess, sys
out = {}
for m in ["Say hi.", "Name a color."]:
    r = subprocess.run([sys.argv[1], "--backend", "cpu", "--chat", m, "--max-tokens", "8", "--json"], check=True, capture_output=True, text=True)
    out[m] = json.loads(r.stdout)["text"]
print(json.dumps(out))
PY
)
# Each check prints one "ok:" line and any failure stops the script (set -e): the count is real.
# (tee into a process substitution, not /dev/stderr: that reopens fd 2 and truncates a log file.)
checks=$("$venv/bin/python" -u scripts/openai_client_check.py "$base" "$expected" | tee >(cat >&2) | grep -c '^ok:')

kill -TERM "$server"
status=0
wait "$server" || status=$?
trap 'rm -f "$log"' EXIT
[[ $status -eq 0 ]] || { cat "$log"; echo "the server exited with $status after SIGTERM" >&2; exit 1; }
echo "openai-client: $checks checks passed (and the server exited 0 after SIGTERM)"
