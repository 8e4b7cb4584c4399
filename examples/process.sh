#!/usr/bin/env bash
# Counts the words of every crawled page in $input_dir into $out_file (word<TAB>count).
set -euo pipefail
report() { if [ -n "${JOBCTL:-}" ]; then "$JOBCTL" report "$@"; fi; }
input_dir=${input_dir:?input_dir is not set}
out_file=${out_file:?out_file is not set}
mkdir -p "$(dirname "$out_file")"
cat "$input_dir"/page-*.txt | tr -s ' ' '\n' | grep -v '^$' | sort | uniq -c |
    awk '{ printf "%s\t%d\n", $2, $1 }' > "$out_file"
echo "counted $(wc -l < "$out_file") distinct words from $input_dir"
report retval --string "$out_file"
