"""Helpers shared by the integration tests (a module of its own: tests/unit has a conftest too)."""
from __future__ import annotations

import re


def with_db(url: str, db: str) -> str:
    """The same server URL, another database."""
    return re.sub(r"/[^/?]+(\?|$)", f"/{db}\\1", url, count=1)


def as_role(dsn: str, role: str) -> str:
    """The same database, logged in as one of conftest.LOGIN_ROLES (password = name)."""
    return re.sub(r"://[^@]+@", f"://{role}:{role}@", dsn, count=1)


def stats(conn) -> dict:
    """This backend's counters (model calls, texts embedded, ...)."""
    return conn.execute("SELECT rag.backend_stats()").fetchone()[0]


def counts(conn) -> tuple[int, int]:
    return conn.execute("SELECT (SELECT count(*) FROM rag.documents), (SELECT count(*) FROM rag.chunks)").fetchone()
