-- API key secrets move to a directory of each database's own under the data directory,
-- ragpg_database_keys/<database oid>/<name> (ragpg/keys.py; a directory apart, since a key
-- name may be all digits). Before 0.5.0 they were ragpg_keys/<name>, one
-- file for every database of the cluster with a key of that name, so an administrator of
-- one database could use, or replace, another's secret. The upgrade copies each such file
-- that this database has a key of into its own directory (mode 0600; the old file stays
-- for databases not upgraded yet). A new install and a restore find no keys here: nothing.
DO LANGUAGE plpython3u $python$
import os
import re
import shutil

# (the table's CHECK allows only such names; a file name, never a path, whatever it holds)
names = [r["name"] for r in plpy.execute(
    "SELECT k.name FROM rag.api_keys AS k WHERE k.source = 'file' ORDER BY k.name")
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", r["name"])]
if names:
    db = plpy.execute("SELECT d.oid FROM pg_catalog.pg_database AS d "
                      "WHERE d.datname = pg_catalog.current_database()")[0]["oid"]
    root = os.path.join(os.getcwd(), "ragpg_keys")               # before 0.5.0, one for all
    mine = os.path.join(os.getcwd(), "ragpg_database_keys")
    own = os.path.join(mine, str(db))
    copied = 0
    for name in names:
        old, new = os.path.join(root, name), os.path.join(own, name)
        if os.path.isfile(old) and not os.path.exists(new):
            for d in (mine, own):
                os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out, open(old, "rb") as src:
                shutil.copyfileobj(src, out)
                out.flush()
                os.fsync(out.fileno())
            copied += 1
    if copied:
        plpy.warning(f"rag: {copied} API key file(s) copied into ragpg_database_keys/{db}/ (this database's own); "
                    "the shared ragpg_keys/ can go once every database of the cluster is upgraded")
$python$;
