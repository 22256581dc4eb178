#!/usr/bin/env bash
# Which kernels two or more revisions compile to the same machine code, on this (GPU-less) machine:
# each revision's kernel module is compiled as build.rs compiles it (one translation unit, the same
# nvcc flags) but to an sm_90 cubin, disassembled with nvdisasm, and every kernel's instructions
# compared with branch labels, addresses and nvcc's internal helper numbers normalised. Prints, per kernel of the last revision,
# which earlier revisions it is identical to, and per-kernel instruction counts where they differ.
# Use it to show that a build no device run has exercised launches only kernels that one did
# (experiments/LOG.md, twenty-second session), or to count what a kernel change saves.
#
#   scripts/sass-compare.sh REV [REV ...]      (e.g. main my-branch; the working tree is not used)
#
# Needs a built `target/` (for the generated constants header: cargo build once; a revision that
# changes kernel_constants.rs needs its own) and nvdisasm, which
# it fetches from PyPI (nvidia-cuda-nvdisasm) into ~/.cache/qwen-aot/nvdisasm on first use.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 REV [REV ...]" >&2; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
nvcc="$(bash scripts/setup-cuda.sh 2>/dev/null | tail -n1)"
gen="$(ls -td "${CARGO_TARGET_DIR:-$root/target}"/*/build/qwen-aot-*/out 2>/dev/null | head -n1)"
[ -f "$gen/generated_constants.cuh" ] || { echo "no generated kernel headers: run cargo build first" >&2; exit 2; }
tools="$HOME/.cache/qwen-aot/nvdisasm"
nvdisasm="$(find "$tools" -name nvdisasm -type f 2>/dev/null | head -n1 || true)"
if [ -z "$nvdisasm" ]; then
  mkdir -p "$tools"
  python3 -m pip download --quiet --no-deps -d "$tools" "nvidia-cuda-nvdisasm>=13,<14"
  (cd "$tools" && python3 -m zipfile -e ./nvidia_cuda_nvdisasm-*.whl x)
  nvdisasm="$(find "$tools" -name nvdisasm -type f | head -n1)"
  chmod +x "$nvdisasm"
fi
work="$(mktemp -d)"
trap 'for w in "$work"/wt-*; do git worktree remove --force "$w" >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT
i=0
for rev in "$@"; do
  wt="$work/wt-$i"
  git worktree add --detach "$wt" "$rev" >/dev/null
  # build.rs's unit (cu_files, compile_image): this revision's kernels/*.cu, sorted, included once.
  { echo "// the kernels image, one module (as build.rs writes it)"
    for f in $(LC_ALL=C ls "$wt"/kernels/*.cu); do echo "#include \"$f\""; done; } >"$wt/all_kernels.cu"
  (cd "$wt" && "$nvcc" -cubin -std=c++17 -O3 -lineinfo -gencode=arch=compute_90,code=sm_90 -I "$wt/kernels" -I "$gen" \
    -o "$work/$i.cubin" all_kernels.cu >"$work/$i.log" 2>&1) || { echo "$rev: nvcc failed: $(tail -n 3 "$work/$i.log")" >&2; exit 1; }
  "$nvdisasm" "$work/$i.cubin" >"$work/$i.sass"
  i=$((i + 1))
done
python3 - "$work" "$@" <<'PY'
import re, sys
work, revs = sys.argv[1], sys.argv[2:]
def kernels(path):
    out, cur = {}, None
    for line in open(path):
        m = re.match(r"\s*\.text\.(\w+):", line)
        if m:
            cur = m.group(1)
            out[cur] = []
        elif cur and re.search(r"/\*[0-9a-f]{4}\*/", line):
            # Labels, addresses and the numbering of nvcc's internal helpers (which any added
            # kernel shifts) are not machine-code differences.
            line = re.sub(r"__internal_\d+_", "__internal_N_", line)
            out[cur].append(re.sub(r"\.L_x_\d+", "L", re.sub(r"/\*[0-9a-f]+\*/", "", line)).strip())
    return out
mods = [kernels(f"{work}/{i}.sass") for i in range(len(revs))]
last = mods[-1]
groups = {}
for name, code in sorted(last.items()):
    same = tuple(r for r, m in zip(revs[:-1], mods[:-1]) if m.get(name) == code)
    groups.setdefault(same, []).append(name)
print(f"{len(last)} kernels in {revs[-1]}'s module")
for same, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
    label = "identical to " + ", ".join(same) if same else "identical to none"
    print(f"  {label}: {len(names)}")
    if len(revs) > 1 and len(names) <= 40:
        for n in names:
            counts = " ".join(f"{r}={len(m[n]) if n in m else '-'}" for r, m in zip(revs, mods))
            print(f"    {n:<36} instructions {counts}")
PY
