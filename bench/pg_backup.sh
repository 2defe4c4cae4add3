#!/usr/bin/env bash
# Backup benchmark: Holdfast against the bare dump tool and restic, on one PostgreSQL database
# of configurable size, in one run, interleaved so machine noise hits every tool alike.
#
#   bench/pg_backup.sh [DUMP_MB] [ROUNDS]      (defaults: about 1000 MB of dump, 3 rounds)
#
# Prints wall-time ratios against `pg_dump > /dev/null`, dump MB/s, CPU seconds (user + system,
# the dump tool's included), repository bytes and peak RSS, for `pg_dump | zstd -3 -T0`,
# restic, borg (zstd level 3) and Holdfast (BENCH_BACKUP_ONLY=1 stops here); then the bytes a
# night's change adds, (a) realistic and (b) worst case; then restore time
# against `psql < plain.sql`; then the same backup figures for MariaDB. Not part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
DUMP_MB=${1:-1000}
ROUNDS=${2:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}
scripts/services >/dev/null
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
command -v borg >/dev/null || { apt-get install -y -qq borgbackup >/dev/null; }
command -v zstd >/dev/null || { apt-get install -y -qq zstd >/dev/null; }
cargo build --release -q -p holdfast
HF=$CARGO_TARGET_DIR/release/holdfast
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PGHOST=127.0.0.1 PGUSER=postgres
export HOLDFAST_REPO_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
DB=holdfast_bench
WORK=${BENCH_DIR:-/tmp/holdfast-bench}
rm -rf "$WORK" && mkdir -p "$WORK"

# ---- the data set: pgbench + text/JSON documents + append-only events + static lookups ----
# pgbench scale 1 dumps to ~9.5 MB; documents and events add about as much again.
SCALE=$(( DUMP_MB * 55 / 100 / 9 )); [ "$SCALE" -ge 1 ] || SCALE=1
ROWS=$(( DUMP_MB * 1000 ))   # ~230 bytes a document row, ~90 an event row
if [ -n "${BENCH_REUSE_DB:-}" ] && psql -d "$DB" -c "SELECT 1" >/dev/null 2>&1; then
  echo "reusing $DB (BENCH_REUSE_DB is set)" >&2
else
echo "building $DB: pgbench scale $SCALE, $ROWS documents, $((ROWS * 2)) events ..." >&2
dropdb --if-exists --force "$DB"; createdb "$DB"
"$PGBIN/pgbench" -i -q -s "$SCALE" "$DB" >/dev/null 2>&1
psql -q -d "$DB" <<SQL
CREATE TABLE documents (id bigserial PRIMARY KEY, title text, body text, meta jsonb);
INSERT INTO documents (title, body, meta)
  SELECT 'doc ' || g, repeat(md5(g::text), 4) || ' lorem ipsum dolor sit amet',
         jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b', g % 17), 'ok', g % 2 = 0)
  FROM generate_series(1, $ROWS) g;
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz, kind text, payload jsonb);
INSERT INTO events (at, kind, payload)
  SELECT now() - (($((ROWS * 2)) - g) || ' seconds')::interval, 'kind' || (g % 7), jsonb_build_object('v', g)
  FROM generate_series(1, $((ROWS * 2))) g;
CREATE INDEX events_at ON events (at);
CREATE TABLE countries (code text PRIMARY KEY, name text);
INSERT INTO countries SELECT 'c' || g, 'Country ' || g FROM generate_series(1, 250) g;
CREATE TABLE currencies (code text PRIMARY KEY, rate numeric);
INSERT INTO currencies SELECT 'x' || g, g / 7.0 FROM generate_series(1, 150) g;
VACUUM ANALYZE;
SQL
fi

# run NAME CMD...: wall seconds, peak RSS (KiB) and CPU seconds of CMD (its children
# included), appended to $WORK/NAME.
run() {
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.tmp" "$@" >/dev/null 2>"$WORK/err.tmp" || { cat "$WORK/err.tmp" >&2; exit 1; }
  cat "$WORK/time.tmp" >> "$WORK/$name"
}
pg_dump_null() { "$PGBIN/pg_dump" "$DB" >/dev/null; }
restic_stdin() { rm -rf "$WORK/restic-repo"; restic init -q -r "$WORK/restic-repo" >/dev/null;
  "$PGBIN/pg_dump" "$DB" | /usr/bin/time -f "%M" -o "$WORK/rss.tmp" restic backup -q -r "$WORK/restic-repo" --stdin --stdin-filename "$DB.sql"; }
