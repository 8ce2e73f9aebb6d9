"""rag.configure checks a value as its reader will (rag._check_setting): the bounds are
written twice, in sql/idempotent/030-settings.sql and at the readers in plpy/ragpg
(`_int_setting(s, "name", lo, hi)`). This keeps the two equal, and makes sure every
setting the Python reads with fixed bounds, and every on/off setting, has a rule. The chunk
limit of rag.chunks is written twice too (SQL trigger, Python constant): kept equal here."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULE = re.compile(r"\('(\w+)', '(int|float|bool)', (NULL|[-0-9.e]+), (NULL|[-0-9.e]+)\)")
READ = re.compile(r'_(int|float)_setting\((?:self\.)?s, "(\w+)", ([-0-9._e]+|1 << 40), ([-0-9._e]+|1 << 40)\)')
BOOL = re.compile(r'_bool_setting\([^)]*"(\w+)"\)')


def sql_rules() -> dict:
    body = (ROOT / "sql/idempotent/030-settings.sql").read_text().split("rag._check_setting(setting_name text")[1]
    return {m[1]: (m[2], m[3], m[4]) for m in RULE.finditer(body.split("$$;")[0])}


def python_reads() -> dict:
    found: dict = {}
    for f in (ROOT / "plpy/ragpg").glob("*.py"):
        text = f.read_text()
        for kind, name, lo, hi in READ.findall(text):
            found.setdefault(name, set()).add((kind, eval(lo.replace("_", "")), eval(hi.replace("_", ""))))
        for name in BOOL.findall(text):
            found.setdefault(name, set()).add(("bool", None, None))
    return found


def test_every_fixed_bound_of_a_reader_is_the_rule_of_rag_configure():
    rules, reads = sql_rules(), python_reads()
    assert len(rules) >= 20 and len(reads) >= 15
    for name, seen in reads.items():
        assert name in rules, f"rag._check_setting has no rule for {name}"
        kind, lo, hi = rules[name]
        for want in seen:
            got = (kind, None if lo == "NULL" else float(lo), None if hi == "NULL" else float(hi))
            assert got == (want[0], *(None if x is None else float(x) for x in want[1:])), name


def test_every_rule_names_a_setting():
    text = (ROOT / "sql/idempotent/030-settings.sql").read_text()
    defaults = set(re.findall(r"^\s+\('(\w+)',", text.split("rag._setting_defaults()")[1].split("$$;")[0], re.M))
    assert set(sql_rules()) <= defaults


def test_the_chunk_limit_of_rag_chunks_is_the_longest_chunk_rag_makes():
    # rag._chunks_before_write refuses a longer chunk; rag's chunker never makes one, and the
    # extractive answerer reads at most this much of a chunk
    from ragpg.chunking import CHUNK_CHARS_MAX, WIDEST_WINDOW, max_chars

    body = (ROOT / "sql/idempotent/200-ingest.sql").read_text().split("FUNCTION rag._chunks_before_write()")[1]
    body = body.split("$$;")[0]
    tested = {int(x) for x in re.findall(r"char_length\(NEW\.content\) > (\d+)", body)}
    said = {int(x) for x in re.findall(r"'rag\.chunks: a chunk of document % is % characters, over the limit of (\d+)",
                                       body)}
    assert tested == said == {CHUNK_CHARS_MAX} == {max_chars(WIDEST_WINDOW)}
