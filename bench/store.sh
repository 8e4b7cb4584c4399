#!/usr/bin/env bash
# Benchmark (not a test): storage write rates and job-status time, SQLite and PostgreSQL.
#   bash bench/store.sh [sqlite|postgres]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench store -- "$@"
