#!/usr/bin/env python3
"""Runs `generate --json` on every reference case with the cuda and cpu backends and compares the
greedy ids: cuda vs cpu, and each vs the reference, up to the reference's first position whose
top-1/top-2 margin is below 0.1 (past it, a correct engine may take the other branch).
usage: compare-generations.py GENERATE_BIN COMPILED_DIR REFS_JSON OUT_DIR"""
import json
import subprocess
import sys


def rate(run):
    """decode_tok_s as printed: `-` where there was no decode to time (one token: JSON null)."""
    r = run["decode_tok_s"]
    return "-" if r is None else f"{r:.1f}"


gen, model, refs_path, out = sys.argv[1:5]
refs = json.load(open(refs_path))
ok = True
print(f"{'case':<5} {'prompt':>6} {'decided':>8} {'cuda=ref':>9} {'cpu=ref':>8} {'cuda=cpu':>9} {'cuda tok/s':>11} {'ttft ms':>8}")
for case in refs["cases"]:
    n = len(case["output_ids"])
    runs = {}
    for backend in ("cuda", "cpu"):
        p = subprocess.run([gen, "--model", model, "--backend", backend, "--json", "--prompt", case["input_text"],
                            "--max-tokens", str(n)], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"case {case['id']} {backend}: exit {p.returncode}: {p.stderr.strip()}")
            ok = False
            runs[backend] = None
            continue
        runs[backend] = json.loads(p.stdout)
        json.dump(runs[backend], open(f"{out}/gen-{case['id']}-{backend}.json", "w"))
    if not runs.get("cuda") or not runs.get("cpu"):
        continue
    decided = next((i for i, m in enumerate(case["margins"]) if m < 0.1), n)
    ref = case["output_ids"][:decided]
    cu, cp = runs["cuda"], runs["cpu"]
    prompt_ok = cu["prompt_ids"] == case["input_ids"] == cp["prompt_ids"]
    cuda_ref = cu["ids"][:decided] == ref
    cpu_ref = cp["ids"][:decided] == ref
    cuda_cpu = cu["ids"][:decided] == cp["ids"][:decided]
    full_same = cu["ids"] == cp["ids"]
    ok &= prompt_ok and cuda_ref and cpu_ref and cuda_cpu
    print(f"{case['id']:<5} {'ok' if prompt_ok else 'DIFF':>6} {decided:>4}/{n:<3} {str(cuda_ref):>9} {str(cpu_ref):>8} {str(cuda_cpu):>9} "
          f"{rate(cu):>11} {cu['ttft_ms']:>8.1f}   (all {len(cu['ids'])} ids cuda==cpu: {full_same})")
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
