#!/usr/bin/env bash
# A local Postgres 15 cluster under .pgdata (see pgbase.sh; run as the postgres user), for the demo.
#   localdb.sh start   initdb if needed, start on 127.0.0.1:$PORT, create db + extension
#   localdb.sh stop | dsn | psql
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/pgbase.sh
. scripts/versions.env
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
      if $BIN/pg_isready -q -h 127.0.0.1 -p "$PORT"; then
        echo "localdb.sh: 127.0.0.1:$PORT is taken by another server (another checkout's cluster?);" \
             "stop it (its localdb.sh stop) or pick another port: RAGPG_PORT=55433 make ..." >&2
        exit 1
      fi
      as_pg $BIN/pg_ctl -D "$DATA" -l "$PGBASE/server.log" -o "-p $PORT" -w start >/dev/null
    else
      running=$(sed -n 4p "$DATA/postmaster.pid")   # the port it was started on
      if [ "$running" != "$PORT" ]; then
        echo "localdb.sh: the cluster in $DATA is already running, on 127.0.0.1:$running, not $PORT;" \
             "use that port (RAGPG_PORT=$running make ...) or stop it first (RAGPG_PORT=$running bash scripts/localdb.sh stop)" >&2
        exit 1
      fi
      # apt upgraded Postgres (a point release) since it started: the server still runs the
      # old binary, which cannot load the new plpython3.so ("undefined symbol")
      if readlink "/proc/$(sed -n 1p "$DATA/postmaster.pid")/exe" 2>/dev/null | grep -q '(deleted)$'; then
        echo "localdb.sh: Postgres was upgraded since this cluster started; restarting it"
        as_pg $BIN/pg_ctl -D "$DATA" -l "$PGBASE/server.log" -o "-p $PORT" -m fast -w restart >/dev/null
      fi
    fi
    psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAtc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 \
      || psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qc "CREATE DATABASE $DB"
    # an existing database is upgraded in place (ALTER EXTENSION rag UPDATE), never dropped
    have=$(psql -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" -qAtc "SELECT extversion FROM pg_extension WHERE extname = 'rag'")
    if [ -z "$have" ]; then
      psql -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" -qc "CREATE EXTENSION rag CASCADE"
    elif [ "$have" != "$RAGPG_VERSION" ]; then
      echo "upgrading rag $have -> $RAGPG_VERSION in $DB"
      psql -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" -v ON_ERROR_STOP=1 -qc "ALTER EXTENSION rag UPDATE"
    fi
    echo "local database ready: $($0 dsn)"
    ;;
  stop) [ -f "$DATA/PG_VERSION" ] && as_pg $BIN/pg_ctl -D "$DATA" -m fast stop ;;
  dsn) echo "host=127.0.0.1 port=$PORT user=postgres dbname=$DB" ;;
  psql) shift; exec psql -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" "$@" ;;
  *) echo "usage: $0 start|stop|dsn|psql" >&2; exit 2 ;;
esac
