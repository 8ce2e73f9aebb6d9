"""chunk_text: markdown-aware, token-sized chunks that are exact slices of the input.

The invariants come from the module docstring of ragpg/chunking.py: every chunk is
text[start:end], chunks are in order, cover every non-space character, overlap only their
direct neighbour, never span two sections (headings #, ##, ### outside fenced code; an
empty heading that is no parent opens the next section), and never exceed max_tokens model
word pieces (without [CLS]/[SEP]) nor max_chars(max_tokens) characters.
"""
from __future__ import annotations

import base64
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragpg.chunking import Chunk, chunk_text, max_chars
from ragpg.errors import InvalidParameter, LimitExceeded

MAX = 254  # window 256 minus [CLS]/[SEP]

WORDS = ("postgres index table query vector search chunk token model embedding answer "
         "citation document section heading paragraph sentence window overlap database "
         "column row schema function trigger extension the a of to and in is for with "
         "quickly slowly carefully large small fast reliable incremental").split()


# --------------------------------------------------------------------------- helpers

def ntok(tokenizer, s: str) -> int:
    return len(tokenizer.encode(s, add_special_tokens=False).ids)


def prose(rng: random.Random, n_words: int, sentence_end: bool = True) -> str:
    """n_words of pseudo-English, in sentences of 8-20 words (or one run-on sentence)."""
    out, left = [], n_words
    while left > 0:
        k = min(left, rng.randint(8, 20))
        words = [rng.choice(WORDS) for _ in range(k)]
        if sentence_end:
            words[0] = words[0].capitalize()
            out.append(" ".join(words) + ".")
        else:
            out.append(" ".join(words))
        left -= k
    return " ".join(out)


_REF_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_REF_HEADING = re.compile(r"^(#{1,3})[ \t]+(\S.*)$")


def reference_headings(text: str) -> list[tuple[int, str, str]]:
    """(offset of the heading line, heading path, own title) per #/##/### line outside fences.

    Written from the documented rules, independently of the chunker's own parser. The path
    holds the nearest enclosing heading of each lower level ("## A", "## C" are siblings
    even without a "# " above them)."""
    return [(pos, path, title) for pos, path, title, _, _ in _reference_heading_lines(text)]


def _reference_heading_lines(text: str) -> list[tuple[int, str, str, int, int]]:
    """(offset, path, title, level, offset after the line) per heading line."""
    out, stack, in_fence, pos = [], [], False, 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if _REF_FENCE.match(body):
            in_fence = not in_fence
        elif not in_fence:
            m = _REF_HEADING.match(body)
            if m:
                # a closing run of '#' after a space or tab is not part of the title
                # (CommonMark: "# 0#" is titled "0#", "# 0 #" is titled "0")
                title = re.sub(r"[ \t]+#+$", "", m.group(2).rstrip(" \t")).strip()
                if len(title) > 200:  # a longer title is cut, and marked
                    title = title[:200].rstrip() + "…"
                level = len(m.group(1))
                stack = [(lv, t) for lv, t in stack if lv < level] + [(level, title)]
                out.append((pos, " > ".join(t for _, t in stack), title, level, pos + len(line)))
        pos += len(line)
    return out


def reference_sections(text: str) -> list[tuple[int, str, str, int]]:
    """reference_headings plus, per heading, the index of the heading whose section it is
    in: its own, or for a heading-only section that is not the parent of the next section
    with text, that of the next heading (and so on). The documented rule, read forward:
    a heading with nothing under it stands alone when every heading after it, up to and
    including the next one with text under it, is deeper; and the last heading always does."""
    lines = _reference_heading_lines(text)
    ends = [p for p, *_ in lines[1:]] + [len(text)]
    has_body = [bool(text[e:nxt].strip()) for (_, _, _, _, e), nxt in zip(lines, ends)]

    def alone(i: int) -> bool:
        if has_body[i] or i == len(lines) - 1:
            return True
        for j in range(i + 1, len(lines)):
            if lines[j][3] <= lines[i][3]:
                return False
            if has_body[j]:
                return True
        return False  # only empty headings follow

    out = []
    for i, (pos, path, title, _, _) in enumerate(lines):
        owner = next(j for j in range(i, len(lines)) if alone(j))
        out.append((pos, path, title, owner))
    return out


