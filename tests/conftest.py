"""Integration fixtures: a real Postgres from our image (docker/), started by testcontainers.

One container per test session; each test gets its own database, copied from a template
that already has the extension, so tests cannot see each other's rows.
"""
from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from pgtest import as_role, with_db

IMAGE = os.environ.get("RAGPG_IMAGE", "ragpg:0.1.0")
# login role -> the rag role it is granted
LOGIN_ROLES = {"alice": "rag_writer", "bob": "rag_writer", "carol": "rag_reader", "dora": "rag_admin",
               "nobody": None, "api": None}


@pytest.fixture(scope="session")
def pg_container():
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # older layout
        from testcontainers.postgres import PostgresContainer
    container = PostgresContainer(IMAGE, username="tester", password="tester", dbname="tester", driver=None)
    container.with_env("POSTGRES_INITDB_ARGS", "--no-sync")
    container.start()
    try:
        url = container.get_connection_url()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE rag_template")
        with psycopg.connect(with_db(url, "rag_template"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION rag CASCADE")
            # login roles for the tenancy tests (roles are cluster-wide)
            for name, group in LOGIN_ROLES.items():
                conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{name}'"
                             + (f" IN ROLE {group}" if group else ""))
            # the HTTP API's login role may SET ROLE to the roles its keys map to
            conn.execute("GRANT alice, bob, carol TO api")
        yield container
    finally:
        container.stop()


@pytest.fixture(scope="session")
def server_url(pg_container) -> str:
    return pg_container.get_connection_url()


@pytest.fixture
def dsn(server_url):
    """A fresh database with the rag extension, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE rag_template")
    yield with_db(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def connect(dsn):
    """connect(role) -> an autocommit connection to the test database as that login role."""
    conns = []

    def _connect(role: str) -> psycopg.Connection:
        conn = psycopg.connect(as_role(dsn, role), autocommit=True)
        conns.append(conn)
        return conn
    yield _connect
    for c in conns:
        c.close()


@pytest.fixture
def db(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn
