#!/usr/bin/env bash
# Restore drill benchmark: what a drill costs next to the restore it proves, on one PostgreSQL
# database, in one run, interleaved so machine noise hits every command alike.
#
#   bench/drill.sh [PGBENCH_SCALE] [ROUNDS]      (defaults: scale 50, about 750 MB of tables; 3)
#
# One backup, then each round: `holdfast restore --jobs 2` into the machine's PostgreSQL (the
# recovery a drill stands for), `holdfast verify` (a throwaway cluster: initdb, the same
# restore, every check, removal) and `holdfast verify --check-only` (every byte read back, no
# restore). Prints wall-time medians, the drill's ratio to the restore, the drill's own split
# (throwaway server start, restore with its phases, checks), and peak memory: Holdfast's own
# (VmHWM of the holdfast process) and the largest process of the tree (`/usr/bin/time`, which
# for a drill is usually the throwaway server's). Not part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-50}
ROUNDS=${2:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}
scripts/services >/dev/null
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
cargo build --release -q -p holdfast
HF=$CARGO_TARGET_DIR/release/holdfast
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PGHOST=127.0.0.1 PGUSER=postgres HOLDFAST_REPO_PASSWORD=bench
DB=holdfast_drill_bench
WORK=${BENCH_DIR:-/tmp/holdfast-drill-bench}
rm -rf "$WORK" && mkdir -p "$WORK/drills"
SRC="postgres://postgres@127.0.0.1:5432/$DB"

echo "building $DB: pgbench scale $SCALE ..." >&2
dropdb --if-exists --force "$DB"; createdb "$DB"
"$PGBIN/pgbench" -i -q -s "$SCALE" "$DB" >/dev/null 2>&1
psql -q -d "$DB" -c "VACUUM ANALYZE"
"$HF" init -q --repo "$WORK/repo"
"$HF" backup -q "$SRC" --repo "$WORK/repo"
TABLE_MB=$(psql -A -t -d "$DB" -c "SELECT (sum(pg_table_size(oid)) / 1000000)::bigint FROM pg_class WHERE relname LIKE 'pgbench_%' AND relkind = 'r'")

# run NAME CMD...: wall seconds, peak RSS of the largest process of the tree (KiB) and the
# holdfast process's own VmHWM (KiB, sampled every 50 ms; a high-water mark, so the last sample
# holds the peak but for growth in the final 50 ms), appended to $WORK/NAME.
run() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time.tmp" "$@" >"$WORK/out.tmp" 2>"$WORK/err.tmp" &
  local timer=$! pid="" hwm=0 h
  while kill -0 "$timer" 2>/dev/null; do
    [ -n "$pid" ] || pid=$(pgrep -P "$timer" -x holdfast || true)
    if [ -n "$pid" ] && h=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$h" ]; then
      hwm=$h
    fi
    sleep 0.05
  done
  wait "$timer" || { cat "$WORK/err.tmp" >&2; exit 1; }
  echo "$(cat "$WORK/time.tmp") $hwm" >> "$WORK/$name"
}

for r in $(seq 1 "$ROUNDS"); do
  dropdb --if-exists --force r_hf
  run restore "$HF" restore -q latest "postgres://postgres@127.0.0.1:5432/r_hf" --create --repo "$WORK/repo" --jobs 2
  run drill "$HF" verify latest --repo "$WORK/repo" --jobs 2 --scratch-dir "$WORK/drills" --json
  cp "$WORK/out.tmp" "$WORK/drill-$r.json"
  run check "$HF" verify latest --repo "$WORK/repo" --check-only
  echo "round $r done" >&2
done
dropdb --if-exists --force r_hf

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
col() { cut -d' ' -f"$2" "$WORK/$1" | median; }
peak() { cut -d' ' -f"$2" "$WORK/$1" | sort -n | tail -1; }
BASE=$(col restore 1)
echo
echo "== restore drill, PostgreSQL pgbench scale $SCALE ($TABLE_MB MB of tables), median of $ROUNDS"
printf "%-40s %8s %7s %18s %18s\n" "" "wall" "ratio" "holdfast peak RSS" "largest process"
for n in restore drill check; do
  case $n in
    restore) label="holdfast restore --jobs 2";;
    drill) label="holdfast verify (throwaway cluster)";;
    check) label="holdfast verify --check-only";;
  esac
  w=$(col "$n" 1)
  printf "%-40s %7.2fs %6.2fx %14s MiB %14s MiB\n" "$label" "$w" "$(echo "$w / $BASE" | bc -l)" \
    "$(( $(peak "$n" 3) / 1024 ))" "$(( $(peak "$n" 2) / 1024 ))"
done
echo
echo "== where a drill's time goes (median of $ROUNDS)"
python3 - "$WORK" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
reports = [json.load(open(f"{work}/drill-{r}.json")) for r in range(1, rounds + 1)]
failed = [r["summary"] if "summary" in r else r for r in reports if not r["passed"]]
if failed:
    sys.exit(f"a drill failed: {failed}")
med = lambda xs: statistics.median(xs)
t = [r["timings"] for r in reports]
print(f"{'throwaway server start (initdb, start)':<40} {med([x['scratch_start_secs'] for x in t]):7.2f}s")
print(f"{'restore (the RTO)':<40} {med([x['restore_secs'] for x in t]):7.2f}s")
for i, (phase, _) in enumerate(t[0].get("phases", [])):
    print(f"{'  ' + phase:<40} {med([x['phases'][i][1] for x in t]):7.2f}s")
print(f"{'checks (rows, objects, SQL)':<40} {med([x['checks_secs'] for x in t]):7.2f}s")
print(f"{'whole drill, as the report counts it':<40} {med([x['total_secs'] for x in t]):7.2f}s")
print(f"checks per drill: {len(reports[0]['checks'])}, all passed")
PY
left=$(find "$WORK/drills" -mindepth 1 | wc -l)
echo "left in the drill directory afterwards: $left entries"
dropdb --if-exists --force "$DB"
