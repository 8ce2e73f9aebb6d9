"""The upgrade from 0.7.0 against what roles of that release may have made (hostile review
42): objects that depend on a function the upgrade replaces, a foreign partition in an
attached tree, more partitions than the lock table holds. The superuser's ALTER EXTENSION
rag UPDATE must go through for the whole database, and say what it left."""
from __future__ import annotations

import contextlib
import uuid

import psycopg
import pytest
from pgtest import as_role, with_db


@contextlib.contextmanager
def _db_070(server_url):
    """A new database with rag 0.7.0 (superuser URL); dropped afterwards."""
    name = "u42_" + uuid.uuid4().hex[:10]
    with psycopg.connect(server_url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    url = with_db(server_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as su:
            su.execute("CREATE EXTENSION rag VERSION '0.7.0' CASCADE")
            su.execute("GRANT CREATE ON SCHEMA public TO alice, bob")
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _update(url, warnings=None):
    """ALTER EXTENSION rag UPDATE as the superuser; whether it reached the current release."""
    with psycopg.connect(url, autocommit=True) as su:
        if warnings is not None:
            su.add_notice_handler(lambda d: warnings.append(d.message_primary))
        su.execute("ALTER EXTENSION rag UPDATE")
        return su.execute("SELECT e.extversion = a.default_version FROM pg_extension AS e "
                          "JOIN pg_available_extensions AS a ON a.name = e.extname WHERE e.extname = 'rag'").fetchone()[0]


def test_objects_on_a_replaced_function_do_not_stop_the_upgrade(server_url):
    """A writer's view and a reader's TEMP view (TEMP is PUBLIC's) on functions 0.8.0 drops:
    a plain DROP FUNCTION failed the whole upgrade (2BP01). The functions are kept under
    another name that no role may run, with a WARNING naming the views; the views fail."""
    with _db_070(server_url) as url:
        with psycopg.connect(as_role(url, "bob"), autocommit=True) as bob, \
                psycopg.connect(as_role(url, "carol"), autocommit=True) as carol:
            bob.execute("CREATE VIEW bobv AS SELECT rag._rows_hidden_from_owner('pg_class'::regclass) AS h")
            carol.execute("CREATE TEMP VIEW cv AS SELECT 1 AS x WHERE rag._apply_rows(1::bigint, '{}'::jsonb[]) IS NULL")
            warnings = []
            assert _update(url, warnings) is True
            mine = [w for w in warnings if "is replaced, but" in w]
            assert any("_rows_hidden_from_owner(regclass)" in w and "bobv" in w for w in mine), warnings
            assert any("_apply_rows(bigint, jsonb[])" in w and "cv" in w for w in mine), warnings
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                bob.execute("SELECT * FROM bobv")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                carol.execute("SELECT * FROM cv")
        with psycopg.connect(url, autocommit=True) as su:
            kept = su.execute("SELECT p.oid::regprocedure::text, p.proacl::text, obj_description(p.oid, 'pg_proc') "
                              "FROM pg_proc AS p WHERE p.pronamespace = 'rag'::regnamespace "
                              "AND p.proname LIKE '%\\_before\\_0\\_8\\_0' ORDER BY 1").fetchall()
            assert [k[0] for k in kept] == ["rag._apply_rows_before_0_8_0(bigint,jsonb[])",
                                            "rag._rows_hidden_from_owner_before_0_8_0(regclass)"], kept
            assert all(k[1] == "{tester=X/tester}" for k in kept), kept    # its owner's only: no PUBLIC, no rag role
            assert all("kept only because objects depend on it" in k[2] for k in kept), kept
            # the current functions are 0.8.0's, and the database works
            assert su.execute("SELECT pronargs FROM pg_proc WHERE oid = 'rag._apply_rows'::regproc").fetchone()[0] == 3
            su.execute("SET rag.tenant = 'alice'")
            su.execute("SELECT rag.ingest('# Ferry\n\nThe harbour ferry leaves at seven.', source => 'ferry.md')")
            assert su.execute("SELECT count(*) FROM rag.search('ferry', k => 1)").fetchone()[0] == 1


def test_a_foreign_partition_does_not_stop_the_upgrade(server_url):
    """A foreign table can have no trigger with transition tables: step 040 failed the whole
    upgrade (0A000) on an attached tree with a foreign partition (its owner dropped the
    primary key after rag.attach). It is left with a WARNING; the other partitions are watched."""
    with _db_070(server_url) as url:
        with psycopg.connect(url, autocommit=True) as su:
            su.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
            port = su.execute("SHOW port").fetchone()[0]
            dbname = su.execute("SELECT current_database()").fetchone()[0]
            su.execute(f"CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw "
                       f"OPTIONS (host '127.0.0.1', port '{port}', dbname '{dbname}')")
            su.execute("GRANT USAGE ON FOREIGN SERVER loop TO alice")
            su.execute("CREATE USER MAPPING FOR alice SERVER loop OPTIONS (user 'alice', password 'alice')")
        with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
            alice.execute("CREATE TABLE archive_src (id int PRIMARY KEY, body text)")
            alice.execute("CREATE TABLE notes (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
            alice.execute("CREATE TABLE notes_a PARTITION OF notes FOR VALUES FROM (0) TO (100)")
            alice.execute("INSERT INTO notes VALUES (1, 'The harbour ferry leaves at seven.')")
            alice.execute("SELECT rag.attach('notes', 'body')")
            alice.execute("ALTER TABLE notes DROP CONSTRAINT notes_pkey")
            alice.execute("CREATE FOREIGN TABLE notes_arch PARTITION OF notes FOR VALUES FROM (500) TO (600) "
                          "SERVER loop OPTIONS (table_name 'archive_src')")
        warnings = []
        assert _update(url, warnings) is True
        assert any("notes_arch is a foreign table" in w for w in warnings), warnings
        with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
            alice.execute("INSERT INTO notes_a VALUES (2, 'The night train to the coast runs on Fridays.')")
            assert alice.execute("SELECT count(*) FROM rag.documents WHERE source_table = 'public.notes'").fetchone()[0] == 2


def test_more_partitions_than_the_lock_table_holds_do_not_stop_the_upgrade(server_url):
    """Step 040 locks each partition it gives triggers until the upgrade ends: a writer's
    many empty partitions failed it with 53200 (out of shared memory) at Postgres' defaults.
    A table whose partitions would fill half the lock table is left to its owner's
    rag.resync, with a WARNING; the others are watched. (The lock table is made small for
    the test: max_locks_per_transaction cannot be set per session, so the partitions are
    counted against the server's setting.)"""
    with _db_070(server_url) as url:
        with psycopg.connect(url, autocommit=True) as su:
            budget = (int(su.execute("SHOW max_locks_per_transaction").fetchone()[0])
                      * int(su.execute("SHOW max_connections").fetchone()[0]) // 2)
        with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
            alice.execute("CREATE TABLE small (id int PRIMARY KEY, body text) PARTITION BY LIST (id)")
            alice.execute("CREATE TABLE small_0 PARTITION OF small FOR VALUES IN (0)")
            alice.execute("SELECT rag.attach('small', 'body')")
            alice.execute("CREATE TABLE big (id int PRIMARY KEY, body text) PARTITION BY LIST (id)")
            alice.execute("SELECT rag.attach('big', 'body')")
            alice.execute(f"""DO $$ BEGIN
                FOR i IN 1..{budget + 1} LOOP
                    EXECUTE format('CREATE TABLE big_%s PARTITION OF big FOR VALUES IN (%s)', i, i);
                    IF i % 200 = 0 THEN COMMIT; END IF;
                END LOOP; END $$""")
        warnings = []
        assert _update(url, warnings) is True
        assert any(f"the {budget + 1} partitions of attached table public.big are left" in w for w in warnings), warnings
        with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
            assert alice.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'small_0'::regclass "
                                 "AND tgname LIKE 'rag_attachment_%'").fetchone()[0] == 4
            assert alice.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'big_1'::regclass").fetchone()[0] == 0


def test_an_owners_trigger_under_rags_name_does_not_stop_the_upgrade(server_url):
    """Review 41, finding 6: step 040 ran CREATE TRIGGER rag_attachment_<id>_<event> on each
    partition: a writer whose partition had a trigger of her own under that name made ALTER
    EXTENSION rag UPDATE fail for the whole database (42710). The trigger is left with a
    WARNING, and rag.check reports the partition."""
    with _db_070(server_url) as url:
        with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
            alice.execute("CREATE TABLE notes (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
            alice.execute("CREATE TABLE notes_a PARTITION OF notes FOR VALUES FROM (0) TO (100)")
            att = alice.execute("SELECT rag.attach('notes', 'body', mode => 'async')").fetchone()[0]
            alice.execute("CREATE FUNCTION mine() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$")
            alice.execute(f"CREATE TRIGGER rag_attachment_{att}_ins AFTER INSERT ON notes_a "
                          "FOR EACH STATEMENT EXECUTE FUNCTION mine()")
        warnings = []
        assert _update(url, warnings) is True
        assert any("already has a trigger named" in w for w in warnings), warnings
        with psycopg.connect(as_role(url, "alice"), autocommit=True) as alice:
            watched = dict(alice.execute(
                "SELECT tgrelid::regclass::text, count(*) FROM pg_trigger WHERE tgfoid = 'rag._attached_changed()'::regprocedure "
                "AND tgargs = convert_to(%s::text, 'UTF8') || '\\x00'::bytea GROUP BY 1", (att,)).fetchall())
            assert watched == {"notes": 4, "notes_a": 3}
            assert any("name a partition" in p for p, in alice.execute("SELECT problem FROM rag.check()").fetchall())
