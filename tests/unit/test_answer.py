"""answer.py: extractive answers with [n] citations, and the LLM prompt."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from ragpg.answer import NO_ANSWER, SYSTEM_PROMPT, Retrieved, build_prompt, extractive_answer, sentences

ANSWER = "To create an index without locking out writes, use CREATE INDEX CONCURRENTLY."

CHUNKS = [
    Retrieved(101, 1, "B-tree indexes handle equality and range queries on sortable data. "
                      "They are the default index type in PostgreSQL.", "a.md", "Indexes"),
    Retrieved(202, 2, "Vacuum reclaims storage occupied by dead tuples. "
                      "It should be run regularly on busy tables.", "b.md", "Vacuum"),
    Retrieved(303, 3, "## Building indexes\n\nBuilding an index normally takes a lock on the table. "
                      f"{ANSWER} A concurrent build takes longer than a normal build.",
              "c.md", "Create index", "https://example.org/c"),
]

QUESTIONS = [
    "How can I create an index without blocking writes to the table?",
    "Which index type is the default?",
    "What does vacuum do?",
    "Why is my index build slow?",
    "What is the capital of France?",
]


def ask(embedder, question, chunks=CHUNKS, **kw):
    qvec = embedder.embed([question])[0]
    return extractive_answer(question, qvec, chunks, embedder.embed, **kw)


def check_citations(result: dict, chunks: list[Retrieved]) -> None:
    """Every [n] in the answer has exactly one citation, indices are 1..m in first-use order."""
    markers = [int(n) for n in re.findall(r"\[(\d+)\]", result["answer"])]
    indices = [c["index"] for c in result["citations"]]
    assert indices == list(range(1, len(indices) + 1))
    assert sorted(set(markers)) == indices
    first_use = list(dict.fromkeys(markers))
    assert first_use == indices, "citations are not numbered in order of first use"
    by_id = {c.chunk_id: c for c in chunks}
    assert len({c["chunk_id"] for c in result["citations"]}) == len(indices)
    for cit in result["citations"]:
        chunk = by_id[cit["chunk_id"]]
        assert (cit["document_id"], cit["source"], cit["title"], cit["url"]) == \
               (chunk.document_id, chunk.source, chunk.title, chunk.url)
        assert len(cit["snippet"]) <= 300
    # each cited sentence really comes from the chunk its marker points at (its text with
    # the code fences taken out)
    for sentence, n in re.findall(r"(.+?) \[(\d+)\](?: |$)", result["answer"]):
        cit = result["citations"][int(n) - 1]
        assert sentence in " ".join(re.sub(r"```[a-z]*", " ", by_id[cit["chunk_id"]].content).split())
        assert sentence in cit["snippet"] or cit["snippet"].endswith("...")


# --------------------------------------------------------------------------- real embedder

def test_answer_sentence_with_citation(embedder):
    result = ask(embedder, QUESTIONS[0])
    assert result["answer"].startswith(ANSWER + " [1]")
    first = result["citations"][0]
    assert first["index"] == 1 and first["chunk_id"] == 303 and first["url"] == "https://example.org/c"
    assert ANSWER in first["snippet"]
    check_citations(result, CHUNKS)


def test_single_sentence_answer(embedder):
    result = ask(embedder, QUESTIONS[0], max_sentences=1)
    assert result["answer"] == ANSWER + " [1]"
    assert [(c["index"], c["chunk_id"]) for c in result["citations"]] == [(1, 303)]
    assert result["citations"][0]["snippet"] == ANSWER


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("max_sentences", [1, 3, 5])
def test_markers_match_citations(embedder, question, max_sentences):
    result = ask(embedder, question, max_sentences=max_sentences)
    check_citations(result, CHUNKS)
    assert len(re.findall(r"\[\d+\]", result["answer"])) <= max_sentences


def test_vacuum_question_cites_vacuum_chunk(embedder):
    result = ask(embedder, "What does vacuum do?")
    assert result["answer"].startswith("Vacuum reclaims storage occupied by dead tuples. [1]")
    assert result["citations"][0]["chunk_id"] == 202


@pytest.mark.parametrize("question", ["What is the capital of France?",
                                      "What is the best pizza topping?"])
def test_unrelated_question(embedder, question):
    assert ask(embedder, question) == {"answer": NO_ANSWER, "citations": []}


def test_threshold_above_any_similarity(embedder):
    assert ask(embedder, QUESTIONS[0], min_similarity=1.01) == {"answer": NO_ANSWER, "citations": []}


def test_no_chunks_or_no_sentences(embedder):
    assert ask(embedder, QUESTIONS[0], chunks=[]) == {"answer": NO_ANSWER, "citations": []}
    tiny = [Retrieved(1, 1, "Too short."), Retrieved(2, 1, "## Heading\n\n- a\n- b")]
    assert ask(embedder, QUESTIONS[0], chunks=tiny) == {"answer": NO_ANSWER, "citations": []}


def test_overlapping_chunks_do_not_repeat_a_sentence(embedder):
    a = Retrieved(1, 9, f"Building an index normally takes a lock on the table. {ANSWER}")
    b = Retrieved(2, 9, f"{ANSWER} A concurrent build takes longer than a normal build.")
    result = ask(embedder, QUESTIONS[0], chunks=[a, b])
    assert result["answer"].count(ANSWER) == 1
    check_citations(result, [a, b])


# --------------------------------------------------------------------------- stub embedder

def _stub(sims: dict[str, float], dim: int = 16):
    """embed() giving each sentence a unit vector with the given cosine to e0 (=qvec)."""
    basis = {s: k + 1 for k, s in enumerate(sims)}

    def embed(texts):
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, t in enumerate(texts):
            sim = sims[t]
            out[i, 0] = sim
            out[i, basis[t]] = math.sqrt(1 - sim * sim)
        return out

    qvec = np.zeros(dim, dtype=np.float32)
    qvec[0] = 1
    return embed, qvec


def test_numbering_by_first_use_stub():
    s = {
        "Alpha sentence one is here.": 0.75,
        "Alpha sentence two is here.": 0.2,
        "Beta sentence one is right here.": 0.1,
        "Gamma sentence one is here too.": 0.95,
        "Gamma sentence two is here too.": 0.8,
    }
    names = list(s)
    chunks = [Retrieved(10, 1, f"{names[0]} {names[1]}"), Retrieved(20, 2, names[2]),
              Retrieved(30, 3, f"{names[3]}\n\n{names[4]}")]
    embed, qvec = _stub(s)
    result = extractive_answer("zzz qqq", qvec, chunks, embed, max_sentences=3, min_similarity=0.3)
    # best first, with the rank bonus (0.2 / (rank + 1)) and the first chunk's document's
    # (0.1): alpha-1 (0.75 + 0.2 + 0.1), gamma-1 (0.95 + 0.067), gamma-2 (0.8 + 0.067);
    # alpha-2 is under min_similarity; the alpha chunk is cited first
    assert result["answer"] == (f"{names[0]} [1] {names[3]} [2] {names[4]} [2]")
    assert [(c["index"], c["chunk_id"]) for c in result["citations"]] == [(1, 10), (2, 30)]
    assert result["citations"][1]["snippet"] == f"{names[3]} {names[4]}"
    check_citations(result, chunks)


def test_min_similarity_cuts_stub():
    s = {"Only one sentence is good here.": 0.5, "This other sentence is quite bad.": 0.29}
    embed, qvec = _stub(s)
    chunks = [Retrieved(1, 1, " ".join(s))]
    result = extractive_answer("zzz", qvec, chunks, embed, min_similarity=0.3)
    assert result["answer"] == "Only one sentence is good here. [1]"


def test_long_snippet_is_cut():
    long_sentences = {f"Sentence number {i} " + "word " * 40 + "end.": 0.9 - i / 100 for i in range(3)}
    embed, qvec = _stub(long_sentences)
    chunks = [Retrieved(1, 1, " ".join(long_sentences))]
    result = extractive_answer("zzz", qvec, chunks, embed)
    snippet = result["citations"][0]["snippet"]
    assert len(snippet) == 300 and snippet.endswith("...")


# --------------------------------------------------------------------------- sentences / prompt

def test_sentences_split_and_clean():
    text = ("## Creating an index in PostgreSQL\n\n"
            "The first sentence is long enough. Short one. The third one ends with a question?\n"
            "- a list item with enough words\n"
            "* another list item with enough words\n\n"
            "```sql\nSELECT * FROM films WHERE code = 1;\n```")
    assert sentences(text) == [
        "Creating an index in PostgreSQL",
        "The first sentence is long enough.",
        "The third one ends with a question?",
        "a list item with enough words",
        "another list item with enough words",
        "SELECT * FROM films WHERE code = 1;",
    ]


def test_a_lead_in_is_one_sentence_with_what_it_introduces():
    text = ("To create a GiST index on a point attribute:\n\n```\nCREATE INDEX pointloc\n"
            "    ON points USING gist (box(location,location));\n```\n\n"
            "To create an index without locking out writes to the table:\n\n```\n\n"
            "CREATE INDEX CONCURRENTLY sales_quantity_index ON sales_table (quantity);\n```\n\n"
            "The options are:\n- FILLFACTOR, the fill factor\n- BUFFERING, for GiST indexes only\n\nNothing follows this one:"
            "\n\n## Examples of another kind")
    assert sentences(text) == [
        "To create a GiST index on a point attribute: CREATE INDEX pointloc ON points USING gist "
        "(box(location,location));",
        "To create an index without locking out writes to the table: CREATE INDEX CONCURRENTLY "
        "sales_quantity_index ON sales_table (quantity);",
        "The options are: FILLFACTOR, the fill factor",   # the first item only
        "BUFFERING, for GiST indexes only",
        "Nothing follows this one:",                      # but a heading
        "Examples of another kind",
    ]
    # not past 600 characters: then the lead-in stays alone
    xs = " ".join(["x"] * 290)
    assert sentences("Run the following command now:\n\n" + xs) == ["Run the following command now:", xs]


def test_the_answer_to_a_how_to_question_carries_the_code_its_lead_in_introduces(embedder):
    """The PostgreSQL manual's CREATE INDEX page: the sentence that matches the question
    ends with ':' and the answer is the code after it (make demo asked this)."""
    chunk = Retrieved(7, 1, "To create a GiST index on a point attribute so that we can efficiently use box "
                            "operators on the result of the conversion function:\n\n```\n\nCREATE INDEX pointloc\n"
                            "    ON points USING gist (box(location,location));\n```\n\n"
                            "To create an index without locking out writes to the table:\n\n```\n\n"
                            "CREATE INDEX CONCURRENTLY sales_quantity_index ON sales_table (quantity);\n```",
                      "create-index.md")
    result = ask(embedder, "How do I create an index without locking out writes?", [chunk], max_sentences=1)
    assert result["answer"] == ("To create an index without locking out writes to the table: CREATE INDEX "
                                "CONCURRENTLY sales_quantity_index ON sales_table (quantity); [1]")
    check_citations(result, [chunk])


def test_sentences_length_limits():
    assert sentences("Too short.") == []
    assert sentences("a b c d e f g h") == []                      # 15 chars < 20
    assert sentences("abcdefghijklmnopqrstuvw xyz") == []          # 2 words < 4
    assert sentences("x" * 601 + " a b c") == []                   # over 600 chars
    assert sentences("one two three four five six") == ["one two three four five six"]


def test_build_prompt():
    msgs = build_prompt("What is X?", CHUNKS)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == SYSTEM_PROMPT
    assert NO_ANSWER in SYSTEM_PROMPT
    user = msgs[1]["content"]
    assert user.startswith("Context:\n[1] ")
    assert user.endswith("\n\nQuestion: What is X?")
    positions = [user.index(f"[{i}] {c.content}") for i, c in enumerate(CHUNKS, 1)]
    assert positions == sorted(positions)
    assert "[4]" not in user


def test_build_prompt_no_chunks():
    msgs = build_prompt("q?", [])
    assert msgs[1]["content"] == "Context:\n\n\nQuestion: q?"


def test_rare_question_words_weigh_more_stub():
    """Two sentences as close to the question by embedding: the one holding its rare word
    ('heparan': in one candidate) beats the one holding its common word ('virus': in all)."""
    s = {"The virus binds heparan sulfate on the cell.": 0.5, "The virus enters the cell by fusion.": 0.5,
         "Every virus here is a coronavirus.": 0.45, "The virus was isolated in 2012.": 0.45}
    embed, qvec = _stub(s)
    chunks = [Retrieved(1, 1, " ".join(list(s)[1:])), Retrieved(2, 1, list(s)[0])]   # the rare one ranked second
    result = extractive_answer("Which virus receptor is heparan?", qvec, chunks, embed, max_sentences=1)
    assert result["answer"] == "The virus binds heparan sulfate on the cell. [1]"


def test_max_words_skips_what_would_make_the_answer_too_long_stub():
    long = "This long sentence " + "goes on " * 40 + "and ends."
    s = {"A short first sentence is best.": 0.9, long: 0.8, "Another short one follows here.": 0.7}
    embed, qvec = _stub(s)
    chunks = [Retrieved(1, 1, " ".join(s))]
    result = extractive_answer("zzz", qvec, chunks, embed, max_words=30)
    assert result["answer"] == "A short first sentence is best. [1] Another short one follows here. [1]"
    # the best sentence is kept whatever its length
    assert extractive_answer("zzz", qvec, [Retrieved(1, 1, long)], embed, max_words=5)["answer"] == long + " [1]"


def test_a_lead_in_is_not_picked_again_inside_or_outside_its_continuation_stub():
    """Overlapping chunks: one ends on a lead-in the other continues. The lead-in alone is
    not a near-duplicate of the two together by cosine, but it is text already picked."""
    joined, alone, other = ("The build runs as follows: make all then make install.", "The build runs as follows:",
                            "Another useful sentence is here.")
    embed, qvec = _stub({joined: 0.9, alone: 0.85, other: 0.6})
    chunks = [Retrieved(1, 1, "The build runs as follows:\n\nmake all then make install."),
              Retrieved(2, 2, f"{other} {alone}")]
    result = extractive_answer("zzz", qvec, chunks, embed)
    assert result["answer"] == f"{joined} [1] {other} [2]"
    check_citations(result, chunks)
    # and the other way round: the lead-in alone picked first, its continuation is skipped
    embed, qvec = _stub({joined: 0.5, alone: 0.95, other: 0.6})
    result = extractive_answer("zzz", qvec, chunks, embed)
    assert result["answer"] == f"{alone} [1] {other} [1]"
