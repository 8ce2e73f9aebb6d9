#!/bin/bash
# In the style of the official postgres image: initdb on first start (honouring
# POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, POSTGRES_INITDB_ARGS), run
# /docker-entrypoint-initdb.d/*.sql|*.sh once, then exec the server as postgres.
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)   # the one Postgres the image has
if [ "${1:-}" = "postgres" ]; then
  shift
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
    exec runuser -u postgres -- "$0" postgres "$@"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ] && [ -n "${RAGPG_PRIMARY_CONNINFO:-}" ]; then
    # a hot standby: copy the primary (waiting for it), then follow it by streaming replication
    until $BIN/pg_basebackup -D "$PGDATA" -d "$RAGPG_PRIMARY_CONNINFO" -X stream -R -c fast 2>/tmp/basebackup.err; do
      rm -rf "${PGDATA:?}"/*; echo "waiting for the primary: $(tail -1 /tmp/basebackup.err)"; sleep 1
    done
    chmod 700 "$PGDATA"
    echo "standby of the primary ready; hot_standby on"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user=${POSTGRES_USER:-postgres}
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" > "$pwfile"
    # shellcheck disable=SC2086
    $BIN/initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    {
      echo "listen_addresses = '*'"
      echo "shared_buffers = ${RAGPG_SHARED_BUFFERS:-256MB}"
      # pg_cron runs rag.work on a schedule (rag.schedule_worker) in the image's database
      echo "shared_preload_libraries = 'pg_cron'"
      echo "cron.database_name = '${POSTGRES_DB:-${POSTGRES_USER:-postgres}}'"
      # jobs connect over the local socket (trust, as initdb set it): no password to keep.
      # Not background workers: pg_cron 1.4 (Debian 12) then starts no job while one runs
      # (pg_cron issue #200, fixed in 1.5), and rag.lock_guard runs 55 s a minute
      echo "cron.use_background_workers = off"
      echo "cron.host = '/var/run/postgresql'"
    } >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    $BIN/pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    db=${POSTGRES_DB:-$user}
    if [ "$db" != postgres ]; then
      $BIN/psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -qc "CREATE DATABASE \"$db\""
    fi
    for f in /docker-entrypoint-initdb.d/*; do
      case "$f" in
        *.sql) $BIN/psql -v ON_ERROR_STOP=1 -U "$user" -d "$db" -qf "$f" ;;
        *.sh)  bash "$f" ;;
      esac
    done 2>/dev/null || true
    $BIN/pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
  fi
  exec $BIN/postgres -D "$PGDATA" "$@"
fi
exec "$@"