def check_invariants(text: str, chunks: list[Chunk], tokenizer, max_tokens: int = MAX,
                     neighbours_only: bool = True) -> None:
    """The documented invariants of chunk_text's output for `text`."""
    for i, c in enumerate(chunks):
        assert c.ord == i
        assert 0 <= c.start < c.end <= len(text)
        assert c.text == text[c.start:c.end], f"chunk {i} is not text[{c.start}:{c.end}]"
        assert c.text.strip(), f"chunk {i} is only whitespace: {c.text!r}"
        n = ntok(tokenizer, c.text)
        assert c.tokens == n, f"chunk {i}: tokens={c.tokens}, tokenizer says {n}"
        assert c.tokens <= max_tokens, f"chunk {i} has {c.tokens} > {max_tokens} tokens"
        assert len(c.text) <= max_chars(max_tokens), f"chunk {i} has {len(c.text)} characters"
    for a, b in zip(chunks, chunks[1:]):
        assert b.start > a.start, "chunks out of order (start)"
        assert b.end > a.end, "chunks out of order (end)"
    if neighbours_only:
        for a, c in zip(chunks, chunks[2:]):
            assert c.start >= a.end, f"chunk {c.ord} overlaps non-neighbour chunk {a.ord}"
    covered = bytearray(len(text))
    for c in chunks:
        covered[c.start:c.end] = b"\x01" * (c.end - c.start)
    lost = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not lost, f"{len(lost)} non-space chars not in any chunk, first at {lost[0]}: " \
                     f"{text[lost[0]:lost[0] + 40]!r}"


def check_sections(text: str, chunks: list[Chunk], full_path: bool = True) -> None:
    """No chunk contains a heading line other than at its very start or in the run of empty
    headings that opens its section (see reference_sections); headings match.

    full_path=False only checks the last part of the path (the section's own title): the
    full path is wrong when a heading level is skipped (see test_heading_path_sibling_*)."""
    heads = reference_sections(text)
    for c in chunks:
        before = [i for i, (pos, *_) in enumerate(heads) if pos <= c.start]
        k = before[-1] if before else None
        for m, (pos, *_) in enumerate(heads):
            if c.start < pos < c.end:
                assert k is not None and k < m <= heads[k][3], \
                    f"chunk {c.ord} [{c.start}:{c.end}] spans the heading at {pos}"
        if k is None:
            assert c.heading is None, f"chunk {c.ord}"
            continue
        _, path, title, _ = heads[heads[k][3]]
        if full_path:
            assert c.heading == path, f"chunk {c.ord}"
        else:
            assert c.heading is not None and c.heading.endswith(title), f"chunk {c.ord}"


# --------------------------------------------------------------------------- sections

DOC = """Intro text before any heading, just a line.

# Guide

Top level words of the guide.

## Install

Run make install to build the extension.

### From source

Clone the repository and run make.

## Usage

Call rag.ask with a question.
# Appendix
Trailing notes.
"""


def test_headings_split_sections_and_record_path(tokenizer):
    chunks = chunk_text(DOC, tokenizer, target_tokens=200, overlap_tokens=32)
    check_invariants(DOC, chunks, tokenizer)
    check_sections(DOC, chunks)
    by_heading = {}
    for c in chunks:
        by_heading.setdefault(c.heading, []).append(c.text)
    # the whole doc fits one window, so only the headings can separate chunks
    assert list(by_heading) == [None, "Guide", "Guide > Install", "Guide > Install > From source",
                                "Guide > Usage", "Appendix"]
    assert all(len(v) == 1 for v in by_heading.values())
    assert by_heading[None] == ["Intro text before any heading, just a line."]
    assert by_heading["Guide > Install"][0].startswith("## Install")
    assert "Clone" not in by_heading["Guide > Install"][0]
    assert by_heading["Guide > Install > From source"][0].startswith("### From source")
    assert by_heading["Guide > Usage"][0] == "## Usage\n\nCall rag.ask with a question."
    assert by_heading["Appendix"][0] == "# Appendix\nTrailing notes."


def test_heading_path_same_level_siblings(tokenizer):
    text = "# T\n\n## A\n\nalpha text\n\n### B\n\nbeta text\n\n## C\n\ngamma\n\n### D\n\ndelta"
    chunks = chunk_text(text, tokenizer)
    assert [c.heading for c in chunks] == ["T", "T > A", "T > A > B", "T > C", "T > C > D"]
    check_invariants(text, chunks, tokenizer)
    check_sections(text, chunks)


