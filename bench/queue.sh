#!/usr/bin/env bash
# Benchmark (not a test): the queue on the real PostgreSQL.
#  1. The same DAGs of `true` jobs through `build --queue --wait` with 2 workers (one slot
#     each) against a local `build -j 2` on the same database: ratio queue / local.
#  2. No-op function builds (`function: noop`, wide) through the queue with 2 workers
#     of FSLOTS slots each: builds per second, enqueue to last end.
#  3. Latency from enqueue to start on an idle worker: p50 and p99 of LAT_RUNS single
#     builds (started_at - created_at, as the store records them).
#
#   bash bench/queue.sh                      # 1000 jobs, 5 turns
#   N=10000 RUNS=3 bash bench/queue.sh
# Needs PostgreSQL (JOBCTL_BENCH_PG, default postgresql://postgres@127.0.0.1:5432) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
RUNS=${RUNS:-5}
FN=${FN:-10000}
FSLOTS=${FSLOTS:-64}
LAT_RUNS=${LAT_RUNS:-200}
PG=${JOBCTL_BENCH_PG:-postgresql://postgres@127.0.0.1:5432}
DB=jobctl_bench_queue
cargo build --release --quiet
bin=$PWD/target/release/jobctl
work=$(mktemp -d)
workers=()
cleanup() {
    for w in "${workers[@]}"; do kill -TERM "$w" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

fresh() { # a new, installed database
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    psql -q "$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null
    (cd "$1" && "$bin" install >/dev/null)
}
start_workers() { # dir slots
    workers=()
    for name in w1 w2; do
        (cd "$1" && exec "$bin" worker -j "$2" --name "$name" >/dev/null 2>&1) &
        workers+=($!)
    done
}
stop_workers() {
    for w in "${workers[@]}"; do kill -TERM "$w" 2>/dev/null || true; done
    for w in "${workers[@]}"; do wait "$w" 2>/dev/null || true; done
    workers=()
}
gen() { # shape n dir kind
    python3 - "$1" "$2" "$3" "$4" "$PG/$DB" <<'PY'
import sys
shape, n, d, kind, url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def deps(i):
    if shape == "wide": return []
    if shape == "chain": return [i - 1] if i else []
    return [i - 100] if i >= 100 else []
run = "run: 'true'" if kind == "true" else "function: noop"
with open(f"{d}/jobs.yaml.j2", "w") as f:
    f.write(f"storage: {url}\njobs:\n")
    for i in range(n):
        ds = deps(i)
        f.write(f"  - {{id: j{i}, {run}" + (f", dependencies: [{', '.join('j%d' % x for x in ds)}]" if ds else "") + "}\n")
PY
}
now() { date +%s.%N; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "1. build --queue --wait with 2 workers vs local build -j 2, $N true jobs, $RUNS turns (median)"
printf '%-8s %10s %10s %8s\n' shape local_s queue_s ratio
for shape in wide chain layered; do
    d="$work/$shape"; mkdir -p "$d"; gen "$shape" "$N" "$d" true
    : > "$d/tl"; : > "$d/tq"
    for ((r = 0; r < RUNS; r++)); do
        fresh "$d"
        s=$(now); (cd "$d" && "$bin" build --all -j 2 --progress plain >/dev/null); e=$(now)
        echo "$e - $s" | bc -l >> "$d/tl"
        fresh "$d"; start_workers "$d" 1
        s=$(now); (cd "$d" && "$bin" build --all --queue --wait --progress plain >/dev/null); e=$(now)
        echo "$e - $s" | bc -l >> "$d/tq"
        stop_workers
    done
    tl=$(median < "$d/tl"); tq=$(median < "$d/tq")
    printf '%-8s %10.2f %10.2f %8.2f\n' "$shape" "$tl" "$tq" "$(echo "$tq / $tl" | bc -l)"
done

echo "2. $FN no-op function builds (wide) through the queue, 2 workers with $FSLOTS slots each"
d="$work/fn"; mkdir -p "$d"; gen wide "$FN" "$d" noop
fresh "$d"; start_workers "$d" "$FSLOTS"
s=$(now); (cd "$d" && "$bin" build --all --queue --wait --progress plain >/dev/null); e=$(now)
stop_workers
t=$(echo "$e - $s" | bc -l)
printf 'builds/s (enqueue to last end): %.0f  (%.2f s)\n' "$(echo "$FN / $t" | bc -l)" "$t"

echo "3. enqueue to start on an idle worker, $LAT_RUNS builds"
d="$work/lat"; mkdir -p "$d"; gen wide 1 "$d" noop
fresh "$d"; start_workers "$d" 1
sleep 1
for ((r = 0; r < LAT_RUNS; r++)); do
    (cd "$d" && "$bin" build j0 --force --queue --no-dedup >/dev/null)
    sleep 0.02
done
sleep 1
stop_workers
psql -qAt "$PG/$DB" -c "SELECT EXTRACT(EPOCH FROM started_at - created_at) * 1000 FROM builds WHERE started_at IS NOT NULL" \
    | sort -g | awk '{ a[NR] = $1 } END { printf "p50 %.1f ms, p99 %.1f ms (%d builds)\n", a[int(NR * 0.5 + 0.5)], a[int(NR * 0.99 + 0.5)], NR }'
