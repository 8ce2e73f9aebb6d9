"""Moving a database with rag to a new major version of Postgres, the two ways a DBA does
it: pg_upgrade of a Postgres 15 cluster to 17 (a Debian 12 -> 13 upgrade: Debian keeps the
old server until the cluster has moved), and Postgres 17's pg_dump of the 15 database
restored into 17.

Three images (make test-pgupgrade): the Postgres 15 image makes and fills the old cluster,
whose data directory lives in a directory of the host so that it outlives its container;
the pg_upgrade image (docker/Dockerfile.pgupgrade: 17's image plus Debian 12's Postgres 15
server, pg_upgrade needs both) moves it; the Postgres 17 image serves the result and takes
the dump.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from conftest import LOGIN_ROLES, free_port
from pgtest import with_db
from test_lifecycle import (NEW, _checksums, _fill_all, _hnsw_indexes, _plpython_calls, _search_as,
                            _still_works, _tool)

UPGRADE_IMAGE = os.environ.get("RAGPG_PGUPGRADE_IMAGE")
OLD_IMAGE = os.environ.get("RAGPG_OLD_IMAGE", f"ragpg:{NEW}")
NEW_IMAGE = os.environ.get("RAGPG_NEW_IMAGE", f"ragpg:{NEW}-pg17")
pytestmark = pytest.mark.skipif(not UPGRADE_IMAGE, reason="needs the pg_upgrade image: make test-pgupgrade")

# what the DBA runs, as the postgres user, with both servers installed and the old one
# stopped (docs/operations.md): a new cluster made as the old one was (encoding, locale,
# superuser), the old one's client authentication and rag's server settings, then
# pg_upgrade's check and the upgrade itself (copy mode)
PG_UPGRADE = """set -e
OLD=/usr/lib/postgresql/15/bin NEW=/usr/lib/postgresql/17/bin
$NEW/initdb -D /upgrade/17 -U tester -E UTF8 --locale=C.UTF-8 --auth-local=trust --no-sync >/dev/null
cp /upgrade/15/pg_hba.conf /upgrade/17/pg_hba.conf
grep -E '^(listen_addresses|shared_buffers|shared_preload_libraries|cron[.])' /upgrade/15/postgresql.conf \
    >> /upgrade/17/postgresql.conf
$NEW/pg_upgrade -U tester -b $OLD -B $NEW -d /upgrade/15 -D /upgrade/17 --check
$NEW/pg_upgrade -U tester -b $OLD -B $NEW -d /upgrade/15 -D /upgrade/17
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


@pytest.fixture(scope="module")
def old(tmp_path_factory, local_llm):
    """A Postgres 15 cluster with every kind of state rag keeps (test_lifecycle._fill_all: two
    tenants, a partition, attached tables and a queue, answers, an eval set, a PDF, a model
    switch in progress) and rag's worker scheduled with pg_cron."""
    mount = tmp_path_factory.mktemp("pgupgrade")
    os.chmod(mount, 0o777)   # the containers' postgres user writes the new cluster and pg_upgrade's logs here
    server = Server(OLD_IMAGE, mount, "15")
    try:
        with psycopg.connect(server.url, autocommit=True) as su:
            assert su.execute("SHOW server_version_num").fetchone()[0].startswith("15")
        _make_roles(server.url)
        _fill_all(server.url, local_llm)
        with psycopg.connect(server.url, autocommit=True) as su:
            su.execute("CREATE EXTENSION pg_cron")
            su.execute("SELECT rag.schedule_worker('0 3 29 2 *')")   # (never during the test)
            job = su.execute("SELECT command FROM cron.job").fetchone()[0]
        searches = {r: _search_as(server.url, r) for r in ("alice", "bob")}   # (searches log usage rows)
        with psycopg.connect(server.url, autocommit=True) as su:
            before = _checksums(su)
            extensions = dict(su.execute("SELECT extname, extversion FROM pg_extension").fetchall())
            hnsw = [name for name, _ in _hnsw_indexes(su)]
            model_url = su.execute("SELECT base_url FROM rag.models WHERE name = 'smollm2-embed'").fetchone()[0]
        assert extensions["rag"] == NEW and len(hnsw) >= 2 and before["rag.queue"][0] == 3
        yield Old(server, mount, before, searches, extensions, hnsw, model_url, job)
    finally:
        server.remove()


