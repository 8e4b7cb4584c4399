#!/usr/bin/env bash
# Merges the word counts of every file named in the arguments into one ranked report.
set -euo pipefail
report() { if [ -n "${JOBCTL:-}" ]; then "$JOBCTL" report "$@"; fi; }
top=${top:-10}
out_file=${out_file:?out_file is not set}
mkdir -p "$(dirname "$out_file")"
cat "$@" | awk -F'\t' '{ n[$1] += $2 } END { for (w in n) printf "%d\t%s\n", n[w], w }' |
    sort -rn | head -n "$top" > "$out_file"
echo "top $top words over $# sites:"
cat "$out_file"
report retval "{\"report\": \"$out_file\", \"sites\": $#}"
