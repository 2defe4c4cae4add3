#!/usr/bin/env bash
# Server at scale: 10,000 plans and 100 simulated agents. Reports scheduler tick times (injected
# clock), API GET p50/p99 on loopback under the agents' polling, and the server's peak RSS.
# Usage: bench/server.sh [PLANS] [AGENTS] [SECONDS] [postgres|sqlite] [JOBS]
#   JOBS: fill the store with at least this many finished jobs first (the UI's pages are
#   measured on them), e.g. `bench/server.sh 1000 10 5 sqlite 100000`.
#   With `postgres` as the fourth argument the metadata lives in a fresh database on the
#   machine's PostgreSQL (127.0.0.1:5432) instead of SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}
PLANS=${1:-10000}
AGENTS=${2:-100}
SECONDS_=${3:-20}
cargo build --release -q -p holdfast --bin holdfast
cargo build --release -q -p holdfast-server --example server_bench
ARGS=(--holdfast "$CARGO_TARGET_DIR/release/holdfast" --plans "$PLANS" --agents "$AGENTS" --seconds "$SECONDS_" --jobs "${5:-0}")
if [ "${4:-}" = postgres ]; then
  DB=hf_bench_$$
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
  trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
  ARGS+=(--database-url "postgres://postgres@127.0.0.1:5432/$DB")
fi
echo "machine: $(nproc) cores, $(git rev-parse --short HEAD)"
"$CARGO_TARGET_DIR/release/examples/server_bench" "${ARGS[@]}"
