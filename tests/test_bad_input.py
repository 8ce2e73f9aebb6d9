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


LONG = "x" * 1_000_000
LONG_VALUE_CASES = [
    # (SQL, parameters, SQLSTATE, message start): a megabyte passed where a short word belongs,
    # from plpgsql (rag._shown) and from PL/Python (ragpg.errors.shown)
    ("SELECT * FROM rag.search('q', mode => %s)", (LONG,), "22023", "rag.search: mode must be hybrid, vector or lexical, got 'xxx"),
    ("SELECT rag.configure('window_embeddings', %s)", (LONG,), "22023", "rag.configure: setting rag.window_embeddings must be on or off"),
    ("SELECT rag.configure(%s, '1')", (LONG,), "42704", "rag.configure: unknown setting 'xxx"),
    ("SELECT rag.attach('rag.documents', 'content', mode => %s)", (LONG,), "22023", "rag.attach: mode must be sync or async"),
    ("SELECT rag.ingest_file(%s, 'x.pdf')", (b"not a pdf at all",), "22P03", None),   # (a short name: unchanged)
    ("SELECT rag.ingest_file(%s, %s)", (b"not a pdf at all", LONG + ".pdf"), "22P03", "rag.ingest_file: 'xxx"),
]


@pytest.mark.parametrize("sql,params,sqlstate,start", LONG_VALUE_CASES, ids=[c[0][:50] for c in LONG_VALUE_CASES])
def test_a_long_bad_value_is_shown_cut_with_its_length(db, sql, params, sqlstate, start):
    """The message names the problem and shows the value's first 80 characters and its
    length, not the whole value (the message becomes a server log line)."""
    with pytest.raises(psycopg.Error) as exc:
        db.execute(sql, params)
    msg = exc.value.diag.message_primary
    assert exc.value.sqlstate == sqlstate, msg[:300]
    if start is None:
        assert "'x.pdf'" in msg
        return
    assert msg.startswith(start), msg[:300]
    assert len(msg) < 400 and "characters)" in msg and f"{len(params[-1]):,}".replace(",", "") in msg.replace(",", ""), msg[:400]
    assert counts(db) == (0, 0)



def test_a_list_of_values_is_shown_short(db):
    """rag._shown_list (the tenants an ambiguous eval set name is in): each value as
    rag._shown shows it, the first five only, and ', ...' when there are more."""
    shown = db.execute("SELECT rag._shown_list(ARRAY['a', NULL, 'c'])").fetchone()[0]
    assert shown == "'a', NULL, 'c'"
    names = [f"t{i}" for i in range(7)]
    shown = db.execute("SELECT rag._shown_list(%s)", (names,)).fetchone()[0]
    assert shown == "'t0', 't1', 't2', 't3', 't4', ..."
    shown = db.execute("SELECT rag._shown_list(%s, 2)", ([LONG, "b", "c"],)).fetchone()[0]
    assert shown == "'" + "x" * 80 + "'... (1000000 characters), 'b', ..." and len(shown) < 200
    assert db.execute("SELECT rag._shown_list(ARRAY[]::text[])").fetchone()[0] is None

CONFIGURE_CASES = [
    # (setting, value, message fragment): what each setting's reader would refuse later
    ("window_embeddings", "maybe", "rag.window_embeddings must be on or off, got 'maybe'"),
    ("store_answers", "", "rag.store_answers must be on or off"),
    ("context_tokens", "lots", "rag.context_tokens must be an integer, got 'lots'"),
    ("context_tokens", "9", "rag.context_tokens must be between 10 and 1000000, got 9"),
    ("embedding_batch_size", "2.5", "must be an integer"),
    ("temperature", "NaN", "rag.temperature must be a number"),
    ("temperature", "2.01", "between 0 and 2"),
    ("temperature", "9" * 200_000, "rag.temperature must be a number"),   # not numeric's overflow (22003)
    ("bm25_b", "-0.1", "between 0 and 1"),
    ("max_k", "0", "between 1 and"),
    ("daily_budget", "ten", "rag.daily_budget must be a number"),
    ("ef_search", "fast", "rag.ef_search must be auto or between 1 and 1000"),
    ("ef_search", "0", "rag.ef_search must be auto or between 1 and 1000"),
    ("ef_search", "99999", "rag.ef_search must be auto or between 1 and 1000"),
    ("iterative_scan", "on", "rag.iterative_scan must be off, relaxed_order or strict_order"),
    ("chat_model", "gpt-nothing", "rag.chat_model must name a chat model"),
    ("chat_model", "all-MiniLM-L6-v2", "rag.chat_model must name a chat model"),   # an embedding model
]


@pytest.mark.parametrize("name,value,fragment", CONFIGURE_CASES, ids=[f"{c[0]}={c[1][:20]}" for c in CONFIGURE_CASES])
def test_configure_refuses_a_value_its_reader_would_refuse(db, name, value, fragment):
    db.execute("SELECT rag.configure('context_tokens', '2000')")
    before = db.execute("SELECT name, value FROM rag.config ORDER BY name").fetchall()
    with pytest.raises(psycopg.Error) as exc:
        db.execute("SELECT rag.configure(%s, %s)", (name, value))
    assert exc.value.sqlstate == "22023" and fragment in str(exc.value), exc.value
    assert db.execute("SELECT name, value FROM rag.config ORDER BY name").fetchall() == before
    # the database works as before: every session reads the old value
    db.execute("SELECT rag.ingest('Refunds take five business days.', 'r.md')")
    assert db.execute("SELECT rag.ask('How long do refunds take?')").fetchone()[0]["citations"]


def test_configure_stores_good_values_trimmed_and_null_resets(db, connect):
    dora, alice = connect("dora"), connect("alice")   # rag_admin, rag_writer
    with pytest.raises(psycopg.Error) as exc:
        alice.execute("SELECT rag.configure('context_tokens', '2500')")
    assert exc.value.sqlstate == "42501"
    with pytest.raises(psycopg.Error) as exc:                      # an admin's typo: refused, named
        dora.execute("SELECT rag.configure('store_answers', 'of')")
    assert exc.value.sqlstate == "22023" and "rag.store_answers" in str(exc.value)
    for name, value, stored in (("window_embeddings", " OFF ", "OFF"), ("context_tokens", " 2500 ", "2500"),
                                ("daily_budget", "", ""), ("daily_budget", "1.5e2", "1.5e2"),
                                ("ef_search", "auto", "auto"), ("iterative_scan", "strict_order", "strict_order"),
                                ("chat_model", "extractive", "extractive"), ("temperature", "2", "2"),
                                ("provider_timeout_seconds", "0.1", "0.1")):
        dora.execute("SELECT rag.configure(%s, %s)", (name, value))
        assert db.execute("SELECT value FROM rag.config WHERE name = %s", (name,)).fetchone()[0] == stored
    db.execute("SELECT rag.ingest('Refunds take five business days.', 'r.md')")   # read by the indexer: off
    assert db.execute("SELECT window_embeddings FROM rag.chunks").fetchone()[0] is None
    db.execute("SELECT rag.configure('window_embeddings', NULL)")
    assert db.execute("SELECT count(*) FROM rag.config WHERE name = 'window_embeddings'").fetchone()[0] == 0