zstd_null() { "$PGBIN/pg_dump" "$DB" | zstd -q -3 -T0 > "$WORK/dump.zst"; }
borg_stdin() { rm -rf "$WORK/borg-repo"; borg init -e repokey "$WORK/borg-repo";
  "$PGBIN/pg_dump" "$DB" | /usr/bin/time -f "%M" -o "$WORK/rss.tmp" borg create -C zstd,3 "$WORK/borg-repo::a" - ; }
holdfast_backup() { rm -rf "$WORK/hf-repo"; "$HF" init -q --repo "$WORK/hf-repo"; "$HF" backup -q "postgres://postgres@127.0.0.1:5432/$DB" --repo "$WORK/hf-repo"; }
export -f pg_dump_null zstd_null restic_stdin borg_stdin holdfast_backup; export PGBIN DB WORK HF

DUMP_BYTES=$("$PGBIN/pg_dump" "$DB" | wc -c)
echo "dump size: $((DUMP_BYTES / 1000000)) MB; $ROUNDS interleaved rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
  run pg_dump bash -c pg_dump_null
  run zstd bash -c zstd_null
  run restic bash -c restic_stdin; echo "$(cat "$WORK/rss.tmp")" >> "$WORK/restic.rss"
  run borg bash -c borg_stdin; echo "$(cat "$WORK/rss.tmp")" >> "$WORK/borg.rss"
  run holdfast bash -c holdfast_backup
  echo "round $r done" >&2
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
BASE=$(cut -d' ' -f1 "$WORK/pg_dump" | median)
report() { # name rss-file label [extra]
  local wall; wall=$(cut -d' ' -f1 "$WORK/$1" | median)
  local cpu; cpu=$(awk '{print $3 + $4}' "$WORK/$1" | median)
  local rss; rss=$( (cut -d' ' -f2 "$WORK/$1"; if [ -n "${2:-}" ]; then cat "$WORK/$2"; fi) | sort -n | tail -1)
  printf "%-28s %8.2fs %7.2fx %9.1f MB/s %7.2f CPU s %6s MiB peak RSS %s\n" "$3" "$wall" "$(echo "$wall / $BASE" | bc -l)" \
    "$(echo "$DUMP_BYTES / 1000000 / $wall" | bc -l)" "$cpu" "$((rss / 1024))" "${4:-}"
}
echo
echo "== PostgreSQL backup, $((DUMP_BYTES / 1000000)) MB dump, median of $ROUNDS"
mb() { echo "$(( $(du -sb "$1" | cut -f1) / 1000000 )) MB"; }
report pg_dump "" "pg_dump > /dev/null"
report zstd "" "pg_dump | zstd -3 -T0" "$(mb "$WORK/dump.zst")"
report restic restic.rss "pg_dump | restic --stdin" "repo $(mb "$WORK/restic-repo")"
report borg borg.rss "pg_dump | borg create -C zstd,3" "repo $(mb "$WORK/borg-repo")"
report holdfast "" "holdfast backup" "repo $(mb "$WORK/hf-repo")"
printf "holdfast repository / zstd -3 of the dump: %.3f\n" "$(echo "$(du -sb "$WORK/hf-repo" | cut -f1) / $(du -sb "$WORK/dump.zst" | cut -f1)" | bc -l)"
[ -z "${BENCH_BACKUP_ONLY:-}" ] || exit 0

# ---- a night's change: bytes added to the repository, as % of the first backup ----
FIRST=$(du -sb "$WORK/hf-repo" | cut -f1)
psql -q -d "$DB" <<SQL
INSERT INTO events (at, kind, payload)
  SELECT now() + (g || ' seconds')::interval, 'kind' || (g % 7), jsonb_build_object('v', g)
  FROM generate_series(1, $((ROWS * 2 / 100))) g;
