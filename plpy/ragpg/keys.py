"""Provider API keys: secrets kept out of SQL.

rag.api_keys holds a key's name, where its secret is ('file' or 'env') and, through
rag.api_key_grants, who may use it. The secret itself is
  * 'file': in ragpg_database_keys/<database oid>/<name> under the data directory (the backend's
    working directory), mode 0600, owned by the server's OS user: no SQL role can read it
    (pg_read_file needs superuser or pg_read_server_files). Each database has a directory
    of its own: a key name means the same secret in one database only, so an administrator
    of one database can neither use nor replace another's (0.5.0; before, ragpg_keys/<name>
    was shared by every database of the cluster, and 0.5.0's upgrade copies such a file
    into the directory of each database that has the key);
  * 'env': in an environment variable of the server process.
So it never appears in a table, a view, a query text, pg_stat_activity or an error. The
code that reads it runs inside the server, for a role that rag.api_keys shows the key to
(row-level security: roles granted the key, and rag_admin).

A key is bound to the base URL it was set for, and the binding that counts is kept next to
the secret (the file holds both, as JSON), where no SQL role can change it: a model at any
other URL cannot use the key, whatever rag.models or rag.api_keys say. A file written
before 0.2.0 (the bare secret) is bound to nothing and is not used until set again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import InvalidParameter, ModelUnavailable, NotAllowed, shown

KEY_DIR = "ragpg_database_keys"   # (before 0.5.0: ragpg_keys/<name>, no directory per database)
_DATABASE: list[int] = []   # this backend's database (a backend serves one for its life)


def database(plpy) -> int:
    """The OID of the current database: the directory of its keys."""
    if not _DATABASE:
        _DATABASE.append(int(plpy.execute(
            "SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()")[0]["oid"]))
    return _DATABASE[0]


def _path(name: str, db: int) -> Path:
    return Path(os.getcwd()) / KEY_DIR / str(db) / name


def bound_to(model_url: str, key_url: str | None) -> bool:
    """Whether a model at `model_url` may get a key bound to `key_url` (the URL or under it)."""
    if not key_url:
        return False
    model_url, key_url = model_url.rstrip("/"), key_url.rstrip("/")
    return model_url == key_url or model_url.startswith(key_url + "/")


def write(name: str, secret: str | None, base_url: str | None, db: int) -> None:
    """Store (or with None, remove) the secret of key `name` of database `db`, bound to
    `base_url` (rag.set_api_key)."""
    if not name or "/" in name or name.startswith("."):
        raise InvalidParameter(f"rag: invalid key name {shown(name)}")
    path = _path(name, db)
    if secret is None:
        path.unlink(missing_ok=True)
        return
    path.parent.parent.mkdir(mode=0o700, exist_ok=True)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"secret": secret, "base_url": base_url}).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read(plpy, name: str, model: str) -> str:
    """The secret of key `name` for the current role and model `model`, or a clear error
    (never the secret)."""
    rows = plpy.execute(plpy.prepare(
        "SELECT k.source, k.env_var, k.base_url, m.base_url AS model_url FROM rag.api_keys AS k, rag.models AS m "
        "WHERE k.name = $1 AND rag._may_use_key(k.name) AND m.name = $2", ["text", "text"]), [name, model])
    if not rows:
        role = plpy.execute("SELECT current_user AS u")[0]["u"]
        raise NotAllowed(f"rag: role {role} may not use API key {shown(name)} (needed by model {model!r})",
                         hint=f"an administrator can allow it: SELECT rag.grant_api_key('{name}', '{role}')")
    model_url = rows[0]["model_url"] or ""
    if rows[0]["source"] == "env":
        # set by a superuser only (rag.set_api_key, rag._key_binding): the table's binding counts
        if not bound_to(model_url, rows[0]["base_url"]):
            raise _unbound(name, model, model_url, rows[0]["base_url"])
        var = rows[0]["env_var"]
        secret = os.environ.get(var)
        if not secret:
            raise ModelUnavailable(f"rag: API key {shown(name)} comes from the environment variable {var}, "
                                   "which the database server does not have",
                                   hint=f"set {var} in the server's environment and restart it")
        return secret
    try:
        raw = _path(name, database(plpy)).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ModelUnavailable(f"rag: the secret of API key {shown(name)} is missing on this server",
                               hint=f"store it again: SELECT rag.set_api_key('{name}', $1, base_url => '...') (pg_dump does not carry secrets)") from None
    try:
        stored = json.loads(raw)
    except ValueError:
        stored = None
    if not isinstance(stored, dict):   # a bare secret, written before 0.2.0
        raise _unbound(name, model, model_url, None)
    if not bound_to(model_url, stored.get("base_url")):
        raise _unbound(name, model, model_url, stored.get("base_url"))
    return stored["secret"]


def _unbound(name: str, model: str, model_url: str, key_url: str | None) -> NotAllowed:
    return NotAllowed(f"rag: API key {shown(name)} may only be sent to {key_url or '(no URL)'}, "
                      f"and model {model!r} is at {model_url}",
                      hint=f"its owner can bind it: SELECT rag.set_api_key('{name}', $1, base_url => '...')")
