"""Provider API keys: secrets kept out of SQL.

rag.api_keys holds a key's name, where its secret is ('file' or 'env') and, through
rag.api_key_grants, who may use it. The secret itself is
  * 'file': in ragpg_keys/<name> under the data directory (the backend's working
    directory), mode 0600, owned by the server's OS user: no SQL role can read it
    (pg_read_file needs superuser or pg_read_server_files);
  * 'env': in an environment variable of the server process.
So it never appears in a table, a view, a query text, pg_stat_activity or an error. The
code that reads it runs inside the server, for a role that rag.api_keys shows the key to
(row-level security: roles granted the key, and rag_admin).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidParameter, ModelUnavailable, NotAllowed

KEY_DIR = "ragpg_keys"


def _path(name: str) -> Path:
    return Path(os.getcwd()) / KEY_DIR / name


def write(name: str, secret: str | None) -> None:
    """Store (or with None, remove) the secret of key `name` (rag.set_api_key)."""
    if not name or "/" in name or name.startswith("."):
        raise InvalidParameter(f"rag: invalid key name {name!r}")
    path = _path(name)
    if secret is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secret.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read(plpy, name: str, model: str) -> str:
    """The secret of key `name` for the current role, or a clear error (never the secret)."""
    rows = plpy.execute(plpy.prepare(
        "SELECT k.source, k.env_var FROM rag.api_keys AS k WHERE k.name = $1 AND rag._may_use_key(k.name)",
        ["text"]), [name])
    if not rows:
        role = plpy.execute("SELECT current_user AS u")[0]["u"]
        raise NotAllowed(f"rag: role {role} may not use API key {name!r} (needed by model {model!r})",
                         hint=f"an administrator can allow it: SELECT rag.grant_api_key('{name}', '{role}')")
    if rows[0]["source"] == "env":
        var = rows[0]["env_var"]
        secret = os.environ.get(var)
        if not secret:
            raise ModelUnavailable(f"rag: API key {name!r} comes from the environment variable {var}, "
                                   "which the database server does not have",
                                   hint=f"set {var} in the server's environment and restart it")
        return secret
    try:
        return _path(name).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ModelUnavailable(f"rag: the secret of API key {name!r} is missing on this server",
                               hint=f"store it again: SELECT rag.set_api_key('{name}', $1) (pg_dump does not carry secrets)") from None
