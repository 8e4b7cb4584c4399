#!/usr/bin/env bash
# Benchmark (not a test): `jobctl tui` over a big history. Makes a config of JOBS jobs
# (layers of 100, each job depending on two of the layer before) and a SQLite database
# holding PER_JOB finished builds of each (100k by default) with a log line each, then:
#   - time to first frame: from starting `jobctl tui` in tmux until the screen shows the
#     loaded jobs (the header's job count appears only once the database was read), less
#     the same harness showing a plain `echo` (tmux's own start and polling);
#   - idle CPU: the dashboard's user+system time over IDLE seconds with nothing changing.
#
#   bash bench/tui.sh                      # 10k jobs, 100k builds, 3 runs, 10 s idle
#   JOBS=1000 PER_JOB=5 RUNS=5 IDLE=5 bash bench/tui.sh
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-10000}
PER_JOB=${PER_JOB:-10}
RUNS=${RUNS:-3}
IDLE=${IDLE:-10}
command -v tmux >/dev/null || { echo "bench/tui.sh needs tmux (apt-get install tmux)"; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/jobctl
work=$(mktemp -d)
socket=jobctl-bench-$$
cleanup() { tmux -L "$socket" kill-server 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

python3 - "$JOBS" > jobs.yaml.j2 <<'PY'
import sys
n = int(sys.argv[1])
print("storage: sqlite://state.db\njobs:")
for i in range(n):
    layer, at = divmod(i, 100)
    deps = "" if layer == 0 else ", dependencies: [j%05d, j%05d]" % ((layer - 1) * 100 + at, (layer - 1) * 100 + (at + 1) % 100)
    print("  - {id: j%05d, title: \"job %d of layer %d\", run: 'true'%s}" % (i, i, layer, deps))
# A job that reports progress ten times a second for five seconds, logging each step.
print("""  - id: pulse
    run: |
      for i in $(seq 50); do
        echo "{\\"type\\": \\"progress\\", \\"current\\": $i, \\"total\\": 50}" >&3
        echo "step $i"
        sleep 0.1
      done""")
PY
"$bin" install > /dev/null

python3 - "$JOBS" "$PER_JOB" <<'PY'
import sqlite3, sys, datetime
n, per = int(sys.argv[1]), int(sys.argv[2])
db = sqlite3.connect("state.db")
t0 = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
def ts(s):
    return (t0 + datetime.timedelta(seconds=s)).isoformat()
builds, logs = [], []
bid = 0
for round_ in range(per):
    for i in range(n):
        bid += 1
        start = round_ * 86400 + i
        status = "failed" if (i * 7 + round_) % 97 == 0 else "successful"
        builds.append((bid, "j%05d" % i, status, ts(start), ts(start), ts(start + 1),
                       '{"id": "j%05d"}' % i, "h", "bench", 1))
        logs.append((bid, ts(start), 20, "stdout", "build %d of j%05d" % (bid, i)))
db.executemany("INSERT INTO builds (id, job_id, status, created_at, started_at, finished_at,"
               " config, config_hash, host, pid) VALUES (?,?,?,?,?,?,?,?,?,?)", builds)
db.executemany("INSERT INTO logs (build_id, at, level, stream, message) VALUES (?,?,?,?,?)", logs)
db.commit()
print("database: %d jobs, %d builds, %d log lines" % (n, len(builds), len(logs)))
PY

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
now_ms() { date +%s%3N; }

# Milliseconds from starting `$1` in a fresh tmux session until the screen holds `$2`.
until_shown() {
    local start
    tmux -L "$socket" kill-server 2>/dev/null || true
    start=$(now_ms)
    tmux -L "$socket" -f /dev/null new-session -d -x 120 -y 40 -c "$work" "$1"
    until tmux -L "$socket" capture-pane -p 2>/dev/null | grep -q "$2"; do :; done
    echo $(($(now_ms) - start))
}

: > harness.t; : > frame.t
for ((r = 0; r < RUNS; r++)); do
    until_shown "echo harness-ready; sleep 30" "harness-ready" >> harness.t
    until_shown "$bin tui" "$((JOBS + 1)) jobs" >> frame.t
done
harness=$(median < harness.t)
frame=$(median < frame.t)
echo "first frame: ${frame} ms median of $RUNS (harness alone: ${harness} ms; jobctl: $((frame - harness)) ms)"

pid=$(tmux -L "$socket" list-panes -F '#{pane_pid}')
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks)
sleep "$IDLE"
after=$(ticks)
echo "idle CPU over ${IDLE} s: $(awk -v t=$((after - before)) -v hz="$hz" -v s="$IDLE" 'BEGIN { printf "%.2f%%", 100 * t / hz / s }') ($((after - before)) ticks of 1/${hz} s)"
echo "RSS: $(awk '/VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$pid/status")"

# While another process builds `pulse` (5 s of progress and log lines), the dashboard
# reads again at each change.
before=$(ticks); start=$(now_ms)
"$bin" build pulse --progress plain > /dev/null
after=$(ticks); took=$(($(now_ms) - start))
echo "CPU while a build reports 10 times a second: $(awk -v t=$((after - before)) -v hz="$hz" -v ms="$took" 'BEGIN { printf "%.1f%%", 100 * t / hz / (ms / 1000) }') over ${took} ms"
echo "RSS after: $(awk '/VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$pid/status")"
