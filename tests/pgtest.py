"""Helpers shared by the integration tests (a module of its own: tests/unit has a conftest too)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time


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


def has_subxact_stats(conn) -> bool:
    """Whether the server has pg_stat_get_backend_subxact() (Postgres 16 and later)."""
    return int(conn.execute("SHOW server_version_num").fetchone()[0]) >= 160000


def skip_without_subxact_stats(conn) -> None:
    """Skip where the server lacks pg_stat_get_backend_subxact() (before Postgres 16)."""
    import pytest

    if not has_subxact_stats(conn):
        pytest.skip("pg_stat_get_backend_subxact() is Postgres 16's")


def subtransactions(conn) -> tuple[int, bool]:
    """(subtransaction ids this backend's open transaction holds in its cache, whether the
    cache of 64 overflowed); Postgres 16+."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute(
        "SELECT s.subxact_count, s.subxact_overflowed FROM pg_stat_get_backend_idset() AS b,"
        " pg_stat_get_backend_subxact(b) AS s WHERE pg_stat_get_backend_pid(b) = pg_backend_pid()").fetchone()


def worker_passes(dsn: str, role: str, seconds: float = 5.0, **run_args) -> list[str]:
    """Run `ragpg worker` (client/ragpg_cli/worker.py, interval 2 s) logged in as `role` for
    `seconds`, then stop it; the lines it printed for its passes."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.path.join(repo, "client"))
    args = ", ".join(f"{k}={v!r}" for k, v in {"interval": 2.0, **run_args}.items())
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys; from ragpg_cli.worker import run; "
                             f"sys.exit(run(sys.argv[1], {args}))", as_role(dsn, role)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    time.sleep(seconds)
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return [line for line in out.splitlines() if line.startswith("worker: pass")]
