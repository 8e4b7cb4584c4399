#!/usr/bin/env bash
# Crawls a (synthetic) site: writes $pages pages of text for the URL in $1 into $out_dir.
# Nothing is downloaded: each page's words are drawn from a fixed list, seeded by the URL.
# Under jobctl it reports progress and returns the folder through the job channel.
set -euo pipefail
report() { if [ -n "${JOBCTL:-}" ]; then "$JOBCTL" report "$@"; fi; }
url=${1:?usage: crawl.sh URL}
pages=${pages:-20}
out_dir=${out_dir:?out_dir is not set}
words=(alpha beta gamma delta data pipeline crawl index report graph build job
       queue worker retry cache table query schema value)
mkdir -p "$out_dir"
seed=$(printf '%s' "$url" | cksum | cut -d' ' -f1)
for ((i = 1; i <= pages; i++)); do
    page=""
    for ((w = 0; w < 50; w++)); do
        seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
        page+="${words[seed % ${#words[@]}]} "
    done
    printf '%s\n' "$page" > "$out_dir/page-$i.txt"
    echo "fetched $url/page-$i"
    report progress --group pages "$i" "$pages" --status "page-$i"
    sleep 0.02
done
report retval --string "$out_dir"
