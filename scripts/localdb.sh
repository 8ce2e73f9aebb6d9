#!/usr/bin/env bash
# A local Postgres 15 cluster under .pgdata (see pgbase.sh; run as the postgres user), for the demo.
#   localdb.sh start   initdb if needed, start on 127.0.0.1:$PORT, create db + extension
#   localdb.sh stop | dsn | psql
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/pgbase.sh
DATA=$PGBASE/data
PORT=${RAGPG_PORT:-55432}
DB=${RAGPG_DB:-ragdemo}
BIN=/usr/lib/postgresql/15/bin
as_pg() { runuser -u postgres -- "$@"; }

case "${1:-}" in
  start)
    if [ ! -f "$DATA/PG_VERSION" ]; then
      as_pg $BIN/initdb -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGBASE'
shared_buffers = 512MB
maintenance_work_mem = 512MB
max_wal_size = 4GB
CONF
    fi
    if ! as_pg $BIN/pg_ctl -D "$DATA" status >/dev/null 2>&1; then
      as_pg $BIN/pg_ctl -D "$DATA" -l "$PGBASE/server.log" -w start >/dev/null
    fi
    psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAtc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 \
      || psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qc "CREATE DATABASE $DB"
    # 0.1.0 is not released: its script still changes. A database made from another build
    # of it is rebuilt (the demo re-ingests; nothing else lives in this local database).
    sum=$(cat extension/rag.control extension/rag--*.sql | md5sum | cut -c1-32)
    stamp=$PGBASE/rag-$DB.md5
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$sum" ]; then
      echo "the rag extension script changed since $DB was created: dropping and recreating it in $DB"
      psql -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" -qc "DROP EXTENSION IF EXISTS rag CASCADE"
    fi
    psql -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" -qc "CREATE EXTENSION IF NOT EXISTS rag CASCADE"
    echo "$sum" > "$stamp"
    echo "local database ready: $($0 dsn)"
    ;;
  stop) [ -f "$DATA/PG_VERSION" ] && as_pg $BIN/pg_ctl -D "$DATA" -m fast stop ;;
  dsn) echo "host=127.0.0.1 port=$PORT user=postgres dbname=$DB" ;;
  psql) shift; exec psql -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" "$@" ;;
  *) echo "usage: $0 start|stop|dsn|psql" >&2; exit 2 ;;
esac
