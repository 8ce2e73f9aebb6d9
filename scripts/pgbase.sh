# Sourced by localdb.sh and replica_demo.sh: PGBASE, a directory for local clusters that
# the postgres user can reach. Normally .pgdata in the checkout; a checkout postgres cannot
# traverse (say, under a 0700 `mktemp -d`) gets /var/tmp/ragpg-<hash of its path> instead.
PGBASE=$PWD/.pgdata
mkdir -p "$PGBASE"
if ! runuser -u postgres -- test -x "$PGBASE" 2>/dev/null; then
  PGBASE=/var/tmp/ragpg-$(printf %s "$PWD" | md5sum | cut -c1-12)
  mkdir -p "$PGBASE"
fi
chown postgres:postgres "$PGBASE"
