"""Bad input: a clear message and SQLSTATE, and nothing written."""
from __future__ import annotations

import psycopg
import pytest
from pgtest import counts

CASES = [
    # (sql, params, sqlstate, message fragment)
    ("SELECT rag.ingest(NULL, 'a.md')", None, "22004", "rag.ingest: content is NULL"),
    ("SELECT rag.ingest('', 'a.md')", None, "22023", "rag.ingest: content is empty"),
    ("SELECT rag.ingest(E' \\n\\t ', 'a.md')", None, "22023", "rag.ingest: content is empty"),
    ("SELECT rag.ingest('text', NULL)", None, "22004", "rag.ingest: source is NULL"),
    ("SELECT rag.ingest('text', '   ')", None, "22023", "rag.ingest: source is empty"),
    ("SELECT rag.ingest('text', 'a', metadata => '[1,2]')", None, "22023", "metadata must be a JSON object"),
    ("SELECT rag.ingest('text', 'a', metadata => '{\"format\": \"pdf\"}')", None, "22023", "format"),
    # a NUL byte cannot reach a text value: the server rejects it with its own SQLSTATE
    ("SELECT rag.ingest(convert_from('\\x6100620a'::bytea, 'UTF8'), 'nul.md')", None, "22021", "0x00"),
    ("INSERT INTO rag.documents (source, content) VALUES ('a', '')", None, "22023",
     "rag.documents: content is empty"),
    ("INSERT INTO rag.documents (source, content) VALUES ('a', NULL)", None, "22004",
     "rag.documents: content is NULL"),
    ("SELECT rag.ask('')", None, "22023", "rag.ask: query is empty"),
    ("SELECT rag.ask('   ')", None, "22023", "rag.ask: query is empty"),
    ("SELECT rag.ask(NULL)", None, "22004", "rag.ask: query is NULL"),
    ("SELECT * FROM rag.search('')", None, "22023", "rag.search: query is empty"),
    ("SELECT * FROM rag.search('refunds', k => 0)", None, "22023", "k must be between 1 and 1000"),
    ("SELECT * FROM rag.search('refunds', k => -3)", None, "22023", "k must be between 1 and 1000"),
    ("SELECT * FROM rag.search('refunds', k => 100000)", None, "22023", "k must be between 1 and 1000"),
    ("SELECT * FROM rag.search(repeat('x', 5000))", None, "22023", "over the limit of 4000"),
    ("SELECT rag.embed('')", None, "22023", "rag.embed: input is empty"),
]


@pytest.mark.parametrize("sql,params,sqlstate,fragment", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_input_is_rejected_cleanly(db, sql, params, sqlstate, fragment):
    db.execute("SELECT rag.ingest('Existing document about refunds.', 'keep.md')")
    before = counts(db)
    with pytest.raises(psycopg.Error) as exc:
        db.execute(sql, params)
    assert exc.value.sqlstate == sqlstate, exc.value
    assert fragment in str(exc.value)
    assert counts(db) == before


def test_document_over_the_size_limit(db):
    db.execute("SET rag.max_document_bytes = 1000")
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.ingest(%s, 'big.md')", ("word " * 300,))
    assert exc.value.sqlstate == "22023"
    assert "1500 bytes, over the limit of 1000 bytes" in str(exc.value)
    assert exc.value.diag.message_hint and "rag.max_document_bytes" in exc.value.diag.message_hint
    assert counts(db) == (0, 0)


def test_default_size_limit_rejects_a_50_mb_document(db):
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.ingest(repeat('a', 50 * 1000 * 1000), 'huge.md')")
    assert exc.value.sqlstate == "22023" and "over the limit of 10000000 bytes" in str(exc.value)
    assert counts(db) == (0, 0)


def test_nul_byte_from_a_client_never_reaches_the_server(db):
    # psycopg refuses to send a NUL in a text parameter; nothing is written
    with pytest.raises((psycopg.DataError, ValueError)):
        db.execute("SELECT rag.ingest(%s, 'nul.md')", ("a\x00b",))
    assert counts(db) == (0, 0)


def test_bad_setting_names_the_setting(db):
    db.execute("SET rag.chunk_target_tokens = 'lots'")
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.ingest('Some text to index.', 'a.md')")
    assert exc.value.sqlstate == "22023" and "rag.chunk_target_tokens must be an integer" in str(exc.value)
    assert counts(db) == (0, 0)


def test_errors_from_python_functions_carry_no_prefix(db):
    # rag.ask is PL/Python: errors of the SQL it runs keep their own message and SQLSTATE
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.ask('   ')")
    assert exc.value.diag.message_primary == "rag.ask: query is empty"
    assert exc.value.sqlstate == "22023"
