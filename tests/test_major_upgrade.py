"""Moving a database with rag to a new major version of Postgres, the two ways a DBA does
it: pg_upgrade of the old cluster (a Debian upgrade: Debian keeps the old server until the
cluster has moved), and the new Postgres's pg_dump of the old database restored into the new
server. Two moves (RAGPG_PGUPGRADE_FROM / _TO): 15 -> 17 (Debian 12 -> 13, the default) and
17 -> 18 (Debian 13 -> sid).

Three images (make test-pgupgrade): the old Postgres's image makes and fills the old
cluster, whose data directory lives in a directory of the host so that it outlives its
container; the pg_upgrade image (docker/Dockerfile.pgupgrade: the new Postgres's image plus
the older Debian's Postgres server, pg_upgrade needs both) moves it; the new Postgres's
image serves the result and takes the dump.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from conftest import LOGIN_ROLES, free_port
from pgtest import with_db
from test_lifecycle import (NEW, _checksums, _columns, _fill_all, _hnsw_indexes, _plpython_calls, _search_as,
                            _still_works, _tool)

UPGRADE_IMAGE = os.environ.get("RAGPG_PGUPGRADE_IMAGE")
FROM = os.environ.get("RAGPG_PGUPGRADE_FROM", "15")
TO = os.environ.get("RAGPG_PGUPGRADE_TO", "17")
OLD_IMAGE = os.environ.get("RAGPG_OLD_IMAGE", f"ragpg:{NEW}" + ("" if FROM == "15" else f"-pg{FROM}"))
NEW_IMAGE = os.environ.get("RAGPG_NEW_IMAGE", f"ragpg:{NEW}-pg{TO}")
pytestmark = pytest.mark.skipif(not UPGRADE_IMAGE, reason="needs the pg_upgrade image: make test-pgupgrade")

# what the DBA runs, as the postgres user, with both servers installed and the old one
# stopped (docs/operations.md): a new cluster made as the old one was (encoding, locale,
# superuser), the old one's client authentication and rag's server settings, then
# pg_upgrade's check and the upgrade itself (copy mode). Both clusters need the same data
# checksums setting: the old ones here have none (initdb's default up to 17), and 18's initdb
# makes them unless told not to.
SUMS = " --no-data-checksums" if int(TO) >= 18 else ""
PG_UPGRADE = f"""set -e
OLD=/usr/lib/postgresql/{FROM}/bin NEW=/usr/lib/postgresql/{TO}/bin
$NEW/initdb -D /upgrade/{TO} -U tester -E UTF8 --locale=C.UTF-8 --auth-local=trust --no-sync{SUMS} >/dev/null
cp /upgrade/{FROM}/pg_hba.conf /upgrade/{TO}/pg_hba.conf
grep -E '^(listen_addresses|shared_buffers|shared_preload_libraries|cron[.])' /upgrade/{FROM}/postgresql.conf \\
    >> /upgrade/{TO}/postgresql.conf
