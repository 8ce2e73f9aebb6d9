"""rag.ask and rag.ask_stream: retrieve, answer, check the citations, log the answer.

With the chat model 'extractive' (provider local) the answer is made of the retrieved
sentences (answer.py). With a chat model behind a provider, the seed's prompt goes to
the model with the retrieved chunks numbered [1]..[n], as many as fit in
rag.context_tokens (and the model's max_input_tokens); then markers that name no chunk
are removed and counted (citations.py), and the citation list is built from the chunks'
database rows (source, title, url with #page=N, heading path, page), never from the model's text.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace

from . import answer as answer_mod
from . import citations as cite
from . import providers, tokens
from .errors import InvalidParameter, NotAllowed, RagError
from .pg import (_QUERY_CACHE, LAST_RERANK, STATS, _bool_setting, _embed, _float_setting, _int_setting, _plan,
                 embed_sentences, error_fields, meter, model_spec, policy, record_usage, secret_for,
                 settings, sql_errors, usage_deferred)

_STREAMS: dict[int, dict] = {}
_FAILED: dict[int, dict] = {}   # handle -> the error that ended its rows (ask_stream_rows)
_HANDLES = itertools.count(1)


def _retrieve(plpy, question: str, k: int, rerank: str | None = None, rerank_k: int = 30):
    """rag.search's best k, in its order (the reranker's, when one is named); and whether
    the reranker gave that order."""
    rows = plpy.execute(_plan(plpy, """
        SELECT r.chunk_id, r.document_id, r.content, d.source, d.title, r.url, r.heading, r.page, r.rerank_rank
        FROM rag.search($1, $2, rerank => $3, rerank_k => $4) AS r JOIN rag.documents AS d ON d.id = r.document_id
        ORDER BY r.rerank_rank NULLS LAST, r.score DESC, r.chunk_id""", ["text", "int", "text", "int"]),
        [question, k, rerank, rerank_k])
    return ([answer_mod.Retrieved(r["chunk_id"], r["document_id"], r["content"], r["source"], r["title"], r["url"],
                                  r["heading"], r["page"])
             for r in rows], any(r["rerank_rank"] is not None for r in rows))


def fit_context(chunks: list[answer_mod.Retrieved], budget: int, tokenizer: str | None) -> list[answer_mod.Retrieved]:
    """The best-ranked chunks whose tokens fit in `budget` (the first one cut to fit)."""
    out, used = [], 0
    for c in chunks:
        n = tokens.count(c.content, tokenizer) + 4  # "[i] " and the blank line
        if used + n > budget:
            if not out and budget > 8:
                out.append(replace(c, content=tokens.truncate(c.content, budget - 4, tokenizer)))
            break
        out.append(c)
        used += n
    return out


def _context_budget(s: dict, spec: providers.ModelSpec, max_out: int) -> int:
    want = _int_setting(s, "context_tokens", 10, 1_000_000)
    # the model's window holds the prompt's own words, the question and the answer too
    room = int(spec.max_input_tokens * 0.8) - max_out - 150
    if room < 50:
        raise InvalidParameter(
            f"rag: model {spec.name!r} has max_input_tokens {spec.max_input_tokens}, too few for a context "
            f"and an answer of up to {max_out} tokens",
            hint="lower rag.answer_max_tokens or register the model's real window with rag.add_model")
    return min(want, room)


def _snippet(text: str) -> str:
    snippet = " ".join(text.split())
    return snippet if len(snippet) <= 300 else snippet[:297] + "..."


def citation_list(used: list[int], ctx: list[answer_mod.Retrieved]) -> list[dict]:
    return [{"index": n, "chunk_id": c.chunk_id, "document_id": c.document_id, "source": c.source,
             "title": c.title, "url": c.url, "heading": c.heading, "page": c.page, "snippet": _snippet(c.content)}
            for n, c in ((n, ctx[n - 1]) for n in used)]


def _with_log(p: _Prepared, out: dict, usage: list[dict] | None) -> dict:
    """The answer with its _log: what rag._store_answer writes (its row in rag.answers
    unless rag.store_answers is off or this is a hot standby, where the skip is counted;
    the rag.usage rows its calls left, KeptUsage.rows)."""
    store = p.store
    if store and p.s["read_only"] == "on":
        STATS["writes_skipped_read_only"] += 1
        store = False
    return out | {"_log": {"question": p.question, "retrieved": [c.chunk_id for c in p.retrieved], "store": store,
                           "usage": usage or []}}


# rag.ask_stream's end: from PL/Python, one subtransaction id (rag.ask's store from plpgsql)
_STORE = "SELECT rag._store_answer($1)::text AS out"


def _extractive(plpy, s: dict, question: str, chunks: list[answer_mod.Retrieved]) -> dict:
    if not chunks:
        return {"answer": answer_mod.NO_ANSWER, "citations": []}
    hit = _QUERY_CACHE.get((s["tenant"], s["embedding_model"], question))
    qvec = hit[0] if hit is not None else _embed(plpy, s, [question], "ask")[0]
    min_sim = _float_setting(s, "ask_min_similarity", -1, 1)
    return answer_mod.extractive_answer(question, qvec, chunks, lambda t: embed_sentences(plpy, s, t, "ask"),
                                        min_similarity=min_sim)


class _Prepared:
    """What both ask and ask_stream need before the model is called."""

    def __init__(self, plpy, question: str, k: int, model: str | None, rerank: str | None = None,
                 rerank_k: int = 30):
        self.t0 = time.perf_counter()
        self.s = settings(plpy)
        # read before any work: a bad value fails here (22023), not after a model call
        self.store = _bool_setting(self.s, "store_answers")
        self.question = question
        self.spec = model_spec(plpy, model or self.s["chat_model"], "chat")
        self.retrieved, reranked = _retrieve(plpy, question, k, rerank, rerank_k)
        # the reranker named, and whether it ordered the context (if not, why: the search
        # kept its fused order)
        self.rerank = None if rerank is None else {
            "model": rerank, "rerank_k": rerank_k, "reranked": reranked,
            "error": None if reranked or not self.retrieved else LAST_RERANK["error"]}
        self.llm = self.spec.provider != "local"
        self.ctx: list[answer_mod.Retrieved] = []
        self.messages: list[dict] = []
        self.meter = None
        if self.llm and self.retrieved:
            # a model's options may lower both (a small local model is slow on long prompts)
            opts = self.spec.options
            self.max_out = min(_int_setting(self.s, "answer_max_tokens", 1, 100_000),
                               int(opts.get("answer_max_tokens", 100_000)))
            self.temperature = _float_setting(self.s, "temperature", 0, 2)
            budget = min(_context_budget(self.s, self.spec, self.max_out), int(opts.get("context_tokens", 1_000_000)))
            self.ctx = fit_context(self.retrieved, budget, self.spec.tokenizer)
            self.messages = answer_mod.build_prompt(question, self.ctx)
            self.meter = meter(plpy, self.s, self.spec, "ask")
            self.secret = secret_for(plpy, self.spec)

    def slim(self) -> None:
        """Keep of the chunks what a stream's end needs: their ids, and the context's
        snippets (a stream waits for its client, up to 9 a session: unread ones kept the
        text of every chunk retrieved, 880 MB each: hostile review 43)."""
        self.retrieved = [replace(c, content="") for c in self.retrieved]
        self.ctx = [replace(c, content=_snippet(c.content)) for c in self.ctx]

    def result(self, text: str, used: list[int], removed: int, r: providers.ChatResult | None) -> dict:
        return {
            "answer": text, "citations": citation_list(used, self.ctx), "model": self.spec.name,
            "mode": "llm" if self.llm else "extractive", "removed_citations": removed,
            "latency_ms": round((time.perf_counter() - self.t0) * 1000, 1),
            "first_token_ms": round(r.first_token_s * 1000, 1) if r and r.first_token_s is not None else None,
            "finish_reason": r.finish_reason if r else None,
            "usage": {"input_tokens": r.input_tokens if r else 0, "output_tokens": r.output_tokens if r else 0,
                      "cost": self.spec.cost(r.input_tokens, r.output_tokens) if r else 0},
        } | ({"rerank": self.rerank} if self.rerank else {})

    def done(self, plpy, out: dict, r: providers.ChatResult | None) -> tuple[_Prepared, dict]:
        """The answer, its chat call recorded (kept within usage_deferred)."""
        if r is not None:
            record_usage(plpy, self.s, "ask", self.spec, 1, r.input_tokens, r.output_tokens,
                         out["latency_ms"] / 1000, self.meter)
        return self, out


@sql_errors
def ask(plpy, question: str, k: int, model: str | None, rerank: str | None = None, rerank_k: int = 30) -> str:
    """jsonb text {answer, citations, model, mode, removed_citations, usage, rerank (when
    asked for), ..., _log}: rag.ask's plpgsql writes the _log (rag._store_answer), with no
    subtransaction id of its own (a write from here would take one), and returns the
    answer with answer_id."""
    with usage_deferred(plpy, hand_back=True) as kept:
        p, out = _answer(plpy, question, k, model, rerank, rerank_k)
    return json.dumps(_with_log(p, out, kept.rows))


def _answer(plpy, question: str, k: int, model: str | None, rerank: str | None,
            rerank_k: int) -> tuple[_Prepared, dict]:
    p = _Prepared(plpy, question, k, model, rerank, rerank_k)
    if not p.llm:
        ex = _extractive(plpy, p.s, question, p.retrieved)
        out = p.result(ex["answer"], [], 0, None)
        out["citations"] = ex["citations"]
        return p.done(plpy, out, None)
    if not p.ctx:  # nothing retrieved: nothing to answer from, no model call
        return p.done(plpy, p.result(answer_mod.NO_ANSWER, [], 0, None), None)
    r = providers.chat(p.spec, policy(p.s, p.meter), p.secret, p.messages, p.max_out, p.temperature)
    text, removed, used = cite.clean(r.text, len(p.ctx))
    return p.done(plpy, p.result(text, used, removed, r), r)


@sql_errors
def ask_stream_open(plpy, question: str, k: int, model: str | None, rerank: str | None = None,
                    rerank_k: int = 30) -> int:
    """Retrieve (reranked if asked: a failing reranker is a WARNING, as in rag.search) and
    open the model's stream (errors surface here, before any row); returns a handle for
    ask_stream_rows. The rag.usage rows of its calls (the question's embedding, a
    reranker) are written in one statement on its way out (usage_deferred): a client may
    never read the stream."""
    with usage_deferred(plpy):
        p = _Prepared(plpy, question, k, model, rerank, rerank_k)
        st = {"p": p, "who": _who(plpy)}
        if not p.llm:
            st["extractive"] = _extractive(plpy, p.s, question, p.retrieved)
        elif p.ctx:
            # (counted at its most when sent, set right at its end, which a client may
            # never read to: Meter)
            st["stream"] = providers.ChatStream(p.spec, policy(p.s, p.meter), p.secret, p.messages, p.max_out,
                                                p.temperature)
        p.slim()
    handle = next(_HANDLES)
    _STREAMS[handle] = st
    _keep_newest(_STREAMS)
    return handle


def _keep_newest(kept: dict[int, dict]) -> None:
    """Drop all but the 9 newest handles' unread streams or unraised errors. A dropped
    stream is closed: its connection goes back to the client's pool (review 46: 100 unread
    streams took the pool's every connection, and the model's every later call in the
    backend, any role's, timed out). Made-up handles' errors count like others (review 46b:
    they grew a backend without end)."""
    for h in sorted(kept)[:-9]:
        stream = kept.pop(h).get("stream")
        if stream is not None:
            stream.close()


def _who(plpy) -> tuple[str, str]:
    r = plpy.execute("SELECT current_user::text AS u, rag.current_tenant() AS t")[0]
    return r["u"], r["t"]


def ask_stream_rows(plpy, handle: int):
    """Rows (seq, piece, citations, answer_id): pieces of the answer as they arrive, then
    one row with the citations (jsonb) and the answer's id in rag.answers. An error (a
    cancel included) ends the rows and is kept with the handle: rag._ask_stream_read raises
    it next (rag._ask_stream_end), with its own message and SQLSTATE (raised here,
    PL/Python would say "error fetching next item from iterator", the real message in
    DETAIL, and a Python traceback)."""
    try:
        st = _STREAMS.get(handle)
        if st is None or st["who"] != _who(plpy):
            # a handle is read by the role and tenant that opened it: after SET ROLE, another
            # role's answer is not there to read
            raise InvalidParameter("rag.ask_stream: unknown stream handle",
                                   hint="call rag.ask_stream(question), not its internal functions")
        del _STREAMS[handle]
        for row in _stream_rows(plpy, st):
            yield row
            if row[1] is not None and _who(plpy) != st["who"]:
                # resumed after a SET ROLE between two FETCHes: the rest of the answer, its
                # ledger row and its log are the opener's, not this role's
                raise NotAllowed("rag.ask_stream: the role or tenant changed while the stream was read",
                                 hint="read a stream to its end as the role that opened it")
    except (RagError, plpy.SPIError) as e:
        _FAILED[handle] = {"error": error_fields(e), "who": _who(plpy)}
        _keep_newest(_FAILED)


def ask_stream_error(plpy, handle: int) -> str | None:
    """The error that ended this stream's rows, as jsonb text (taken), or None; only the
    role and tenant that read the rows take it (review 46)."""
    kept = _FAILED.get(handle)
    if kept is None or kept["who"] != _who(plpy):
        return None
    del _FAILED[handle]
    return json.dumps(kept["error"])


def _stream_rows(plpy, st: dict):
    p = st["p"]
    seq = 0
    if "extractive" in st:
        ex = st["extractive"]
        for piece in answer_mod.answer_pieces(ex["answer"]):
            yield (seq, piece, None, None)
            seq += 1
        out = p.result(ex["answer"], [], 0, None)
        out["citations"] = ex["citations"]
        r = None
    elif "stream" in st:
        stream = st["stream"]
        cleaner = cite.StreamCleaner(len(p.ctx))
        for raw in stream:
            piece = cleaner.feed(raw)
            if piece:
                yield (seq, piece, None, None)
                seq += 1
        piece = cleaner.finish()
        if piece:
            yield (seq, piece, None, None)
            seq += 1
        r = stream.result
        # the stored answer is the released text cleaned whole, and its citations are that
        # text's: a marker longer than the stream holds back was released as text, then
        # fixed here, and was stored with none of its citations (review 57b)
        text, removed, used = cite.clean(cleaner.text, len(p.ctx))
        out = p.result(text, used, cleaner.removed + removed, r)
    else:
        yield (seq, answer_mod.NO_ANSWER, None, None)
        seq += 1
        out, r = p.result(answer_mod.NO_ANSWER, [], 0, None), None
    with usage_deferred(plpy, hand_back=True) as kept:   # the chat call's row goes with the answer
        p.done(plpy, out, r)
    out = json.loads(plpy.execute(_plan(plpy, _STORE, ["jsonb"]), [json.dumps(_with_log(p, out, kept.rows))])
                     [0]["out"])
    yield (seq, None, json.dumps(out["citations"]), out["answer_id"])