UPDATE events SET kind = 'updated' WHERE id > (SELECT max(id) - $((ROWS * 2 / 1000)) FROM events);
SQL
"$HF" backup -q "postgres://postgres@127.0.0.1:5432/$DB" --repo "$WORK/hf-repo"
AFTER_A=$(du -sb "$WORK/hf-repo" | cut -f1)
psql -q -d "$DB" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE random() < 0.01"
"$HF" backup -q "postgres://postgres@127.0.0.1:5432/$DB" --repo "$WORK/hf-repo"
AFTER_B=$(du -sb "$WORK/hf-repo" | cut -f1)
echo
echo "== a night's change, holdfast (first backup: $((FIRST / 1000000)) MB in the repository)"
printf "(a) 1%% new events + newest rows updated: +%s MB = %.2f%%\n" "$(( (AFTER_A - FIRST) / 1000000 ))" "$(echo "100 * ($AFTER_A - $FIRST) / $FIRST" | bc -l)"
printf "(b) 1%% of pgbench_accounts updated at random: +%s MB = %.2f%%\n" "$(( (AFTER_B - AFTER_A) / 1000000 ))" "$(echo "100 * ($AFTER_B - $AFTER_A) / $FIRST" | bc -l)"

# ---- restore: holdfast (parallel tables) against psql < plain.sql ----
"$PGBIN/pg_dump" "$DB" > "$WORK/plain.sql"
restore_psql() { dropdb --if-exists --force r_psql; createdb r_psql; psql -q -X -v ON_ERROR_STOP=1 -d r_psql < "$WORK/plain.sql" >/dev/null; }
restore_hf() { dropdb --if-exists --force r_hf; "$HF" restore -q latest "postgres://postgres@127.0.0.1:5432/r_hf" --create --repo "$WORK/hf-repo" --jobs 2; }
export -f restore_psql restore_hf
run restore_psql bash -c restore_psql
run restore_hf bash -c restore_hf
P=$(cut -d' ' -f1 "$WORK/restore_psql"); H=$(cut -d' ' -f1 "$WORK/restore_hf")
echo
echo "== restore"
printf "psql < plain.sql %8.2fs\nholdfast restore %8.2fs  %.2fx  peak RSS %s MiB\n" "$P" "$H" "$(echo "$H / $P" | bc -l)" "$(( $(cut -d' ' -f2 "$WORK/restore_hf") / 1024 ))"
dropdb --if-exists --force r_psql; dropdb --if-exists --force r_hf

# ---- MariaDB: the same database, single stream ----
mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
"$PGBIN/psql" -q -A -t -d "$DB" -c "COPY (SELECT id, title, body, meta::text FROM documents) TO STDOUT" > "$WORK/docs.tsv"
mariadb -h 127.0.0.1 -u root "$DB" -e "CREATE TABLE documents (id BIGINT PRIMARY KEY, title TEXT, body TEXT, meta JSON);
  LOAD DATA LOCAL INFILE '$WORK/docs.tsv' INTO TABLE documents" --local-infile=1
rm -f "$WORK/docs.tsv" "$WORK/mariadb-dump" "$WORK/hf-my"
for r in $(seq 1 "$ROUNDS"); do
  run mariadb-dump bash -c "mariadb-dump -h 127.0.0.1 -u root --single-transaction $DB > /dev/null"
  run hf-my bash -c "rm -rf $WORK/hf-my-repo; $HF init -q --repo $WORK/hf-my-repo; $HF backup -q mysql://root@127.0.0.1:3306/$DB --repo $WORK/hf-my-repo"
done
MY_BYTES=$(mariadb-dump -h 127.0.0.1 -u root --single-transaction "$DB" | wc -c)
BASE=$(cut -d' ' -f1 "$WORK/mariadb-dump" | median); DUMP_BYTES=$MY_BYTES
echo
echo "== MariaDB backup, $((MY_BYTES / 1000000)) MB dump, median of $ROUNDS"
report mariadb-dump "" "mariadb-dump > /dev/null"
report hf-my "" "holdfast backup"
mariadb -h 127.0.0.1 -u root -e "DROP DATABASE $DB"