$NEW/pg_upgrade -U tester -b $OLD -B $NEW -d /upgrade/{FROM} -D /upgrade/{TO} --check
$NEW/pg_upgrade -U tester -b $OLD -B $NEW -d /upgrade/{FROM} -D /upgrade/{TO}
cp -a /upgrade/{FROM}/ragpg_database_keys /upgrade/{TO}/   # rag's API key secrets: files pg_upgrade does not move
"""


def _docker(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


class Server:
    """A Postgres server of one of our images, in a container on the host's network; with
    `data`, its data directory is <mount>/<data> on the host (/upgrade/<data> inside)."""

    def __init__(self, image: str, mount: Path | None = None, data: str | None = None):
        self.port = free_port()
        self.name = "ragpg-mu-" + uuid.uuid4().hex[:8]
        volume = ["-v", f"{mount}:/upgrade", "-e", f"PGDATA=/upgrade/{data}"] if data else []
        r = _docker("run", "-d", "--name", self.name, "--network", "host", *volume,
                    "-e", f"PGPORT={self.port}", "-e", "POSTGRES_USER=tester", "-e", "POSTGRES_PASSWORD=tester",
                    "-e", "POSTGRES_DB=tester", "-e", "POSTGRES_INITDB_ARGS=--no-sync",
                    image, "postgres", "-c", "listen_addresses=127.0.0.1")
        assert r.returncode == 0, r.stderr
        self.url = f"postgresql://tester:tester@127.0.0.1:{self.port}/tester"
        self.running = True
        deadline = time.monotonic() + 120
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise AssertionError(_docker("logs", self.name).stderr[-3000:]) from None
                time.sleep(0.5)

    def stop(self) -> None:
        """A clean shutdown (pg_upgrade wants one: SIGINT to the postmaster is Postgres's fast
        shutdown), then the container goes."""
        r = _docker("exec", "-u", "postgres", self.name, "sh", "-c", 'kill -INT "$(head -1 "$PGDATA/postmaster.pid")"')
        assert r.returncode == 0, r.stderr
        assert _docker("wait", self.name, timeout=120).stdout.strip() == "0"
        assert "database system is shut down" in _docker("logs", "--tail", "5", self.name).stderr
        self.remove()

    def remove(self) -> None:
        _docker("rm", "-f", self.name)
        self.running = False


def _skew(attver_columns: int) -> bool:
    """Whether this move meets Postgres's version skew of 2026-11 (docs/operations.md):
    Postgres 17.12 (Debian 13's security update) gives every column an attribute option,
    `pg_attver`, that its own pg_dump leaves out of a dump; a newer major release whose pg_dump
    predates it (18.6, sid's newest) dumps the option and then refuses it, in pg_dump's
    restore and in pg_upgrade's alike. True when the old cluster has such columns and the new
    pg_dump does not know the option."""
    if not attver_columns:
        return False
    r = _docker("run", "--rm", "--entrypoint", "grep", UPGRADE_IMAGE, "-c", "-a", "pg_attver",
                f"/usr/lib/postgresql/{TO}/bin/pg_dump")
    return r.stdout.strip() == "0"


def _columns_but_tsv(conn) -> dict[str, list[str]]:
    """Every table's columns but rag.chunks' tsvector (to_tsvector('english', content),
    which a restore computes anew with the new server's stemmer)."""
    return {rel: [c for c in cols if not (rel.startswith("rag.chunks") and c == "tsv")]
            for rel, cols in _columns(conn).items()}


# docs/operations.md's rebuild of every tenant's lexical index, as the superuser
REBUILD_EVERY_TENANT = """
DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT DISTINCT tenant FROM rag.chunks LOOP
        PERFORM set_config('rag.tenant', t, true);
        PERFORM rag.rebuild_lexical_index();
    END LOOP;
END $$"""


def _lexical_index_disagreements(conn) -> list:
    """(tenant, lexeme, chunks holding it, postings of it) wherever the lexical index and the
    chunks' tsvectors disagree on how many chunks of a tenant hold a lexeme."""
    return conn.execute("""
        WITH held AS (SELECT c.tenant, u.lexeme, count(*) AS n FROM rag.chunks AS c, unnest(c.tsv) AS u GROUP BY 1, 2),
             indexed AS (SELECT b.tenant, b.lexeme, sum(b.n) AS n FROM rag.posting_blocks AS b GROUP BY 1, 2)
        SELECT tenant, lexeme, held.n, indexed.n FROM held FULL JOIN indexed USING (tenant, lexeme)
        WHERE held.n IS DISTINCT FROM indexed.n ORDER BY 1, 2""").fetchall()


def _rounded(searches: dict) -> dict:
    """_search_as's results with scores to 4 places (of 6)."""
    return {role: [[row[:2] + (round(row[2], 4),) + row[3:] for row in rows] for rows in results]
            for role, results in searches.items()}


def _make_roles(url: str) -> None:
    """rag's group roles (CREATE EXTENSION rag makes them) and the tests' login roles."""
    with psycopg.connect(url, autocommit=True) as su:
        su.execute("CREATE EXTENSION IF NOT EXISTS rag CASCADE")
        for name, group in LOGIN_ROLES.items():
            su.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{name}'" + (f" IN ROLE {group}" if group else ""))


@dataclass
class Old:
    server: Server
    mount: Path
    before: dict          # _checksums of every table
    searches: dict        # role -> _search_as
    extensions: dict      # extname -> extversion
    hnsw: list            # names of the HNSW indexes
    model_url: str        # the changed built-in model row's base_url
    job: str              # the worker's pg_cron command
    before_but_tsv: dict  # _checksums without rag.chunks' tsvectors (_columns_but_tsv)
    skew: bool            # _skew: the new pg_dump cannot move this cluster


@pytest.fixture(scope="module")
def old(tmp_path_factory, local_llm):
    """An old (FROM) cluster with every kind of state rag keeps (test_lifecycle._fill_all: two
    tenants, a partition, attached tables and a queue, answers, an eval set, a PDF, a model
    switch in progress) and rag's worker scheduled with pg_cron."""
    mount = tmp_path_factory.mktemp("pgupgrade")
    os.chmod(mount, 0o777)   # the containers' postgres user writes the new cluster and pg_upgrade's logs here
    server = Server(OLD_IMAGE, mount, FROM)
    try:
        with psycopg.connect(server.url, autocommit=True) as su:
            assert su.execute("SHOW server_version_num").fetchone()[0].startswith(FROM)
        _make_roles(server.url)
        _fill_all(server.url, local_llm)
        with psycopg.connect(server.url, autocommit=True) as su:
            su.execute("CREATE EXTENSION pg_cron")
            su.execute("SELECT rag.schedule_worker('0 3 29 2 *')")   # (never during the test)
            su.execute("SELECT rag.set_api_key('prov', 'sk-moved', base_url => 'http://127.0.0.1:9/v1')")
            job = su.execute("SELECT command FROM cron.job").fetchone()[0]
        searches = {r: _search_as(server.url, r) for r in ("alice", "bob")}   # (searches log usage rows)
        with psycopg.connect(server.url, autocommit=True) as su:
            before = _checksums(su)
            before_but_tsv = _checksums(su, _columns_but_tsv(su))
            assert _lexical_index_disagreements(su) == []   # (the check sees no difference where there is none)
            extensions = dict(su.execute("SELECT extname, extversion FROM pg_extension").fetchall())
            hnsw = [name for name, _ in _hnsw_indexes(su)]
            model_url = su.execute("SELECT base_url FROM rag.models WHERE name = 'smollm2-embed'").fetchone()[0]
            attver = su.execute("SELECT count(*) FROM pg_attribute WHERE array_to_string(attoptions, ',') LIKE '%pg_attver=%'"
                                ).fetchone()[0]
        assert extensions["rag"] == NEW and len(hnsw) >= 2 and before["rag.queue"][0] == 3
        yield Old(server, mount, before, searches, extensions, hnsw, model_url, job, before_but_tsv, _skew(attver))
    finally:
        server.remove()


def test_pg_dump_of_the_new_postgres_moves_an_old_database_into_it(old):
    new = Server(NEW_IMAGE)
    try:
        _make_roles(with_db(new.url, "postgres"))
        with psycopg.connect(new.url, autocommit=True) as su:
            assert su.execute("SHOW server_version_num").fetchone()[0].startswith(TO)
            su.execute("ALTER DATABASE tester SET track_functions = 'pl'")   # count the restore's PL/Python calls
            # pg_cron first: a dump from 15 names the schema 1.4 was in (public), which 17's
            # pg_cron (1.6) refuses; IF NOT EXISTS then skips it, and its jobs are restored
            su.execute("CREATE EXTENSION pg_cron")
        dst = new.url   # (the database pg_cron runs jobs in: cron.database_name)
        # the new pg_dump, as Postgres advises; across the skew (_skew) only the old one can
        dumper = old.server.name if old.skew else new.name
        r = _tool(dumper, "pg_dump", "--format", "custom", "--dbname", old.server.url)
        assert r.returncode == 0, r.stderr.decode()
        r = _tool(new.name, "pg_restore", "--exit-on-error", "--dbname", dst, stdin=r.stdout)
        assert r.returncode == 0, r.stderr.decode()

        assert _plpython_calls(dst) == 0             # no chunking, no model call, nothing re-embedded
        with psycopg.connect(dst, autocommit=True) as su:
            after = _checksums(su)
            # every table, rag's and the user's; but a restore computes rag.chunks' tsvector
            # column anew, and 18's English stemmer is not 17's ("added": 'ad' -> 'add'), so
            # across that change only the chunk tables' stems differ, and the lexical index
            # (restored as it was) misses the new stems until it is rebuilt (docs/operations.md)
            restemmed = {rel for rel in after if after[rel] != old.before[rel]}
            assert restemmed <= {rel for rel in after if rel.startswith("rag.chunks")}, restemmed
            assert _checksums(su, _columns_but_tsv(su)) == old.before_but_tsv
            assert bool(_lexical_index_disagreements(su)) == bool(restemmed)
            su.execute(REBUILD_EVERY_TENANT)
            assert _lexical_index_disagreements(su) == []
            su.execute("SELECT rag.create_model_index('smollm2-embed')")   # (as after any restore)
            assert [name for name, _ in _hnsw_indexes(su)] == old.hnsw
        searches = {r: _search_as(dst, r) for r in old.searches}
        if restemmed:   # the same chunks in the same ranks; the rebuilt index sums BM25 in another order
            searches, old_searches = _rounded(searches), _rounded(old.searches)
        else:
            old_searches = old.searches
        assert searches == old_searches
        with psycopg.connect(dst, autocommit=True) as su:
            assert su.execute("SELECT command FROM cron.job").fetchone()[0] == old.job
        _still_works(dst, old.model_url)
    finally:
        new.remove()


def test_pg_upgrade_moves_an_old_cluster_with_rag_to_the_new_postgres(old):
    if old.server.running:
        old.server.stop()
    # on one machine the postgres user stays who it was; the images here do not agree on its
    # uid (sid's is not trixie's), so the old cluster's files go to the upgrading image's
    r = _docker("run", "--rm", "--user", "root", "-v", f"{old.mount}:/upgrade", "--entrypoint", "chown",
                UPGRADE_IMAGE, "-R", "postgres:postgres", f"/upgrade/{FROM}")
    assert r.returncode == 0, r.stderr
    r = _docker("run", "--rm", "--user", "postgres", "-v", f"{old.mount}:/upgrade", "-w", "/upgrade",
                "--entrypoint", "bash", UPGRADE_IMAGE, "-c", PG_UPGRADE, timeout=900)
    if old.skew:
        _pg_upgrade_stops_at_the_skew_and_the_old_cluster_stays_whole(old, r)
        return
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Clusters are compatible" in r.stdout and "Upgrade Complete" in r.stdout, r.stdout[-4000:]
    # the extensions pg_upgrade says to update: from 15, pg_cron only (1.4 -> 1.6); 17 and 18
    # have the same pg_cron, so none; rag and pgvector are the same releases on every server
    path = old.mount / "update_extensions.sql"
    updates = path.read_text() if path.exists() else ""
    assert ("ALTER EXTENSION" in updates) == (FROM == "15"), updates
    assert "rag" not in updates and "vector" not in updates, updates

    new = Server(NEW_IMAGE, old.mount, TO)
    try:
        _upgraded_works(new.url, updates, old)
    finally:
        new.remove()


def _upgraded_works(url: str, updates: str, old) -> None:
    """The cluster pg_upgrade made holds everything the old one did and works: the
    extensions (pg_cron after `updates`, pg_upgrade's update_extensions.sql), every table,
    every HNSW index, the cron job, the searches, and _still_works; the model switch in
    progress goes on."""
    with psycopg.connect(url, autocommit=True) as su:
        assert su.execute("SHOW server_version_num").fetchone()[0].startswith(TO)
        assert dict(su.execute("SELECT extname, extversion FROM pg_extension WHERE extname <> 'pg_cron'"
                               ).fetchall()) == {k: v for k, v in old.extensions.items() if k != "pg_cron"}
        assert _checksums(su) == old.before       # every table, rag's and the user's
        assert [name for name, _ in _hnsw_indexes(su)] == old.hnsw   # every index came along
        if updates:
            su.execute(updates.split("\n", 1)[1])     # ALTER EXTENSION "pg_cron" UPDATE
        assert su.execute("SELECT command FROM cron.job").fetchone()[0] == old.job
        su.execute("ANALYZE")                     # pg_upgrade moves no planner statistics
        # the API key's secret, copied with the data directory's ragpg_database_keys/ (pg_upgrade
        # keeps the database's OID, its directory's name)
        oid = su.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        assert '"secret": "sk-moved"' in su.execute("SELECT pg_read_file(%s)", (f"ragpg_database_keys/{oid}/prov",)).fetchone()[0]
    assert {r: _search_as(url, r) for r in old.searches} == old.searches
    _still_works(url, old.model_url)
    with psycopg.connect(url, autocommit=True) as su:   # the model switch in progress goes on
        su.execute("SET rag.tenant = 'bob'")
        su.execute("SET rag.index_batch_size = 2")
        su.execute("CALL rag.work(1)")
        assert su.execute("SELECT next_embedded, state FROM rag.model_status WHERE tenant = 'bob'"
                          ).fetchone() == (4, "building")


# Debian's way (postgresql-common), as root: the old cluster made known to Debian's tools
# (pg_createcluster takes an existing data directory in), then pg_upgradecluster, which
# makes the new cluster with the old one's settings, runs pg_upgrade and starts the new one
# on the old one's port. A Debian cluster's superuser is postgres (pg_upgrade insists that
# it connects as the role that ran initdb), the test's is tester: it is renamed for the
# move and back after it, so that the same checks apply.
PG_UPGRADECLUSTER = f"""set -e
cp -a /upgrade/{FROM} /upgrade/debian && chown -R postgres:postgres /upgrade/debian
pg_createcluster {FROM} main -d /upgrade/debian -p $PORT >/dev/null
pg_ctlcluster {FROM} main start
as() {{ su postgres -c "psql -X -q -v ON_ERROR_STOP=1 -p $PORT -d tester -U $1 -c \\"$2\\""; }}
as tester "CREATE ROLE renamer SUPERUSER LOGIN"
as renamer "ALTER ROLE tester RENAME TO postgres"
as postgres "DROP ROLE renamer"
pg_upgradecluster -m upgrade {FROM} main
cp -a /upgrade/debian/ragpg_database_keys /var/lib/postgresql/{TO}/main/
as postgres "CREATE ROLE renamer SUPERUSER LOGIN"
as renamer "ALTER ROLE postgres RENAME TO tester"
as tester "DROP ROLE renamer"
pg_lsclusters
"""


def test_debians_pg_upgradecluster_moves_an_old_cluster_with_rag(old):
    if old.skew:
        pytest.skip("the version skew stops pg_upgrade (test_pg_upgrade_moves_...: the old cluster stays whole)")
    if old.server.running:
        old.server.stop()
    port = free_port()
    name = "ragpg-mu-debian-" + uuid.uuid4().hex[:8]
    r = _docker("run", "-d", "--name", name, "--network", "host", "--user", "root", "-v", f"{old.mount}:/upgrade",
                "--entrypoint", "sleep", UPGRADE_IMAGE, "infinity")
    assert r.returncode == 0, r.stderr
    try:
        r = _docker("exec", "-e", f"PORT={port}", name, "bash", "-c", PG_UPGRADECLUSTER, timeout=900)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        assert "Success. Please check that the upgraded cluster works" in r.stdout, r.stdout[-4000:]
        assert re.search(rf"^{TO}\s+main\s+{port}\s+online", r.stdout, re.M), r.stdout[-1000:]   # on the old port
        updates = _docker("exec", name, "sh", "-c", f"cat /var/log/postgresql/pg_upgradecluster-{FROM}-{TO}-main.*/"
                          "update_extensions.sql 2>/dev/null || true").stdout
        assert ("ALTER EXTENSION" in updates) == (FROM == "15"), updates
        _upgraded_works(f"postgresql://tester:tester@127.0.0.1:{port}/tester", updates, old)
    finally:
        _docker("rm", "-f", name)


def _pg_upgrade_stops_at_the_skew_and_the_old_cluster_stays_whole(old, r) -> None:
    """Across the skew (_skew) pg_upgrade passes its check and then fails to restore the
    schema, at the first column with `pg_attver`. In copy mode the old cluster is untouched:
    it starts again with every row, and searches as before."""
    assert r.returncode != 0 and "Clusters are compatible" in r.stdout, r.stdout[-4000:]
    logs = list(old.mount.glob(f"{TO}/pg_upgrade_output.d/*/log/pg_upgrade_dump_*.log"))
    assert any('unrecognized parameter "pg_attver"' in p.read_text() for p in logs), r.stdout[-4000:]
    r = _docker("run", "--rm", "--user", "root", "-v", f"{old.mount}:/upgrade", "--entrypoint", "chown",
                OLD_IMAGE, "-R", "postgres:postgres", f"/upgrade/{FROM}")   # (back to the old image's user)
    assert r.returncode == 0, r.stderr
    again = Server(OLD_IMAGE, old.mount, FROM)
    try:
        with psycopg.connect(again.url, autocommit=True) as su:
            assert _checksums(su) == old.before
        assert {r: _search_as(again.url, r) for r in old.searches} == old.searches
    finally:
        again.remove()