def test_pg_dump_of_17_moves_a_15_database_into_17(old):
    new = Server(NEW_IMAGE)
    try:
        _make_roles(with_db(new.url, "postgres"))
        with psycopg.connect(new.url, autocommit=True) as su:
            assert su.execute("SHOW server_version_num").fetchone()[0].startswith("17")
            su.execute("ALTER DATABASE tester SET track_functions = 'pl'")   # count the restore's PL/Python calls
            # pg_cron first: the dump's CREATE EXTENSION names the schema 1.4 was in, which 17's
            # pg_cron (1.6) refuses; IF NOT EXISTS then skips it, and its jobs are restored
            su.execute("CREATE EXTENSION pg_cron")
        dst = new.url   # (the database pg_cron runs jobs in: cron.database_name)
        r = _tool(new.name, "pg_dump", "--format", "custom", "--dbname", old.server.url)   # 17's pg_dump, the 15 server
        assert r.returncode == 0, r.stderr.decode()
        r = _tool(new.name, "pg_restore", "--exit-on-error", "--dbname", dst, stdin=r.stdout)
        assert r.returncode == 0, r.stderr.decode()

        assert _plpython_calls(dst) == 0             # no chunking, no model call, nothing re-embedded
        with psycopg.connect(dst, autocommit=True) as su:
            assert _checksums(su) == old.before      # every table, rag's and the user's
            su.execute("SELECT rag.create_model_index('smollm2-embed')")   # (as after any restore)
            assert [name for name, _ in _hnsw_indexes(su)] == old.hnsw
        assert {r: _search_as(dst, r) for r in old.searches} == old.searches
        with psycopg.connect(dst, autocommit=True) as su:
            assert su.execute("SELECT command FROM cron.job").fetchone()[0] == old.job
        _still_works(dst, old.model_url)
    finally:
        new.remove()


def test_pg_upgrade_moves_a_15_cluster_with_rag_to_17(old):
    old.server.stop()
    r = _docker("run", "--rm", "--user", "postgres", "-v", f"{old.mount}:/upgrade", "-w", "/upgrade",
                "--entrypoint", "bash", UPGRADE_IMAGE, "-c", PG_UPGRADE, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Clusters are compatible" in r.stdout and "Upgrade Complete" in r.stdout, r.stdout[-4000:]
    # the extensions pg_upgrade says to update: pg_cron only (17's is newer); rag and pgvector
    # are the same releases on both servers
    updates = (old.mount / "update_extensions.sql").read_text()
    assert "ALTER EXTENSION" in updates and "rag" not in updates and "vector" not in updates, updates

    new = Server(NEW_IMAGE, old.mount, "17")
    try:
        with psycopg.connect(new.url, autocommit=True) as su:
            assert su.execute("SHOW server_version_num").fetchone()[0].startswith("17")
            assert dict(su.execute("SELECT extname, extversion FROM pg_extension WHERE extname <> 'pg_cron'"
                                   ).fetchall()) == {k: v for k, v in old.extensions.items() if k != "pg_cron"}
            assert _checksums(su) == old.before       # every table, rag's and the user's
            assert [name for name, _ in _hnsw_indexes(su)] == old.hnsw   # every index came along
            su.execute(updates.split("\n", 1)[1])     # ALTER EXTENSION "pg_cron" UPDATE
            assert su.execute("SELECT command FROM cron.job").fetchone()[0] == old.job
            su.execute("ANALYZE")                     # pg_upgrade moves no planner statistics
        assert {r: _search_as(new.url, r) for r in old.searches} == old.searches
        _still_works(new.url, old.model_url)
        with psycopg.connect(new.url, autocommit=True) as su:   # the model switch in progress goes on
            su.execute("SET rag.tenant = 'bob'")
            su.execute("SET rag.index_batch_size = 2")
            su.execute("CALL rag.work(1)")
            assert su.execute("SELECT next_embedded, state FROM rag.model_status WHERE tenant = 'bob'"
                              ).fetchone() == (4, "building")
    finally:
        new.remove()
