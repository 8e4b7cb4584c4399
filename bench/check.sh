#!/usr/bin/env bash
# Benchmark (not a test): `jobctl check` on generated templated configs of 10k and 100k
# jobs (a Jinja loop, layered dependencies: each job depends on two of the layer before).
# Prints wall time (median of RUNS) and peak RSS for each size.
#
#   bash bench/check.sh            # 10k and 100k
#   SIZES="1000 10000" RUNS=3 bash bench/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"10000 100000"}
RUNS=${RUNS:-5}
cargo build --release --quiet
bin=$PWD/target/release/jobctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/jobs.yaml.j2" <<'TEMPLATE'
{% set n = jobs | int %}
{% set width = 100 %}
defaults:
  timeout: 1h
jobs:
{% for i in range(n) %}
{% set layer = i // width %}
  - id: job_{{ i }}
    title: "Generated job {{ i }} (layer {{ layer }})"
    run: ./work.sh
    args: [{{ i }}, "part-{{ i % 17 }}"]
    kwargs:
      part: {{ i }}
{% if layer > 0 %}
      upstream: !retval job_{{ i - width }}
    dependencies: [job_{{ (layer - 1) * width + (i * 7) % width }}]
{% endif %}
{% endfor %}
TEMPLATE

peak_rss_mb() { # command... ; prints peak RSS in MB of the command
    /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -n 1 | awk '{ printf "%.1f", $1 / 1024 }'
}

printf '%-8s %10s %10s %12s\n' jobs median_s min_s peak_rss_MB
for n in $SIZES; do
    times=()
    for ((r = 0; r < RUNS; r++)); do
        start=$(date +%s.%N)
        "$bin" -c "$work/jobs.yaml.j2" --var "jobs=$n" check > /dev/null
        end=$(date +%s.%N)
        times+=("$(echo "$end - $start" | bc -l)")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -g)
    median=$(echo "$sorted" | sed -n "$(( (RUNS + 1) / 2 ))p")
    min=$(echo "$sorted" | head -n 1)
    rss=$(peak_rss_mb "$bin" -c "$work/jobs.yaml.j2" --var "jobs=$n" check)
    printf '%-8s %10.3f %10.3f %12s\n' "$n" "$median" "$min" "$rss"
done
