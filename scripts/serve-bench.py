#!/usr/bin/env python3
"""What the HTTP path costs: time to first token and decode tokens/s of `generate` against the
same prompts streamed through `qwen-aot serve` (/v1/completions, greedy), measured by a client.
Standard library only (it runs on the GPU machine as is).

Usage: serve-bench.py BIN_DIR MODEL [--backend cuda] [--reps 5] [--max-tokens 256]
BIN_DIR holds `qwen-aot` and `generate`; MODEL is a GGUF or compiled directory.
Prompts alternate between two with different first tokens, so the server's prefix reuse never
shortens a prefill and both sides prefill the same tokens.
"""
import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import time

PROMPTS = ["def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", "class Stack:\n    \"\"\"A LIFO stack backed by a list.\"\"\"\n"]


def run_generate(bin_dir, model, backend, prompt, max_tokens):
    out = subprocess.run(
        [f"{bin_dir}/generate", "--model", model, "--backend", backend, "--prompt", prompt, "--max-tokens", str(max_tokens), "--json", "--quiet"],
        check=True, capture_output=True, text=True,
    )
    v = json.loads(out.stdout)
    return v["ttft_ms"], v["decode_tok_s"], len(v["ids"])


def start_server(bin_dir, model, backend):
    p = subprocess.Popen([f"{bin_dir}/qwen-aot", "serve", "--model", model, "--backend", backend, "--port", "0", "--quiet"], stderr=subprocess.PIPE, text=True)
    addr = None
    for line in p.stderr:
        m = re.search(r"listening on http://([0-9.]+):(\d+)", line)
        if m:
            addr = (m.group(1), int(m.group(2)))
            break
    if addr is None:
        sys.exit("the server printed no address")
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection(*addr, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return p, addr
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the server did not become healthy")


def engine_ttft(addr):
    """(sum, count) of the server's own time-to-first-token histogram (queue wait + prefill)."""
    c = http.client.HTTPConnection(*addr, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    val = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))
    return val("qwen_aot_time_to_first_token_seconds_sum"), val("qwen_aot_time_to_first_token_seconds_count")


def stream_once(addr, prompt, max_tokens):
    """Client-side TTFT (ms), decode tokens/s after the first token, completion tokens."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
    c = http.client.HTTPConnection(*addr, timeout=300)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=body, headers={"content-type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.read()
    first = last = None
    usage = None
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        v = json.loads(data)
        if v.get("usage"):
            usage = v["usage"]
        if v["choices"] and v["choices"][0]["text"]:
            now = time.perf_counter()
            first = first or now
            last = now
    n = usage["completion_tokens"]
    rate = (n - 1) / (last - first) if n > 1 and last > first else None
    return (first - t0) * 1e3, rate, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("model")
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=256)
    a = ap.parse_args()

    gen = [run_generate(a.bin_dir, a.model, a.backend, PROMPTS[i % 2], a.max_tokens) for i in range(a.reps + 1)][1:]
    server, addr = start_server(a.bin_dir, a.model, a.backend)
    try:
        stream_once(addr, PROMPTS[1], 8)  # warm-up: the first request captures the CUDA graph
        before = engine_ttft(addr)
        srv = [stream_once(addr, PROMPTS[i % 2], a.max_tokens) for i in range(a.reps)]
        after = engine_ttft(addr)
    finally:
        server.terminate()
        server.wait(timeout=60)
    med = lambda xs: statistics.median([x for x in xs if x is not None])
    g_ttft, g_rate = med([g[0] for g in gen]), med([g[1] for g in gen])
    s_ttft, s_rate = med([s[0] for s in srv]), med([s[1] for s in srv])
    print(f"tokens per answer: generate {[g[2] for g in gen]}, serve {[s[2] for s in srv]}")
    print(f"{'':10} {'ttft ms':>10} {'decode tok/s':>14}")
    print(f"{'generate':10} {g_ttft:10.2f} {g_rate:14.1f}")
    print(f"{'serve':10} {s_ttft:10.2f} {s_rate:14.1f}")
    inside = (after[0] - before[0]) / (after[1] - before[1]) * 1e3
    client = statistics.mean(s[0] for s in srv)
    print(f"TTFT through HTTP {client:.3f} ms (client, mean) vs {inside:.3f} ms in the engine (mean): HTTP adds {client - inside:+.3f} ms")
    print(f"(generate's TTFT includes its process's first-use costs: {g_ttft - s_ttft:+.2f} ms vs the warm server)")
    print(f"streamed decode is {100 * (s_rate / g_rate - 1):+.1f} % vs generate")
    print(f"server exit status after SIGTERM: {server.returncode}")


if __name__ == "__main__":
    main()