def test_heading_path_sibling_h2_without_h1(tokenizer):
    text = "## A\n\nalpha text here\n\n### B\n\nbeta text here\n\n## C\n\ngamma\n\n### D\n\ndelta"
    chunks = chunk_text(text, tokenizer)
    assert [c.heading for c in chunks] == ["A", "A > B", "C", "C > D"]
    check_invariants(text, chunks, tokenizer)


def test_deeper_headings_do_not_split(tokenizer):
    text = "## A\n\nalpha\n\n#### not a section\n\nbeta\n\n#nospace is not a heading\n\ngamma"
    chunks = chunk_text(text, tokenizer)
    assert len(chunks) == 1 and chunks[0].heading == "A" and chunks[0].text == text


def test_heading_trailing_hashes_stripped(tokenizer):
    chunks = chunk_text("## Title ##\n\nbody text", tokenizer)
    assert [c.heading for c in chunks] == ["Title"]


def test_heading_ending_in_hash_keeps_it(tokenizer):
    chunks = chunk_text("## Using C#\n\nbody text", tokenizer)
    assert [c.heading for c in chunks] == ["Using C#"]


def test_empty_and_blank_input(tokenizer):
    assert chunk_text("", tokenizer) == []
    assert chunk_text(" \n\n\t \n", tokenizer) == []


# --------------------------------------------------------------------------- slices, order, coverage

def test_invariants_on_long_markdown(tokenizer):
    rng = random.Random(1)
    parts = []
    for s in range(6):
        parts.append(f"{'#' * (1 + s % 3)} Section {s}\n")
        for _ in range(rng.randint(1, 8)):
            parts.append(prose(rng, rng.randint(5, 120)) + "\n")
        parts.append("```sql\nSELECT 1;\n\n-- ## comment\nSELECT 2;\n```\n")
    text = "\n".join(parts)
    for target, overlap in ((200, 32), (60, 10), (30, 0), (254, 253)):
        chunks = chunk_text(text, tokenizer, target_tokens=target, overlap_tokens=overlap)
        assert len(chunks) > 6
        check_invariants(text, chunks, tokenizer, neighbours_only=(overlap == 0))
        check_sections(text, chunks)
        assert all(c.tokens <= MAX for c in chunks)


def test_real_postgres_page(tokenizer):
    page = Path("/usr/share/doc/postgresql-doc-15/html/sql-createindex.html")
    if not page.is_file():
        pytest.skip(f"{page} not present on this machine")
    from ragpg.text import to_text

    text, _ = to_text(page.read_text(encoding="utf-8"))
    chunks = chunk_text(text, tokenizer)
    assert len(chunks) > 10
    check_invariants(text, chunks, tokenizer, neighbours_only=False)
    check_sections(text, chunks, full_path=False)
    own = {c.heading.split(" > ")[-1] for c in chunks if c.heading}
    assert own >= {"Synopsis", "Description", "Parameters", "Examples"}


# --------------------------------------------------------------------------- token limits

def test_long_paragraph_with_sentences_is_split(tokenizer):
    text = prose(random.Random(7), 2000)
    assert "\n" not in text and ntok(tokenizer, text) > 4 * MAX
    chunks = chunk_text(text, tokenizer)
    assert len(chunks) >= ntok(tokenizer, text) // MAX
    check_invariants(text, chunks, tokenizer, neighbours_only=False)
    # chunks break at sentence ends (the paragraph has no other boundary it could prefer)
    for c in chunks[:-1]:
        assert c.text.endswith("."), c.text[-30:]


def test_long_paragraph_without_sentences_splits_at_words(tokenizer):
    text = prose(random.Random(8), 2000, sentence_end=False)
    assert not re.search(r"[.!?;:]", text)
    chunks = chunk_text(text, tokenizer, overlap_tokens=0)
    assert len(chunks) >= 5
    check_invariants(text, chunks, tokenizer)
    for c in chunks:
        assert c.start == 0 or text[c.start - 1] == " ", "chunk starts mid-word"
        assert c.end == len(text) or text[c.end] == " ", "chunk ends mid-word"


