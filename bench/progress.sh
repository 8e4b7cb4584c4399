#!/usr/bin/env bash
# Benchmark (not a test): does reporting progress slow a job down? A Python job sends
# progress lines on its channel at a set pace (RATE a second, for SECS seconds), and
# times itself; the same job runs alone (its fd 3 drained by `cat`) and under
# `jobctl build` (SQLite recording). Then the same job sending as fast as it can.
#
#   bash bench/progress.sh                # 100k a second for 2 s, 3 runs each
#   RATE=200000 SECS=3 RUNS=5 bash bench/progress.sh
#   BIN=/tmp/jobctl-before bash bench/progress.sh   # another build, for an A/B
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-100000}
SECS=${SECS:-2}
RUNS=${RUNS:-3}
cargo build --release --quiet
bin=${BIN:-$PWD/target/release/jobctl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/emit.py" <<'PY'
import os, sys, time
rate, secs, out_file = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
n = int(rate * secs) if rate > 0 else 1_000_000
ch = os.fdopen(int(os.environ.get("JOBCTL_CHANNEL", "3")), "w", buffering=1 << 16)
start = time.perf_counter()
for i in range(n):
    ch.write('{"type":"progress","group":["rows"],"current":%d,"total":%d}\n' % (i + 1, n))
    if rate > 0 and i % 1000 == 999:
        ch.flush()
        ahead = (i + 1) / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
ch.flush()
open(out_file, "w").write("%f %d\n" % (time.perf_counter() - start, n))
PY
printf 'jobs:\n  - {id: paced, run: python3 emit.py %s %s paced.txt}\n  - {id: flat_out, run: python3 emit.py 0 0 flat_out.txt}\n' \
    "$RATE" "$SECS" > "$work/jobs.yaml.j2"
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
cd "$work"
for shape in paced flat_out; do
    if [ "$shape" = paced ]; then args="$RATE $SECS"; else args="0 0"; fi
    : > alone.t; : > jobctl.t; : > rss.t
    for ((r = 0; r < RUNS; r++)); do
        # shellcheck disable=SC2086
        python3 emit.py $args "$shape.txt" 3>&1 | cat > /dev/null
        cut -d' ' -f1 "$shape.txt" >> alone.t
        rm -rf .jobctl
        /usr/bin/time -f '%M' -o rss.one "$bin" build "$shape" --progress plain > /dev/null
        cut -d' ' -f1 "$shape.txt" >> jobctl.t
        cat rss.one >> rss.t
    done
    n=$(cut -d' ' -f2 "$shape.txt")
    a=$(median < alone.t); j=$(median < jobctl.t); m=$(median < rss.t)
    printf '%-9s %8s updates  alone %.3fs  under jobctl %.3fs  slowdown %+.1f%%  jobctl peak RSS %.0f MB\n' \
        "$shape" "$n" "$a" "$j" "$(echo "($j / $a - 1) * 100" | bc -l)" "$(echo "$m / 1024" | bc -l)"
done
