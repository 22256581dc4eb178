#!/usr/bin/env bash
# CPU cold start and decode, two builds side by side: fresh `generate --backend cpu` processes,
# interleaved A B B A so that drift on a shared machine hits both alike; prints the medians of the
# first token (ms after the start of main), the prefill, the tokenizer's load, peak RSS and the
# decode rate. Each build runs on its own compiled directory (a plan format change makes them
# differ); note that two byte-identical copies of one compile can decode a few percent apart on
# this kind of machine (page-cache placement: benches/NOTES.md), so compare decode rates with care.
#
#   scripts/cpu-startup-ab.sh GENERATE_A DIR_A GENERATE_B DIR_B [ROUNDS] [TOKENS]
#   PROMPT="..." overrides the prompt ("def fib(n):").
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n 2,12p "$0" >&2
    exit 2
fi
bin_a=$1 dir_a=$2 bin_b=$3 dir_b=$4 rounds=${5:-5} tokens=${6:-2}
prompt=${PROMPT:-"def fib(n):"}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
one() {
    local label=$1 bin=$2 dir=$3 log
    log=$(/usr/bin/time -f "RSS_KB %M" "$bin" --backend cpu --model "$dir" -p "$prompt" -n "$tokens" -v 2>&1)
    printf '%s %s %s %s %s %s\n' "$label" \
        "$(grep -o 'first token [0-9.]* ms' <<<"$log" | grep -o '[0-9.]*')" \
        "$(awk '/prefill to the first token/ {print $2}' <<<"$log")" \
        "$(awk '/tokenizer \(beside/ {print $2}' <<<"$log")" \
        "$(grep -o 'RSS_KB [0-9]*' <<<"$log" | grep -o '[0-9]*')" \
        "$(grep -o 'tokens at [0-9.]*' <<<"$log" | grep -o '[0-9.]*')" >>"$out"
}
for _ in $(seq "$rounds"); do
    one A "$bin_a" "$dir_a"
    one B "$bin_b" "$dir_b"
    one B "$bin_b" "$dir_b"
    one A "$bin_a" "$dir_a"
done
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf '%-4s %16s %12s %14s %10s %12s   (medians of %d runs each)\n' "" first_token_ms prefill_ms tokenizer_ms rss_mb decode_tok_s $((2 * rounds))
for label in A B; do
    col() { awk -v l="$label" -v c="$1" '$1 == l {print $c}' "$out" | median; }
    printf '%-4s %16s %12s %14s %10s %12s\n' "$label" "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5 | awk '{printf "%.0f", $1 / 1024}')" "$(col 6)"
done