@pytest.mark.parametrize("kind", ["base64", "cjk", "dotted"])
def test_single_huge_word_is_split(tokenizer, kind):
    if kind == "base64":
        text = base64.b64encode(random.Random(3).randbytes(2250)).decode()
    elif kind == "cjk":
        text = "".join(random.Random(4).choice("数据库索引向量搜索文档模型") for _ in range(3000))
    else:
        text = ".".join("x" * 9 for _ in range(300))  # 2999 chars, no spaces
    assert len(text) >= 2999 and " " not in text
    assert ntok(tokenizer, text) > 2 * MAX
    chunks = chunk_text(text, tokenizer)
    assert len(chunks) >= 3
    check_invariants(text, chunks, tokenizer, neighbours_only=False)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_unknown_word_of_3000_chars(tokenizer):
    # BERT WordPiece maps any word over 100 chars to a single [UNK] token: it fits the
    # window as one piece, so there is nothing to split; it must still be kept whole.
    text = "before " + "x" * 3000 + " after"
    chunks = chunk_text(text, tokenizer)
    check_invariants(text, chunks, tokenizer)
    assert "".join(c.text for c in chunks).count("x") == 3000


@pytest.mark.parametrize("max_tokens", [8, 16, 50])
def test_small_max_tokens(tokenizer, max_tokens):
    text = DOC + "\n" + prose(random.Random(9), 300)
    chunks = chunk_text(text, tokenizer, target_tokens=max_tokens, overlap_tokens=0,
                        max_tokens=max_tokens)
    check_invariants(text, chunks, tokenizer, max_tokens=max_tokens)
    check_sections(text, chunks)


# --------------------------------------------------------------------------- overlap

def _paragraph_doc(rng, n_paras=20, words=25):
    return "\n\n".join(prose(rng, words) for _ in range(n_paras))


def test_overlap_between_consecutive_chunks(tokenizer):
    text = _paragraph_doc(random.Random(11))
    chunks = chunk_text(text, tokenizer, target_tokens=100, overlap_tokens=20)
    assert len(chunks) >= 5
    check_invariants(text, chunks, tokenizer, neighbours_only=False)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start < a.end, f"chunks {a.ord} and {b.ord} share no text"
        shared = text[b.start:a.end]
        assert a.text.endswith(shared) and b.text.startswith(shared)
        assert 0 < ntok(tokenizer, shared) <= 20
        # snapped to a tokenizer word start: never inside a run of letters/digits
        # (punctuation is a word of its own for BERT, so ". Next" can start an overlap)
        assert not (text[b.start - 1].isalnum() and text[b.start].isalnum()), \
            f"overlap starts mid-word: {text[b.start - 10:b.start + 10]!r}"


def test_no_overlap_when_zero(tokenizer):
    text = _paragraph_doc(random.Random(11))
    chunks = chunk_text(text, tokenizer, target_tokens=100, overlap_tokens=0)
    assert len(chunks) >= 5
    check_invariants(text, chunks, tokenizer)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start >= a.end


def test_overlap_never_crosses_heading(tokenizer):
    rng = random.Random(12)
    text = "# A\n\n" + _paragraph_doc(rng, 8) + "\n\n# B\n\n" + _paragraph_doc(rng, 8)
    b_pos = text.index("# B")
    chunks = chunk_text(text, tokenizer, target_tokens=100, overlap_tokens=40)
    check_invariants(text, chunks, tokenizer, neighbours_only=False)
    check_sections(text, chunks, full_path=False)
    a_chunks = [c for c in chunks if c.heading == "A"]
    b_chunks = [c for c in chunks if c.heading == "B"]
    assert len(a_chunks) >= 2 and len(b_chunks) >= 2
    assert all(c.end <= b_pos for c in a_chunks)
    assert b_chunks[0].start == b_pos  # the first chunk of B carries nothing from A
    assert b_chunks[1].start < b_chunks[0].end  # ... while chunks inside B do overlap


def test_overlap_only_with_direct_neighbour(tokenizer):
    p0 = " ".join(["alpha"] * 198) + "."   # 199 tokens: fills chunk 0 (target 200)
    p1 = "Short one here."                 # 4 tokens: chunk 1 = 32-token tail of chunk 0 + p1
    p2 = " ".join(["gamma"] * 170) + "."   # 171 tokens: chunk 2 = 32-token tail of chunk 1 + p2
    assert (ntok(tokenizer, p0), ntok(tokenizer, p1), ntok(tokenizer, p2)) == (199, 4, 171)
    text = "\n\n".join([p0, p1, p2])
    chunks = chunk_text(text, tokenizer, target_tokens=200, overlap_tokens=32)
    check_invariants(text, chunks, tokenizer, neighbours_only=True)


