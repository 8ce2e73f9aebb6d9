"""Input hardening: hostile or odd input gets a named error and changes nothing."""
from __future__ import annotations

import psycopg
import pytest
from pgtest import counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import pq

ALLOWED_SQLSTATES = {"22023", "22004", "22021", "54000"}


def raw_error(conn, sql: bytes, params: list[bytes]) -> tuple[str, str]:
    """Send text parameters as raw bytes (what a client with broken encoding sends)."""
    res = conn.pgconn.exec_params(sql, params, None, [0] * len(params))
    assert res.status == pq.ExecStatus.FATAL_ERROR, res.status
    return (res.error_field(pq.DiagnosticField.SQLSTATE).decode(),
            res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY).decode())


def test_invalid_utf8_from_a_client(db):
    db.execute("SELECT rag.ingest('A kept document.', 'keep.md')")
    before = counts(db)
    state, msg = raw_error(db, b"SELECT rag.ingest($1, 'bad.md')", [b"abc \xff\xfe def"])
    assert state == "22021" and "invalid byte sequence" in msg
    state, _ = raw_error(db, b"SELECT * FROM rag.search($1)", [b"caf\xc3"])
    assert state == "22021"
    assert counts(db) == before


def test_query_of_100k_characters(db):
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT * FROM rag.search(%s)", ("refund " * 15000,))
    assert exc.value.sqlstate == "22023" and "105000 characters, over the limit of 4000" in str(exc.value)


@pytest.mark.parametrize("k", [None, 0, -1, 2**31 - 1])
def test_k_out_of_range(db, k):
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT * FROM rag.search('refunds', k => %s::int)", (k,))
    assert exc.value.sqlstate == "22023" and "k must be between 1 and" in str(exc.value)


def test_malformed_jsonb_metadata(db):
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.ingest('text here', 'a.md', metadata => %s::jsonb)", ('{"team": ',))
    assert exc.value.sqlstate == "22P02"  # invalid_text_representation, from Postgres' json parser
    for bad, kind in (("null", "null"), ('"str"', "string"), ("42", "number")):
        with pytest.raises(psycopg.Error) as exc:
            db.execute("SELECT rag.ingest('text here', 'a.md', metadata => %s::jsonb)", (bad,))
        assert exc.value.sqlstate == "22023" and f"got {kind}" in str(exc.value)
    assert counts(db) == (0, 0)


def test_quotes_and_semicolons_are_data(db):
    source = "x'); DROP TABLE rag.chunks; --\"; SELECT 1;"
    doc = db.execute("SELECT rag.ingest('Harmless text about tables.', %s, title => %s)",
                     (source, 'Robert"); DROP TABLE students;--')).fetchone()[0]
    assert db.execute("SELECT source FROM rag.documents WHERE id = %s", (doc,)).fetchone()[0] == source
    assert counts(db) == (1, 1)
    # a query made of tsquery operators is just words to the lexical leg
    for q in ("a & b | !c <-> d:*", "'; DELETE FROM rag.documents; --", "((((", "\\'"):
        db.execute("SELECT * FROM rag.search(%s)", (q,)).fetchall()
    assert counts(db) == (1, 1)


def test_resource_limits_are_settings(db):
    names = {r[0] for r in db.execute("SELECT name FROM rag.settings()")}
    assert {"max_document_bytes", "max_query_chars", "max_k"} <= names
    db.execute("SET rag.max_query_chars = 10")
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT * FROM rag.search('a query longer than ten')")
    assert "over the limit of 10" in str(exc.value)


unicode_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                       min_size=0, max_size=400)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=unicode_text, query=unicode_text)
def test_random_unicode_never_breaks_the_sql_surface(db, content, query):
    before = counts(db)
    try:
        db.execute("SELECT rag.ingest(%s, %s)", (content, "doc-" + str(abs(hash(content)))))
        ok = True
    except psycopg.Error as e:
        assert e.sqlstate in ALLOWED_SQLSTATES, (e.sqlstate, str(e))
        assert counts(db) == before
        ok = False
    if ok:
        assert db.execute("SELECT max(tokens) <= 254 FROM rag.chunks").fetchone()[0] in (True, None)
    try:
        rows = db.execute("SELECT * FROM rag.search(%s, 3)", (query,)).fetchall()
        assert len(rows) <= 3
        out = db.execute("SELECT rag.ask(%s)", (query,)).fetchone()[0]
        assert isinstance(out["answer"], str) and isinstance(out["citations"], list)
    except psycopg.Error as e:
        assert e.sqlstate in ALLOWED_SQLSTATES, (e.sqlstate, str(e))
