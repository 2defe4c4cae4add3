#!/usr/bin/env bash
# Backups through the server's repository proxy (`agent_access: server`) against the same
# backups with direct storage access, in one run: one real `holdfast serve` (no embedded
# agent) and one real `holdfast agent`, two local-disk endpoints that differ only in their
# agent_access, a `cmd:` source reading a file of fresh random bytes each round (so nothing
# deduplicates), rounds interleaved. Reports each mode's job wall time (median and range), the
# ratio, and the peak RSS (VmHWM) of the server and the agent.
# Usage: bench/proxy.sh [MB] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}
MB=${1:-512}
ROUNDS=${2:-3}
cargo build --release -q -p holdfast --bin holdfast
HF=$CARGO_TARGET_DIR/release/holdfast
W=$(mktemp -d)
TOKEN=hf_bench_admin_token_of_the_proxy_bench_0123
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT

HOLDFAST_ADMIN_TOKEN=$TOKEN "$HF" serve --workers 0 --listen 127.0.0.1:0 --data-dir "$W/server" \
  2>"$W/server.log" &
PIDS+=($!)
SERVER_PID=$!
for _ in $(seq 300); do
  URL=$(grep -o 'listening on http://[0-9.:]*' "$W/server.log" | head -1 | cut -d' ' -f3 || true)
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { cat "$W/server.log"; exit 1; }

api() { # METHOD PATH [JSON]
  curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    ${3:+-d "$3"} "$URL/api/v1$2"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

for mode in direct server; do
  api POST /endpoints "{\"name\": \"$mode\", \"kind\": \"local\", \"url\": \"$W/repo-$mode\",
    \"password\": \"bench\", \"prune_schedule\": \"off\", \"agent_access\": \"$mode\"}" >/dev/null
done
api POST /sources "{\"name\": \"data\", \"kind\": \"command\", \"url\": \"cmd:data.bin\",
  \"command\": \"cat $W/data.bin\", \"labels\": {\"site\": \"bench\"}}" >/dev/null
for mode in direct server; do
  api POST /plans "{\"name\": \"via-$mode\", \"source\": \"data\", \"endpoint\": \"$mode\",
    \"schedule\": \"@yearly\", \"retention\": {\"style\": \"gfs\", \"last\": 100}}" >/dev/null
done
ENROL=$(api POST /enrolments '{"agent": "bench", "labels": {"site": "bench"}}' | field '["token"]')
HOLDFAST_TOKEN=$ENROL "$HF" agent --server "$URL" --name bench --label site=bench \
  --allow-commands --poll-secs 1 --credential-file "$W/agent.credential" 2>"$W/agent.log" &
PIDS+=($!)
AGENT_PID=$!

run() { # PLAN -> job duration in seconds
  local id state
  id=$(api POST "/plans/$1/run" | field '["id"]')
  while :; do
    state=$(api GET "/jobs/$id" | field '["state"]')
    case $state in queued | running) sleep 0.2 ;; *) break ;; esac
  done
  [ "$state" = succeeded ] || { api GET "/jobs/$id"; exit 1; }
  api GET "/jobs/$id" | field '["duration_secs"]'
}

echo "machine: $(nproc) cores, $(git rev-parse --short HEAD); $MB MiB of random bytes a round, $ROUNDS rounds"
: >"$W/direct.t"
: >"$W/server.t"
for r in $(seq "$ROUNDS"); do
  head -c "${MB}M" /dev/urandom >"$W/data.bin"
  # Alternate which mode goes first, so that neither always meets a warm page cache.
  if [ $((r % 2)) = 1 ]; then order="direct server"; else order="server direct"; fi
  for mode in $order; do
    run "via-$mode" >>"$W/$mode.t"
  done
done
hwm() { awk '/VmHWM/ {printf "%d MiB", $2 / 1024}' "/proc/$1/status"; }
python3 - "$W" "$MB" <<'EOF'
import statistics, sys
w, mb = sys.argv[1], int(sys.argv[2])
t = {m: [float(x) for x in open(f"{w}/{m}.t").read().split()] for m in ("direct", "server")}
for m, xs in t.items():
    med = statistics.median(xs)
    print(f"{m:>7}: median {med:.2f} s ({min(xs):.2f} to {max(xs):.2f}), {mb / med:.0f} MiB/s")
print(f"through the server / direct: {statistics.median(t['server']) / statistics.median(t['direct']):.2f}x")
EOF
echo "peak RSS: server $(hwm "$SERVER_PID"), agent $(hwm "$AGENT_PID")"