def test_overlap_after_mid_word_split_keeps_order(tokenizer):
    # one "word" of 12 word pieces with max_tokens=9 is cut mid-word; the rest re-tokenizes
    # to more pieces than it had inside the word, which takes the fallback path
    text = "00000000000000A0RG02:0:0:0:"
    chunks = chunk_text(text, tokenizer, target_tokens=2, overlap_tokens=1, max_tokens=9)
    check_invariants(text, chunks, tokenizer, max_tokens=9, neighbours_only=False)


# --------------------------------------------------------------------------- fenced code

@pytest.mark.parametrize("fence", ["```", "~~~", "```python"])
def test_fenced_code_is_not_split_on_headings(tokenizer, fence):
    close = fence[:3]
    code = f"{fence}\n## not a heading\n\nx = 1\n\n\n# also not\ny = 2\n{close}"
    text = f"# Real\n\nSome text before.\n\n{code}\n\nSome text after.\n\n# Next\n\nEnd."
    for target in (200, 30):
        chunks = chunk_text(text, tokenizer, target_tokens=target, overlap_tokens=0)
        check_invariants(text, chunks, tokenizer)
        assert {c.heading for c in chunks} == {"Real", "Next"}
        # the code block is one paragraph: some chunk holds it whole
        assert any(code in c.text for c in chunks), [c.text for c in chunks]


def test_unclosed_fence_swallows_later_headings(tokenizer):
    text = "## A\n\n```\n## B\n\ncode\n\n## C\n\nmore"
    chunks = chunk_text(text, tokenizer)
    assert {c.heading for c in chunks} == {"A"}
    check_invariants(text, chunks, tokenizer)


# --------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("kwargs", [
    dict(target_tokens=255),                        # target > max (254)
    dict(target_tokens=300, max_tokens=254),
    dict(target_tokens=0),
    dict(target_tokens=100, overlap_tokens=100),    # overlap == target
    dict(target_tokens=100, overlap_tokens=150),    # overlap > target
    dict(overlap_tokens=-1),
    dict(max_tokens=7, target_tokens=4, overlap_tokens=0),
])
def test_invalid_parameters(tokenizer, kwargs):
    with pytest.raises(InvalidParameter) as e:
        chunk_text("some text", tokenizer, **kwargs)
    assert e.value.sqlstate == "22023"
    assert "chunk_text" in e.value.message


def test_boundary_parameters_are_valid(tokenizer):
    text = prose(random.Random(13), 200)
    for kw in (dict(target_tokens=254, overlap_tokens=253), dict(target_tokens=1, overlap_tokens=0),
               dict(target_tokens=8, overlap_tokens=7, max_tokens=8)):
        chunks = chunk_text(text, tokenizer, **kw)
        check_invariants(text, chunks, tokenizer, max_tokens=kw.get("max_tokens", MAX),
                         neighbours_only=False)


# --------------------------------------------------------------------------- properties

_HEAD_TITLE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                      min_size=1, max_size=15)
_LINE = st.one_of(
    st.text(max_size=80),                                                # any unicode, \n, # ...
    st.text(alphabet="ab #\n\t.", max_size=40),                          # markdown-ish noise
    st.builds(lambda lvl, t: "#" * lvl + " " + t, st.integers(1, 4), _HEAD_TITLE),
    st.sampled_from(["", "", "   ", "\t", "```", "~~~", "```sql", "  ```", "\r"]),
    st.builds(lambda n, seed: prose(random.Random(seed), n), st.integers(1, 300), st.integers()),
    st.text(alphabet="abcdefghij+/=-", min_size=50, max_size=900),        # long "words"
    st.text(alphabet="数据库索引向量搜索 。", min_size=1, max_size=400),     # CJK: 1 token per char
    st.text(alphabet="xé\u0301\u200b\x00İ🙂", max_size=60),              # odd normalisation
)
_TEXT = st.lists(_LINE, max_size=30).map("\n".join)


@st.composite
def _params(draw, overlap=True):
    # small windows (below 100, the most pieces of one WordPiece word) cut words and take
    # the fallback re-split path; they are drawn with overlap too
    max_tokens = draw(st.sampled_from([8, 9, 16, 40, 100, 128, 200, 254]))
    target = draw(st.integers(1, max_tokens))
    ov = draw(st.integers(0, target - 1)) if overlap else 0
    return target, ov, max_tokens


