"""Integration fixtures: a real Postgres from our image (docker/), started by testcontainers.

One container per test session; each test gets its own database, copied from a template
that already has the extension, so tests cannot see each other's rows.

The container shares the host's network namespace and listens on 127.0.0.1 only, on a
free port: model servers that tests start on loopback (the local llama.cpp LLM, scripted
HTTP servers) are then reachable from the database exactly as in a local install.
"""
from __future__ import annotations

import os
import socket
import uuid

import psycopg
import pytest
from pgtest import as_role, with_db

IMAGE = os.environ.get("RAGPG_IMAGE", "ragpg:0.12.0")
# login role -> the rag role it is granted
LOGIN_ROLES = {"alice": "rag_writer", "bob": "rag_writer", "carol": "rag_reader", "dora": "rag_admin",
               "nobody": None, "api": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _container_class():
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # older layout
        from testcontainers.postgres import PostgresContainer

    class HostNetworkPostgres(PostgresContainer):
        """PostgresContainer on the host's network: no port mapping, 127.0.0.1:<port>."""

        def get_connection_url(self, host=None, driver=None) -> str:
            return f"postgresql://{self.username}:{self.password}@127.0.0.1:{self.port}/{self.dbname}"
    return HostNetworkPostgres


def start_server(dbname: str, settings: str = ""):
    """A started container of our image on the host network (user and password tester),
    with `settings` added to the server's command line (e.g. "-c max_prepared_transactions=2")."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    port = free_port()
    container = _container_class()(IMAGE, port=port, username="tester", password="tester", dbname=dbname,
                                   driver=None)
    container.ports = {}  # nothing to publish on the host network
    container.with_kwargs(network_mode="host")
    container.with_env("POSTGRES_INITDB_ARGS", "--no-sync")
    container.with_env("PGPORT", str(port))  # the server's and psql's default port
    container.with_command(f"postgres -c listen_addresses=127.0.0.1 {settings}".strip())
    container.start()
    return container


@pytest.fixture(scope="session")
def pg_container():
    container = start_server("tester")
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


@pytest.fixture(scope="session")
def fake_openai():
    """A scripted OpenAI-compatible server on loopback (a fake provider; tests/openai_fake.py)."""
    from openai_fake import FakeOpenAI

    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def local_llm():
    """The real local LLM: SmolLM2-135M served by llama-cpp-python on 127.0.0.1 (one thread).
    Yields its base_url."""
    from ragpg_cli import llm

    port = free_port()
    proc = llm.start(port, threads=1)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        llm.stop(proc)
