#!/usr/bin/env bash
# Benchmark (not a test): the same DAGs of jobs that run `true`, through jobctl (SQLite
# recording every build), ninja -j2 and make -j2, in turns; medians and ratios to ninja.
# vs_ninja is the ratio of the medians; pairs is the median of each turn's own ratio
# (jobctl's run over the ninja run beside it) with its quartiles: on a busy or virtual
# machine run times drift together, so the pairs say more than a few medians.
#
#   bash bench/build.sh                  # wide, chain, layered; 1000 and 10000 jobs
#   SIZES=1000 RUNS=5 bash bench/build.sh
# Needs ninja (Debian: ninja-build) and make.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"1000 10000"}
RUNS=${RUNS:-3}
J=${J:-2}
command -v ninja >/dev/null || { echo "install ninja (apt-get install ninja-build)"; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/jobctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

gen() { # shape n dir
    python3 - "$1" "$2" "$3" <<'PY'
import sys
shape, n, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def deps(i):
    if shape == "wide": return []
    if shape == "chain": return [i - 1] if i else []
    return [i - 100] if i >= 100 else []       # layered: layers of 100
with open(f"{d}/jobs.yaml.j2", "w") as f:
    f.write("jobs:\n")
    for i in range(n):
        ds = deps(i)
        f.write(f"  - {{id: j{i}, run: 'true'" + (f", dependencies: [{', '.join('j%d' % x for x in ds)}]" if ds else "") + "}\n")
with open(f"{d}/Makefile", "w") as f:
    f.write(".PHONY: all " + " ".join(f"j{i}" for i in range(n)) + "\nall: " + " ".join(f"j{i}" for i in range(n)) + "\n")
    for i in range(n):
        f.write(f"j{i}: " + " ".join(f"j{x}" for x in deps(i)) + "\n\t@true\n")
with open(f"{d}/build.ninja", "w") as f:
    f.write("rule t\n  command = true\n")
    for i in range(n):
        ds = deps(i)
        f.write(f"build j{i}: t" + (" || " + " ".join(f"j{x}" for x in ds) if ds else "") + "\n")
PY
}

now() { date +%s.%N; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# median (first quartile–third quartile), of a column of numbers
quartiles() {
    sort -g | awk '{ a[NR] = $1 } END {
        printf "%.2f (%.2f–%.2f)", a[int((NR + 1) / 2)], a[int((NR + 3) / 4)], a[int((3 * NR + 3) / 4)] }'
}

printf '%-8s %6s %10s %10s %10s %9s %9s %12s  %s\n' shape jobs jobctl_s ninja_s make_s vs_ninja vs_make jobctl_rss_MB pairs
for n in $SIZES; do
    for shape in wide chain layered; do
        d="$work/$shape-$n"; mkdir -p "$d"; gen "$shape" "$n" "$d"
        : > "$d/t_jobctl"; : > "$d/t_ninja"; : > "$d/t_make"; : > "$d/t_pair"
        for ((r = 0; r < RUNS; r++)); do
            rm -rf "$d/.jobctl" "$d/.ninja_log"
            s=$(now); (cd "$d" && "$bin" build --all -j "$J" > /dev/null); e=$(now)
            echo "$e - $s" | bc -l >> "$d/t_jobctl"
            s=$(now); (cd "$d" && ninja -j "$J" > /dev/null); e=$(now)
            echo "$e - $s" | bc -l >> "$d/t_ninja"
            echo "$(tail -n 1 "$d/t_jobctl") / $(tail -n 1 "$d/t_ninja")" | bc -l >> "$d/t_pair"
            s=$(now); (cd "$d" && make -s -j "$J" > /dev/null); e=$(now)
            echo "$e - $s" | bc -l >> "$d/t_make"
        done
        rm -rf "$d/.jobctl"
        rss=$(cd "$d" && /usr/bin/time -f '%M' "$bin" build --all -j "$J" 2>&1 >/dev/null | tail -n 1)
        tj=$(median < "$d/t_jobctl"); tn=$(median < "$d/t_ninja"); tm=$(median < "$d/t_make")
        printf '%-8s %6s %10.2f %10.2f %10.2f %9.2f %9.2f %12.1f  %s\n' "$shape" "$n" "$tj" "$tn" "$tm" \
            "$(echo "$tj / $tn" | bc -l)" "$(echo "$tj / $tm" | bc -l)" "$(echo "$rss / 1024" | bc -l)" \
            "$(quartiles < "$d/t_pair")"
    done
done