_SETTINGS = settings(max_examples=150, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(text=_TEXT, params=_params())
def test_property_invariants(tokenizer, text, params):
    target, overlap, max_tokens = params
    chunks = chunk_text(text, tokenizer, target_tokens=target, overlap_tokens=overlap,
                        max_tokens=max_tokens)
    check_invariants(text, chunks, tokenizer, max_tokens=max_tokens, neighbours_only=True)
    check_sections(text, chunks, full_path=True)


@_SETTINGS
@given(text=_TEXT, params=_params(overlap=False))
def test_property_no_overlap_means_disjoint(tokenizer, text, params):
    target, overlap, max_tokens = params
    chunks = chunk_text(text, tokenizer, target_tokens=target, overlap_tokens=0,
                        max_tokens=max_tokens)
    check_invariants(text, chunks, tokenizer, max_tokens=max_tokens)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start >= a.end


@settings(max_examples=100, deadline=None, database=None)
@given(text=st.text(max_size=2000), target=st.integers(1, 254))
def test_property_raw_unicode(tokenizer, text, target):
    chunks = chunk_text(text, tokenizer, target_tokens=target, overlap_tokens=target // 3)
    check_invariants(text, chunks, tokenizer, neighbours_only=False)
    check_sections(text, chunks, full_path=False)


def test_a_form_feed_is_a_page_break(tokenizer):
    text = "# Guide\n\nPage one is short.\f\fPage three text.\n\n## Usage\n\nStill page three.\fPage four."
    chunks = chunk_text(text, tokenizer, target_tokens=200, overlap_tokens=32)
    check_invariants(text, chunks, tokenizer)
    # no chunk spans a page; the heading path runs on across pages; a blank page makes no chunk
    assert [(c.page, c.heading, c.text) for c in chunks] == [
        (1, "Guide", "# Guide\n\nPage one is short."), (3, "Guide", "Page three text."),
        (3, "Guide > Usage", "## Usage\n\nStill page three."), (4, "Guide > Usage", "Page four.")]
    assert all(c.page is None for c in chunk_text("No pages here.", tokenizer))


def test_pages_count_toward_the_chunk_limit_before_they_are_made(tokenizer):
    with pytest.raises(LimitExceeded, match="more than 100 pages"):
        chunk_text("page\f" * 100_000, tokenizer, max_chunks=100)
    assert len(chunk_text("\f" * 100_000 + "text", tokenizer)) == 1   # blank pages make nothing


# -- windows: the pieces embedded beside each chunk (rag.chunks.window_embeddings) ----------

from ragpg.chunking import MAX_WINDOWS, WINDOW_TEXT_CHARS, WINDOW_WORDS, windows  # noqa: E402


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=90), min_size=1, max_size=12),
       st.integers(1, 80))
def test_windows_keep_every_word_in_order_and_stay_within_their_length(sentences, max_words):
    text = " ".join(" ".join(s) + "." for s in sentences)
    out = windows(text, max_words)
    words = text.split()
    if len(words) <= max_words:
        assert out == []   # one window: the chunk's own embedding stands for it
        return
    assert 2 <= len(out) <= MAX_WINDOWS
    assert all(1 <= len(w.split()) <= max_words for w in out)
    got = " ".join(out).split()
    if len(out) < MAX_WINDOWS:
        assert got == words
    else:                       # capped: the first windows, in order
        assert got == words[:len(got)]


def test_windows_break_at_sentence_ends():
    a, b, c = ("alpha " * 30).strip() + ".", ("beta " * 30).strip() + ".", ("gamma " * 30).strip() + "."
    out = windows(f"{a} {b}\n{c}", 64)
    assert out == [f"{a} {b}", c]          # 62 words fit; a third sentence would not
    assert windows(" ".join(["w"] * 200)) == [" ".join(["w"] * WINDOW_WORDS)] * 3 + [" ".join(["w"] * 8)]


def test_windows_are_bounded_whatever_the_text():
    """A writer may insert a chunk of any length, or of words that cost the model no token
    (zero-width characters): at most MAX_WINDOWS windows, from the first WINDOW_TEXT_CHARS
    characters, in time linear in those."""
    huge = " ".join(f"w{i}" for i in range(200_000))          # ~1.3 MB, one "sentence"
    out = windows(huge)
    assert len(out) == MAX_WINDOWS and out[0].split()[:2] == ["w0", "w1"]
    invisible = "\u200b " * 1_000_000
    assert len(windows(invisible)) == MAX_WINDOWS
    assert len(" ".join(windows("x " * WINDOW_TEXT_CHARS))) < WINDOW_TEXT_CHARS


def test_windows_refuse_a_length_below_one():
    with pytest.raises(InvalidParameter, match="max_words"):
        windows("some text. more text.", 0)
