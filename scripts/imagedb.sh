#!/usr/bin/env bash
# A database in a container of one of the images, for the demo on Postgres 17 or 18:
#   bash scripts/imagedb.sh start PG IMAGE   start (or reuse) container ragpg-pg<PG>; print its DSN
#   bash scripts/imagedb.sh stop PG          stop and remove it (its data goes with it)
# Host networking, like the tests: the server listens on 127.0.0.1:554<PG> and reaches the
# local LLM (make llm) on 127.0.0.1:8765.
set -euo pipefail
cmd=${1:?start|stop}; pg=${2:?PG}; name=ragpg-pg$pg; port=554$pg
dsn="host=127.0.0.1 port=$port user=postgres password=ragdemo dbname=ragdemo"
if [ "$cmd" = stop ]; then docker rm -f "$name" >/dev/null 2>&1 || true; exit 0; fi
image=${3:?IMAGE}
if [ -z "$(docker ps -q --filter "name=^$name\$")" ]; then
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" --network host -e POSTGRES_PASSWORD=ragdemo -e POSTGRES_DB=ragdemo \
    -e PGPORT="$port" "$image" postgres -c listen_addresses=127.0.0.1 >/dev/null
fi
for _ in $(seq 60); do
  if docker exec "$name" psql -qAt -h 127.0.0.1 -p "$port" -U postgres -d ragdemo -c "SELECT 1" >/dev/null 2>&1; then
    docker exec "$name" psql -qAt -h 127.0.0.1 -p "$port" -U postgres -d ragdemo \
      -c "CREATE EXTENSION IF NOT EXISTS rag CASCADE" >/dev/null
    echo "$dsn"
    exit 0
  fi
  sleep 1
done
echo "imagedb: $name did not start: $(docker logs --tail 5 "$name" 2>&1)" >&2
exit 1
