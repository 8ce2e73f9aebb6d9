#!/usr/bin/env bash
# make replica-demo: a primary and a hot standby on this machine (two clusters on loopback,
# streaming replication), a few pages of the PostgreSQL manual ingested on the primary,
# and a question answered on the standby. Cleans up after itself (RAGPG_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pgbase.sh
ROOT=$PGBASE/replica-demo
BIN=/usr/lib/postgresql/15/bin
P=${RAGPG_PRIMARY_PORT:-55442}
S=${RAGPG_STANDBY_PORT:-55443}
as_pg() { runuser -u postgres -- "$@"; }
stop() {
  for d in standby primary; do
    [ -f "$ROOT/$d/postmaster.pid" ] && as_pg $BIN/pg_ctl -D "$ROOT/$d" -m fast stop >/dev/null 2>&1 || true
  done
  [ "${RAGPG_KEEP:-0}" = 1 ] || rm -rf "$ROOT"
}
trap stop EXIT
stop
mkdir -p "$ROOT" && chown postgres:postgres "$ROOT"

echo "== primary on 127.0.0.1:$P"
as_pg $BIN/initdb -D "$ROOT/primary" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$ROOT/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $P
unix_socket_directories = '$ROOT'
CONF
echo "host replication all 127.0.0.1/32 trust" >> "$ROOT/primary/pg_hba.conf"
as_pg $BIN/pg_ctl -D "$ROOT/primary" -l "$ROOT/primary.log" -w start >/dev/null
PSQL_P="psql -h 127.0.0.1 -p $P -U postgres -v ON_ERROR_STOP=1 -q"
$PSQL_P -d postgres -c "CREATE DATABASE ragrepl"
$PSQL_P -d ragrepl -c "CREATE EXTENSION rag CASCADE"

echo "== standby on 127.0.0.1:$S (pg_basebackup, streaming, hot_standby)"
as_pg $BIN/pg_basebackup -h 127.0.0.1 -p "$P" -U postgres -D "$ROOT/standby" -X stream -R -c fast
sed -i "s/^port = $P/port = $S/" "$ROOT/standby/postgresql.conf"
as_pg $BIN/pg_ctl -D "$ROOT/standby" -l "$ROOT/standby.log" -w start >/dev/null
PSQL_S="psql -h 127.0.0.1 -p $S -U postgres -v ON_ERROR_STOP=1 -q"

echo "== ingest on the primary: 40 pages of the PostgreSQL manual"
for f in $(ls /usr/share/doc/postgresql-doc-15/html/sql-*.html | head -40); do
  $PSQL_P -d ragrepl -c "INSERT INTO rag.documents (source, content, metadata) VALUES ('$(basename "$f")', pg_read_file('$f'), '{\"format\": \"html\"}')"
done
lsn=$($PSQL_P -d ragrepl -Atc "SELECT pg_current_wal_lsn()")
until [ "$($PSQL_S -d ragrepl -Atc "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" = t ]; do sleep 0.2; done
echo "standby replayed up to $lsn: $($PSQL_S -d ragrepl -Atc "SELECT count(*) FROM rag.chunks") chunks"

echo "== on the standby (pg_is_in_recovery = $($PSQL_S -d ragrepl -Atc 'SELECT pg_is_in_recovery()'))"
$PSQL_S -d ragrepl -c "SELECT chunk_id, round(score::numeric, 4) AS score, left(content, 70) AS content FROM rag.search('create an index concurrently', 3)"
$PSQL_S -d ragrepl -Atc "SELECT jsonb_pretty(rag.ask('How do I create an index without locking out writes?') - 'usage')"
echo "(on a standby the answer is not stored in rag.answers and no rag.usage row is written: read-only; counted in rag.backend_stats())"
