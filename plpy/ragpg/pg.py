"""Entry points for the PL/Python functions in sql/: glue between plpy and the modules.

Each function takes the `plpy` module of the calling function. Errors of ours
(`RagError`) and of nested SQL are handed to the plpgsql caller, which raises them with
their SQLSTATE, message and hint (see `sql_errors`).

Per-backend state lives in this module (it is imported once per session): the loaded
model, prepared plans, a small cache of query embeddings and the counters behind
`rag.backend_stats()`.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import math
import os
import secrets
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import NamedTuple
from decimal import Decimal

from . import answer as answer_mod
from . import files, interrupts, keys, lexical, providers, spend, tokens
from . import rerank as rerank_mod
from .chunking import WIDEST_WINDOW, WINDOW_TEXT_CHARS, chunk_text, windows
from .embedding import _EMBEDDERS, DEFAULT_MODEL, get_embedder, load_tokenizer, to_vector_literal
from .errors import (BudgetExceeded, InvalidParameter, LimitExceeded, NotAllowed, RagError, Unaccounted, Uncounted,
                     shown)
from .text import to_text

STATS = {"index_calls": 0, "index_rounds": 0, "model_calls": 0, "texts_embedded": 0, "chunks_reused": 0, "chunks_written": 0,
         "documents_indexed": 0, "chunk_seconds": 0.0, "embed_seconds": 0.0, "db_seconds": 0.0,
         "writes_skipped_read_only": 0, "lexical_queries": 0, "lexical_postings_read": 0,
         "lexical_postings_total": 0, "lexical_exact_lookups": 0, "rerank_failures": 0,
         "files_extracted": 0, "pages_extracted": 0, "extract_seconds": 0.0, "sentences_cached": 0,
         "exact_vector_scans": 0}
_PLANS: dict[str, object] = {}
_TOKENIZERS: dict[str, object] = {}
_QUERY_CACHE: OrderedDict[tuple[str, str, str], tuple] = OrderedDict()  # -> (numpy vector, literal)
# (tenant, local model, sentence) -> unit vector: the extractive answerer's sentences
# (embed_sentences); at most SENTENCE_CACHE entries (~1.6 KB each at 384 dimensions)
_SENTENCE_CACHE: OrderedDict[tuple[str, str, str], object] = OrderedDict()
SENTENCE_CACHE = 2048


def _keep(cache: OrderedDict, key, value, limit: int):
    """Put key -> value in a per-backend cache as its newest entry, dropping the oldest past
    `limit` entries; returns the value."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


PENDING_ERROR: dict | None = None
LAST_RERANK: dict = {"error": None}   # why this backend's last reranking failed (rag.ask reports it)
# (tenant, model) -> [calls, input tokens, seconds, since]: local query embeddings not yet
# in rag.usage (record_usage)
_PENDING_USAGE: dict[tuple[str, str], list] = {}


class UsageRow(NamedTuple):
    """One rag.usage row as record_usage makes it: the columns rag._usage_rows reads (the
    JSON keys of _usage_objects), and, while usage_deferred keeps it, its cost in float
    for a Meter's floor (the ledger's cost is rag._call_cost's, in numeric)."""
    op: str
    model: str
    calls: int
    tin: int
    tout: int
    ms: float
    call: str | None        # the priced call's id (rag.usage.call_id), None for an unpriced one
    cost: float | None = None


# rag.usage rows kept for the statement that writes them with its own rows (usage_deferred)
_DEFERRED_USAGE: list[UsageRow] | None = None


class KeptUsage:
    """What usage_deferred(plpy, hand_back=True) gives its caller: after the block, the
    rows it kept (rag._usage_rows' objects), or None (no row, or an outer block keeps
    them); .json is them as jsonb text, for the SQL that called it to write
    (rag._log_usage)."""
    rows: list[dict] | None = None

    @property
    def json(self) -> str | None:
        return json.dumps(self.rows) if self.rows else None


@contextlib.contextmanager
def usage_deferred(plpy, hand_back: bool = False):
    """Within it, rag.usage rows are kept, not written one statement each: every statement
    PL/Python runs is a subtransaction, and one that writes takes a subtransaction id.
    Past 64 in one transaction (~16 ingests when each wrote four), every snapshot in the
    cluster reads pg_subtrans until that transaction ends. A Meter counts the kept
    rows' cost. The next statement that writes rows of its own with usage_cte (an
    ingest's chunks) takes them; with hand_back they go back (KeptUsage) to the plpgsql
    that called, whose INSERT takes no id of its own (rag.search, rag.embed, rag.ask);
    the rest are written on the way out. Nested: the outer one has them."""
    global _DEFERRED_USAGE
    kept = KeptUsage()
    if _DEFERRED_USAGE is not None:
        yield kept
        return
    _DEFERRED_USAGE = []
    try:
        yield kept
        if _DEFERRED_USAGE and hand_back:
            kept.rows = _usage_objects(_DEFERRED_USAGE)
        elif _DEFERRED_USAGE:   # (rag.ask_stream's opening)
            plpy.execute(_plan(plpy, _USAGE_INSERT, USAGE_TYPES), usage_params())
    finally:
        _DEFERRED_USAGE = None


def usage_cte(first: int) -> str:
    """A WITH item that inserts the kept rag.usage rows, from parameter $first
    (usage_params; rag._usage_rows prices them)."""
    return ("usage AS (INSERT INTO rag.usage (operation, model, provider, calls, input_tokens, output_tokens, cost, "
            "latency_ms, call_id) SELECT * FROM rag._usage_rows($%d::jsonb))" % first)


USAGE_TYPES = ["jsonb"]


def _usage_objects(rows: list[UsageRow]) -> list[dict]:
    """Kept rows as rag._usage_rows reads them (not the cost: the ledger prices them)."""
    return [{k: v for k, v in r._asdict().items() if k != "cost"} for r in rows]


def _usage_json(rows: list[UsageRow]) -> str:
    return json.dumps(_usage_objects(rows))


def usage_params() -> list:
    """usage_cte's parameter: the rows kept so far (a jsonb array), which are then no
    longer kept."""
    rows = _DEFERRED_USAGE or []
    out = [_usage_json(rows)]   # (not the cost a Meter counts)
    rows.clear()
    return out


# rag.usage rows on their own (record_usage outside usage_deferred, or the rows left)
_USAGE_INSERT = "SELECT rag._log_usage($1)"


def watch_interrupts(plpy) -> None:
    """Let the engine's long loops see statement_timeout, pg_cancel_backend() and
    pg_terminate_backend() (see interrupts.py); once per session."""
    if interrupts.check_interrupts is interrupts.no_check:
        interrupts.check_interrupts = interrupts.interrupt_checker(plpy)


def sql_errors(fn):
    """Errors of ours (RagError) and of the SQL we run (plpy.SPIError) are not raised from
    Python: PL/Python would prefix their message with the exception's class name
    ('plpy.Error: ...'). They are kept in PENDING_ERROR and the function returns None; its
    plpgsql caller then raises them as they are (rag._raise_python_error).

    A cancel seen by the interrupt hook is such an SPIError (QueryCanceled): it is kept with
    its own SQLSTATE, 57014, and message ('canceling statement due to statement timeout'),
    so the statement ends as cancelled, as if Postgres had stopped it directly."""
    @functools.wraps(fn)
    def wrapper(plpy, *args, **kwargs):
        global PENDING_ERROR
        PENDING_ERROR = None
        try:
            watch_interrupts(plpy)
            return fn(plpy, *args, **kwargs)
        except (RagError, plpy.SPIError) as e:
            PENDING_ERROR = error_fields(e)
        return None
    return wrapper


def error_fields(e: BaseException) -> dict:
    """A RagError's or plpy.SPIError's message, detail, hint and SQLSTATE, as
    rag._raise_error takes them."""
    if isinstance(e, RagError):
        return {"message": e.message, "hint": e.hint, "sqlstate": e.sqlstate}
    return {"message": e.args[0] if e.args else str(e), "detail": getattr(e, "detail", None),
            "hint": getattr(e, "hint", None), "sqlstate": getattr(e, "sqlstate", None)}


def take_error() -> str | None:
    """The pending error as jsonb text (and clear it), for rag._raise_python_error."""
    global PENDING_ERROR
    err, PENDING_ERROR = PENDING_ERROR, None
    return json.dumps(err) if err else None


VECTOR = "@extschema:vector@"


def _prepare(plpy, sql: str, types: list[str]):
    """plpy.prepare, with VECTOR in the SQL text and the types replaced by pgvector's schema
    (rag._vector_schema): rag's functions run with search_path = pg_catalog, pg_temp, so
    pgvector's types, operators and functions are named with their schema (docs/security.md)."""
    if VECTOR in sql or any(VECTOR in t for t in types):
        v = plpy.execute("SELECT rag._vector_schema() AS v")[0]["v"]   # rag requires vector: never NULL
        sql, types = sql.replace(VECTOR, v), [t.replace(VECTOR, v) for t in types]
    return plpy.prepare(sql, types)


def _plan(plpy, sql: str, types: list[str]):
    p = _PLANS.get(sql)
    if p is None:
        p = _PLANS[sql] = _prepare(plpy, sql, types)
    return p


def settings(plpy) -> dict[str, str]:
    """rag.* settings, plus 'tenant': the session's tenant (raises 42501 if not allowed), and
    'read_only': whether the transaction may write (not on a hot standby)."""
    return {r["name"]: r["value"] for r in plpy.execute(_plan(plpy,
        "SELECT name, value FROM rag.settings() UNION ALL SELECT 'tenant', rag.current_tenant()"
        " UNION ALL SELECT 'read_only', current_setting('transaction_read_only')", []))}


def _num_setting(s: dict, name: str, lo, hi, cast, what: str):
    try:
        v = cast(s[name])
    except ValueError:
        raise InvalidParameter(f"rag: setting rag.{name} must be {what}, got {shown(s[name])}",
                               hint=f"RESET rag.{name}") from None
    if not lo <= v <= hi:  # also refuses NaN
        raise InvalidParameter(f"rag: setting rag.{name} must be between {lo} and {hi}, got {v}",
                               hint=f"RESET rag.{name}")
    return v


def _int_setting(s: dict, name: str, lo: int, hi: int) -> int:
    return _num_setting(s, name, lo, hi, int, "an integer")


def _float_setting(s: dict, name: str, lo: float, hi: float) -> float:
    return _num_setting(s, name, lo, hi, float, "a number")


def _bool_setting(s: dict, name: str) -> bool:
    v = s[name].strip().lower()
    if v in ("on", "true", "yes", "1"):
        return True
    if v in ("off", "false", "no", "0"):
        return False
    raise InvalidParameter(f"rag: setting rag.{name} must be on or off, got {shown(s[name])}", hint=f"RESET rag.{name}")


def policy(s: dict, meter: Meter | None = None) -> providers.CallPolicy:
    return providers.CallPolicy(
        timeout=_float_setting(s, "provider_timeout_seconds", 0.1, 3600),
        max_retries=_int_setting(s, "provider_max_retries", 0, 20),
        retry_base=_float_setting(s, "provider_retry_base_seconds", 0, 60),
        batch_size=_int_setting(s, "provider_batch_size", 1, 2048), meter=meter)


def model_spec(plpy, name: str, kind: str) -> providers.ModelSpec:
    """A model of rag.models (rag._model raises 42704 for an unknown one)."""
    r = plpy.execute(_plan(plpy, "SELECT m.* FROM rag._model($1, $2) AS m", ["text", "text"]), [name, kind])[0]
    return _spec(r)


def _spec(r) -> providers.ModelSpec:
    return providers.ModelSpec(
        name=r["name"], kind=r["kind"], provider=r["provider"], provider_model=r["provider_model"],
        base_url=r["base_url"], dimensions=r["dimensions"], max_input_tokens=r["max_input_tokens"],
        price_input_per_1m=float(r["price_input_per_1m"]), price_output_per_1m=float(r["price_output_per_1m"]),
        api_key=r["api_key"], tokenizer=r["tokenizer"], options=json.loads(r["options"]) if r["options"] else {})


def secret_for(plpy, spec: providers.ModelSpec) -> str | None:
    """The API key of a model, if the current role was granted it (else 42501)."""
    if spec.api_key is None:
        return None
    return keys.read(plpy, spec.api_key, spec.name)


_METER_ROW = """SELECT current_user AS role, m.price_input_per_1m::text AS pin, m.price_output_per_1m::text AS pout
                 FROM rag.models AS m WHERE m.name = $1"""


class Meter:
    """A priced model's requests, counted against the tenant's day before each is sent
    (spend.py): what a rollback, a timeout, a cancel or a retry cannot undo. providers
    calls reserve() before each attempt with the most it can cost (its input tokens, and
    for a chat its max_tokens) and sent() once it was answered; record_usage sets the count
    right with what the answered requests cost. An attempt never answered stays counted at
    its most."""

    def __init__(self, plpy, s: dict, spec: providers.ModelSpec, operation: str):
        self.plpy, self.spec, self.tenant = plpy, spec, s["tenant"]
        self.db = keys.database(plpy)
        self.id = secrets.token_hex(8)   # its rag.usage row's call_id, its journal lines' "call"
        # the prices as rag.models holds them (numeric, as the ledger computes the cost)
        r = plpy.execute(_plan(plpy, _METER_ROW, ["text"]), [spec.name])[0]
        self.prices = (Decimal(r["pin"]), Decimal(r["pout"]))
        self.note = {"call": self.id, "op": operation, "model": spec.name, "pid": os.getpid(), "role": r["role"]}
        self.budget: Decimal | None = None
        self.floor = Decimal(0)
        if s["daily_budget"].strip():
            _float_setting(s, "daily_budget", 0, 1e12)   # (22023 for a bad value)
            self.budget = Decimal(s["daily_budget"].strip())
            # the ledger (this transaction's rows and the calls usage_deferred keeps
            # included): the count holds every call made since 0.6.0, the ledger those before
            self.floor = Decimal(plpy.execute(_plan(plpy, "SELECT rag._recorded_today()::text AS v", []))[0]["v"])
            self.floor += sum((Decimal(repr(u.cost)) for u in _DEFERRED_USAGE or ()), Decimal(0))
        self.listed = False                                # a line of it is in the journal (spend.py)
        self._pending: tuple[str, Decimal] | None = None   # the request in flight: (day, amount)
        self.answered: list[tuple[str, Decimal]] = []      # reserved for requests answered, not yet set right

    def reserve(self, input_tokens: int, output_tokens: int = 0) -> None:
        amount = spend.cost(input_tokens, output_tokens, *self.prices)
        try:
            day, added, listed = spend.reserve(self.db, self.tenant, amount, self.budget, self.floor,
                                               note=dict(self.note, at=_utc_now()))
            self._pending, self.listed = (day, added), self.listed or listed
        except spend.Over as e:
            raise BudgetExceeded(
                f"rag: the daily budget of {self.budget} for tenant {shown(self.tenant)} is spent "
                f"({e.spent:.6g} today); model {self.spec.name!r} was not called",
                hint="an administrator raises it with rag.configure('daily_budget', ...) (a session may only "
                     "lower it); else use an unpriced model, or wait until 00:00 UTC") from None
        except OSError as e:
            raise Uncounted(
                f"rag: the day's cost of tenant {shown(self.tenant)} cannot be counted ({e.strerror}); "
                f"model {self.spec.name!r} was not called",
                hint="the server's ragpg_spend directory under its data directory must be writable") from None

    def sent(self) -> None:
        """The request in flight was answered: record_usage sets its count right."""
        if self._pending is not None:
            self.answered.append(self._pending)
            self._pending = None

    def settle(self, input_tokens: int, output_tokens: int) -> None:
        """The answered requests cost this much: set their count right, on the day of the
        last one (never below what the other days got)."""
        if not self.answered:
            return
        cost = spend.cost(input_tokens, output_tokens, *self.prices)
        day = self.answered[-1][0]
        on_day = sum((a for d, a in self.answered if d == day), Decimal(0))
        change = max(cost - sum((a for _, a in self.answered), Decimal(0)), -on_day)
        note = dict(self.note, at=_utc_now(), answered=len(self.answered), cost=str(cost), more=self.listed,
                    **{"in": input_tokens, "out": output_tokens})
        self.answered.clear()
        try:
            spend.add(self.db, self.tenant, change, day, note)
        except OSError as e:   # (the call was made and is in the ledger; the count keeps its most)
            self.plpy.warning(f"rag: the day's cost of tenant {shown(self.tenant)} could not be set right: "
                              f"{e.strerror}")


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def meter(plpy, s: dict, spec: providers.ModelSpec, operation: str) -> Meter | None:
    """The Meter of a priced model's call (None for a free one). Refuses a priced call in a
    read-only transaction on a primary (BEGIN READ ONLY), which cannot write its rag.usage
    row. On a hot standby, where nothing can be written, priced calls go on, counted by that
    server (docs/scale-out.md)."""
    if not spec.priced:
        return None
    if s["read_only"] == "on" and not plpy.execute(_plan(plpy, "SELECT pg_is_in_recovery() AS r", []))[0]["r"]:
        raise Unaccounted(
            f"rag: model {spec.name!r} is priced and this transaction is read-only: its call could not be "
            f"written to rag.usage; the model was not called",
            hint="run it in a read-write transaction (the ledger and rag.daily_budget count every priced call)")
    return Meter(plpy, s, spec, operation)


@sql_errors
def counted_today(plpy) -> str:
    """rag._counted_today_py: the session tenant's count (as text: numeric, not float8)."""
    tenant = plpy.execute(_plan(plpy, "SELECT rag.current_tenant() AS t", []))[0]["t"]
    try:
        return str(spend.read(keys.database(plpy), tenant))
    except OSError as e:
        raise Uncounted(f"rag: the day's cost of tenant {shown(tenant)} cannot be read ({e.strerror})",
                        hint="the server's ragpg_spend directory under its data directory must be readable") from None


@sql_errors
def priced_calls(plpy, day: str) -> str:
    """rag._priced_calls: the session tenant's journal of `day` (today or yesterday, UTC:
    the days the server keeps; ISO text), one object per call, then one per role whose
    lines were left out past the journal's cap (no call_id; spend.py). A jsonb array."""
    kept = spend.kept_days()
    if day not in kept:
        raise InvalidParameter(f"rag.priced_calls: day {shown(day)} is not kept; the server keeps today's and "
                               f"yesterday's calls (UTC: {kept[0]}, {kept[1]})",
                               hint="rag.usage and rag.usage_history hold the recorded calls of every day")
    tenant = plpy.execute(_plan(plpy, "SELECT rag.current_tenant() AS t", []))[0]["t"]
    try:
        raw, unlisted = spend.journal(keys.database(plpy), tenant, day)
    except OSError as e:
        raise Uncounted(f"rag: the journal of tenant {shown(tenant)} cannot be read ({e.strerror})",
                        hint="the server's ragpg_spend directory under its data directory must be readable") from None
    fields = ("call_id", "at", "role_name", "operation", "model", "pid", "requests", "answered", "counted", "cost",
              "input_tokens", "output_tokens")
    calls: dict[str, list] = {}   # call -> its fields' values, in order
    for note in spend.notes(raw, interrupts.check_interrupts):
        c = calls.get(note["call"])
        if c is None:   # (its first line; a call set right after 00:00 UTC starts the day with that line)
            c = calls[note["call"]] = [note["call"], note.get("at"), note.get("role"), note.get("op"),
                                       note.get("model"), note.get("pid"), 0, 0, Decimal(0), None, None, None]
        c[8] += spend.value(note.get("added"))
        if "answered" in note:   # set right: what the answered requests cost
            c[7], c[9], c[10], c[11] = note["answered"], str(spend.value(note.get("cost"))), note.get("in"), note.get("out")
        else:                    # a request reserved
            c[6] += 1
    rows = [dict(zip(fields, c[:8] + [str(c[8])] + c[9:])) for c in calls.values()]
    rows += [{"role_name": role, "requests": requests, "counted": str(added)}
             for role, (requests, _, added) in sorted(unlisted.items())]
    return json.dumps(rows)


def record_usage(plpy, s: dict, operation: str, spec: providers.ModelSpec, calls: int,
                 input_tokens: int, output_tokens: int, seconds: float, meter: Meter | None = None) -> None:
    """One row of rag.usage (skipped in a read-only transaction); a priced call's count set
    right (its Meter)."""
    if meter is not None:
        meter.settle(input_tokens, output_tokens)
    if calls == 0:
        return
    if s["read_only"] == "on":  # a hot standby: the ledger is not written, the skip is counted
        STATS["writes_skipped_read_only"] += 1
        return
    if spec.provider == "local" and operation == "query":
        # a search's query embedding by the in-process model costs nothing: such calls are
        # summed per backend and written as one row per 64 calls or 10 s (whichever first),
        # with the next one, so that a search does not write a row each time
        key = (s["tenant"], spec.name)
        p = _PENDING_USAGE.setdefault(key, [0, 0, 0.0, time.monotonic()])
        p[0] += calls
        p[1] += input_tokens
        p[2] += seconds
        if p[0] < 64 and time.monotonic() - p[3] < 10:
            return
        calls, input_tokens, seconds, _ = _PENDING_USAGE.pop(key)
    row = UsageRow(operation, spec.name, calls, input_tokens, output_tokens, seconds * 1000, meter and meter.id)
    if _DEFERRED_USAGE is not None:
        _DEFERRED_USAGE.append(row._replace(cost=spec.cost(input_tokens, output_tokens)))
        return
    # (rag._usage_rows: the cost in exact numeric, from the registry's prices at the time of the call)
    plpy.execute(_plan(plpy, _USAGE_INSERT, USAGE_TYPES), [_usage_json([row])])


def _embedder(s: dict, name: str | None = None):
    return get_embedder(name or s["embedding_model"], _int_setting(s, "embedding_threads", 1, 64))


def _embed(plpy, s: dict, texts: list[str], operation: str, spec: providers.ModelSpec | None = None):
    """Unit vectors of `texts` with the model `spec` (default: rag.embedding_model); one
    rag.usage row per call."""
    spec = spec or model_spec(plpy, s["embedding_model"], "embed")
    t0 = time.perf_counter()
    m = None
    if spec.provider == "local":
        emb = _embedder(s, spec.name)
        calls0, tok0 = emb.calls, emb.tokens
        vecs = emb.embed(texts, _int_setting(s, "embedding_batch_size", 1, 1024))
        calls, in_tokens = emb.calls - calls0, emb.tokens - tok0
    else:
        m = meter(plpy, s, spec, operation)
        vecs, in_tokens, calls = providers.embed(spec, policy(s, m), secret_for(plpy, spec), texts)
    _account(plpy, s, operation, spec, len(texts), calls, in_tokens, time.perf_counter() - t0, m)
    return vecs


def embed_sentences(plpy, s: dict, texts: list[str], operation: str):
    """_embed for the extractive answerer's sentences, which the questions about one passage
    share: with the local model a sentence's vector is kept per backend, so only sentences
    not seen lately are embedded (and counted in rag.usage). It is the vector embedding the
    sentence again gives (at rag.embedding_batch_size 1, the default, a text's vector does
    not depend on its batch). Kept per tenant, so that no tenant's answer time depends on
    another's questions. A remote model is always called (its model may change behind
    the same name)."""
    import numpy as np

    spec = model_spec(plpy, s["embedding_model"], "embed")
    if spec.provider != "local":
        return _embed(plpy, s, texts, operation, spec)
    keys = [(s["tenant"], spec.name, t) for t in texts]
    got = {k: _SENTENCE_CACHE.get(k) for k in keys}   # in order, each once
    missing = [k for k, v in got.items() if v is None]
    if missing:
        vecs = _embed(plpy, s, [k[2] for k in missing], operation, spec)
        got.update(zip(missing, (v.copy() for v in vecs)))   # a row of its own: not a view keeping the batch
    STATS["sentences_cached"] += len(texts) - len(missing)
    for k, v in got.items():
        _keep(_SENTENCE_CACHE, k, v, SENTENCE_CACHE)
    return np.stack([got[k] for k in keys])


def _account(plpy, s: dict, operation: str, spec: providers.ModelSpec, texts: int, calls: int,
             input_tokens: int, seconds: float, m: Meter | None = None) -> None:
    """An embedding's counters (rag.backend_stats) and its rag.usage row."""
    STATS["embed_seconds"] += seconds
    STATS["model_calls"] += calls
    STATS["texts_embedded"] += texts
    record_usage(plpy, s, operation, spec, calls, input_tokens, 0, seconds, m)


# the query embedding's cache key, the settings a local model needs and the model itself:
# one query (a search's embedding is on the hot path), only the columns ModelSpec needs, as
# types PL/Python converts cheaply (not numeric, jsonb or timestamps: ~0.3 ms a row)
_QUERY_KEY = """SELECT rag.current_tenant() AS tenant, m.name, m.kind, m.provider, m.provider_model, m.base_url,
                        m.dimensions, m.max_input_tokens, m.price_input_per_1m::float8 AS price_input_per_1m,
                        m.price_output_per_1m::float8 AS price_output_per_1m, m.api_key, m.tokenizer,
                        m.options::text AS options,
                        rag._setting('embedding_threads') AS embedding_threads,
                        rag._setting('embedding_batch_size') AS embedding_batch_size,
                        current_setting('transaction_read_only') AS read_only
                 FROM rag._model(coalesce($1, rag._setting('embedding_model')), 'embed') AS m"""


_WORKER = None   # one thread per backend: a hybrid search's query embedding runs there


def _worker():
    global _WORKER
    if _WORKER is None:
        import concurrent.futures
        _WORKER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragpg-embed")
    return _WORKER


def _remember(key, vec):
    hit = _keep(_QUERY_CACHE, key, (vec, to_vector_literal(vec)), 256)
    return key[0], key[1], hit[0], hit[1]


def _start_query_vector(plpy, text: str, model: str | None, parallel: bool = False):
    """Start a query's embedding; returns a function that gives (tenant, model name, vector,
    its text form). Embedded once per backend for repeated queries (per tenant: no timing
    side channel). `parallel`: the local model runs in the backend's worker thread, so the
    caller can run the lexical leg meanwhile (a model run there costs ~0.5 ms more than in
    the main thread, and BM25 more than that); a remote model is called when the result is
    asked for."""
    s = plpy.execute(_plan(plpy, _QUERY_KEY, ["text"]), [model])[0]
    key = (s["tenant"], s["name"], text)
    hit = _QUERY_CACHE.get(key)
    if hit is not None:
        _QUERY_CACHE.move_to_end(key)
        return lambda: (key[0], key[1], hit[0], hit[1])
    spec = _spec(s)
    if spec.provider != "local":   # it needs all the settings (budget, retries, timeouts)
        return lambda: _remember(key, _embed(plpy, settings(plpy), [text], "query", spec)[0])
    emb = _embedder(s, spec.name)
    calls0, tok0, t0 = emb.calls, emb.tokens, time.perf_counter()
    batch = _int_setting(s, "embedding_batch_size", 1, 1024)
    if parallel:
        # the worker needs Python's lock until the model runs, and the SPI calls of the
        # lexical leg hold it: wait (at most 20 ms) until the model has started
        import threading
        running = threading.Event()
        future = _worker().submit(emb.embed, [text], batch, interrupts.no_check, running.set)
        running.wait(0.02)
    else:
        vecs = emb.embed([text], batch)

    def finish():
        vec = (interrupts.result(future) if parallel else vecs)[0]
        _account(plpy, s, "query", spec, 1, emb.calls - calls0, emb.tokens - tok0, time.perf_counter() - t0)
        return _remember(key, vec)
    return finish


def _query_vector(plpy, text: str, model: str | None):
    return _start_query_vector(plpy, text, model)()


@sql_errors
def embed_query(plpy, text: str, model: str | None = None):
    """One text's embedding as pgvector's text form (rag.embed), and the rag.usage rows of
    its call for rag.embed to write (usage_deferred)."""
    with usage_deferred(plpy, hand_back=True) as kept:
        literal = _query_vector(plpy, text, model)[3]
    return literal, kept.json


_VECTOR_PLANS: OrderedDict[str, object] = OrderedDict()


# A plan's memory grows with its SQL text, which holds a search's filter: a long one's plan
# is made for its statement and freed with it, not kept (hostile review 43: a reader's
# searches with 8 MB filters kept 100 MB each in the backend, for the session)
KEPT_PLAN_MAX_CHARS = 16_384


def _kept_plan(plpy, sql: str, types: list[str]):
    """A plan kept per SQL text (at most 64: texts vary with model, dimensions and filter;
    none over KEPT_PLAN_MAX_CHARS)."""
    if len(sql) > KEPT_PLAN_MAX_CHARS:
        return _prepare(plpy, sql, types)
    plan = _VECTOR_PLANS.get(sql)
    if plan is None:
        plan = _keep(_VECTOR_PLANS, sql, _prepare(plpy, sql, types), 64)
    else:
        _VECTOR_PLANS.move_to_end(sql)
    return plan


def _vector_leg(plpy, tenant: str, model: str, vec, literal: str, k: int, pred: str | None):
    """The vector leg of rag.search: the tenant's k nearest chunks of its embedding model
    (cosine), best first, through that model's partial HNSW index, as (ids, cosine
    similarities). Its plan is kept per model, dimensions and filter (the index's
    predicate names the model, so the model is in the SQL text, not a parameter)."""
    def leg(order: str) -> str:
        return ("SELECT coalesce(array_agg(v.id ORDER BY v.dist, v.id), '{}') AS ids,"
                " coalesce(array_agg(1 - v.dist ORDER BY v.dist, v.id), '{}') AS sims"
                " FROM (SELECT c.id, c.embedding::@extschema:vector@.vector(%d) OPERATOR(@extschema:vector@.<=>) $1 AS dist"
                " FROM rag.chunks AS c %s"
                " WHERE c.tenant = $3 AND c.model = %s ORDER BY %s LIMIT $2) AS v"
                % (len(vec), "" if pred is None else "JOIN rag.documents AS d ON d.id = c.document_id AND " + pred,
                   plpy.quote_literal(model), order))
    order = "c.embedding::@extschema:vector@.vector(%d) OPERATOR(@extschema:vector@.<=>) $1" % len(vec)
    r = plpy.execute(_kept_plan(plpy, leg(order), [VECTOR + ".vector", "int", "text"]), [literal, k, tenant])[0]
    if len(r["ids"]) < k:
        # The index gave fewer than k: the tenant has fewer chunks (or the filter keeps
        # fewer), or other tenants' chunks in a shared index filled the scan's budget
        # (hnsw.max_scan_tuples) before it reached k of this tenant's. An exact scan of the
        # tenant's chunks ("+ 0": not the index's expression) returns what the index missed;
        # it costs what the tenant holds, and little for a tenant that has fewer than k.
        r = plpy.execute(_kept_plan(plpy, leg("(%s) + 0" % order), [VECTOR + ".vector", "int", "text"]),
                         [literal, k, tenant])[0]
        STATS["exact_vector_scans"] += 1
    return r["ids"], r["sims"]


def _missing_scores(plpy, tenant: str, model: str, vec, literal: str, need_cos: list[int], need_lex: list[int],
                    lex_of, near: list[int] = (), need_win: list[int] = (),
                    lexical_windows: bool = False) -> tuple[dict, dict, dict, dict, dict]:
    """The scores the legs did not give, in one query: the cosine of `need_cos` (those
    embedded with `model`) and the lexical score of `need_lex` (BM25 through a Scorer from
    their tsvectors, ~40 us a chunk; or a function such as the ts_rank leg's; none without
    query lexemes: 0); with a Scorer, the proximity (lexical.proximity) of `near` from the
    query lexemes' positions in their tsvectors; and the best cosine among the window
    embeddings of `need_win` (those of `model` that have windows). A chunk in both
    `need_lex` and `near` has its tsvector filtered once: its term frequencies are counted
    from the positions (lexical.term_frequencies). With `lexical_windows`, also the BM25 of
    the best window of each chunk of `near` (_window_bm25): its windows' term frequencies
    from those positions and the windows' bounds kept at ingest, or for a chunk indexed
    before them from its windows tokenized now."""
    scorer = lex_of if isinstance(lex_of, Scorer) else None
    bm25 = scorer is not None and bool(need_lex)
    near = list(near) if scorer is not None else []
    tf = (", CASE WHEN c.id = ANY ($5) THEN %s END AS len,"
          " CASE WHEN c.id = ANY ($5) AND NOT c.id = ANY ($7) THEN %s END AS tf"
          % (LEN_SQL, TF_SQL.replace("$L", "$4"))) if bm25 else ""
    hits = ", CASE WHEN c.id = ANY ($7) THEN %s END AS hits" % HITS_SQL.replace("$L", "$4") if near else ""
    lexical_windows = lexical_windows and bool(near)
    if lexical_windows:   # the windows' bounds kept at ingest, or the text to tokenize now
        # (bounds of more than 12 windows, written by hand before rag._chunks_before_write,
        # are not read into Python: 40 M entries took +2.3 GB, review 46; its text is then)
        kept = ("cardinality(c.window_bounds) <= 13 AND cardinality(c.window_lengths) <= 12"
                " AND array_ndims(c.window_bounds) = 1 AND array_ndims(c.window_lengths) = 1")
        hits += (", CASE WHEN c.id = ANY ($7) AND %s THEN c.window_bounds END AS wb,"
                 " CASE WHEN c.id = ANY ($7) AND %s THEN c.window_lengths END AS wl,"
                 " CASE WHEN c.id = ANY ($7) AND NOT coalesce(%s, false) THEN c.content END AS content"
                 % (kept, kept, kept))
    # a window of another length or a zero vector (written by hand) is skipped, not an error
    # nor a NaN
    # (no pgvector function by name: where roles may create functions, an overload with a
    # defaulted extra argument would make the call ambiguous; casts and operators are exact)
    win = (", CASE WHEN c.model = %s AND c.id = ANY ($8) THEN (SELECT max(x.s) FILTER (WHERE x.s <> 'NaN'::float8)"
           " FROM (SELECT CASE WHEN array_length(w::real[], 1) = %d THEN 1 - (w OPERATOR(@extschema:vector@.<=>) $1)"
           " END AS s FROM unnest(c.window_embeddings) AS w) AS x) END AS wsim"
           % (plpy.quote_literal(model), len(vec))) if need_win else ""
    sql = ("SELECT c.id, CASE WHEN c.model = %s AND c.id = ANY ($6) THEN 1 - (c.embedding::@extschema:vector@.vector(%d)"
           " OPERATOR(@extschema:vector@.<=>) $1) END"
           " AS sim%s%s%s FROM rag.chunks AS c WHERE c.tenant = $2 AND c.id = ANY ($3)"
           % (plpy.quote_literal(model), len(vec), tf, hits, win))
    need_win = list(need_win)
    rows = plpy.execute(
        _kept_plan(plpy, sql, [VECTOR + ".vector", "text", "bigint[]", "text[]", "bigint[]", "bigint[]", "bigint[]", "bigint[]"]),
        [literal, tenant, list(dict.fromkeys(need_cos + need_lex + near + need_win)),
         scorer.lexemes if bm25 or near else [], need_lex, need_cos, near, need_win])
    sims = {r["id"]: r["sim"] for r in rows if r["sim"] is not None}
    wins = {r["id"]: r["wsim"] for r in rows if r.get("wsim") is not None} if need_win else {}
    if bm25:
        got = [r for r in rows if r["len"] is not None]
        n = len(scorer.lexemes)
        tfs = [r["tf"] if r["tf"] is not None else lexical.term_frequencies(r["hits"], n) for r in got]
        lex = dict(zip([r["id"] for r in got], lex_of.scores(tfs, [r["len"] for r in got])))
    elif need_lex and lex_of is not None and scorer is None:
        lex = dict(zip(need_lex, lex_of(need_lex)))
    else:
        lex = {}
    prox = {}
    if near:
        idf = [float(x) for x in scorer.idf]
        prox = {r["id"]: lexical.proximity(r["hits"], idf) for r in rows if r["hits"] is not None}
    wlex = _window_bm25(plpy, scorer, [r for r in rows if r["hits"] is not None]) if lexical_windows else {}
    return sims, lex, prox, wins, wlex


# each text's length (lexemes) and the tf of each lexeme of $2 in it: LEN_SQL and TF_SQL
# on the tsvector the chunk's own column would hold for it
_WINDOW_TF = """
    SELECT %s AS len, %s AS tf
    FROM (SELECT t.n, to_tsvector('english'::regconfig, t.w) AS tsv
          FROM unnest($1::text[]) WITH ORDINALITY AS t (w, n)) AS c
    ORDER BY c.n"""


def _window_bm25(plpy, scorer: Scorer, rows: list[dict]) -> dict[int, float]:
    """The BM25 of each chunk's best window: its windows (chunking.windows, the ones its
    window embeddings are made of; a chunk that is one window is its own), each scored as
    a document of BM25 with the query's IDF, k1 and b, and the mean length of the windows
    at hand. The lexical counterpart of the vector leg's best window: a chunk that holds
    the query's words in one passage gains (docs/retrieval-quality.md). `rows`: the
    chunks' id, hits (the query lexemes' positions), and their windows' bounds and lengths
    kept at ingest (wb, wl; rag.chunks.window_bounds), or their content to tokenize now.
    Bounds written by hand that describe no windows leave the chunk without any (0)."""
    n = len(scorer.lexemes)
    owner, lens, tfs, texts = [], [], [], []
    for r in rows:
        if r["wb"] is not None and r["wl"] is not None:
            tf = lexical.window_term_frequencies(r["hits"], r["wb"], n)
            if tf is not None and len(r["wl"]) == len(tf) and all(x is not None and x >= 0 for x in r["wl"]):
                owner += [r["id"]] * len(tf)
                lens += r["wl"]
                tfs += tf
        elif r["content"] is not None:
            for w in windows(r["content"]) or [r["content"][:WINDOW_TEXT_CHARS]]:
                texts.append((r["id"], w))
    if texts:
        got = plpy.execute(_plan(plpy, _WINDOW_TF % (LEN_SQL, TF_SQL.replace("$L", "$2")), ["text[]", "text[]"]),
                           [[w for _, w in texts], scorer.lexemes])
        owner += [i for i, _ in texts]
        lens += [g["len"] for g in got]
        tfs += [g["tf"] for g in got]
    best = lexical.best_windows(owner, lens, tfs, scorer.idf, scorer.k1, scorer.b)
    return {r["id"]: best.get(r["id"], 0.0) for r in rows}


# each window's tsvector positions (the tokens of the english configuration's parser that
# it maps to a dictionary: a stop word takes a position too) and lexemes (LEN_SQL)
_WINDOW_SPANS = """
    SELECT (SELECT count(*) FROM ts_parse('default', c.w) AS p
            WHERE p.tokid IN (SELECT m.maptokentype FROM pg_ts_config_map AS m
                              WHERE m.mapcfg = 'english'::regconfig))::int AS positions,
           %s::int AS lexemes
    FROM (SELECT t.n, t.w, to_tsvector('english'::regconfig, t.w) AS tsv
          FROM unnest($1::text[]) WITH ORDINALITY AS t (w, n)) AS c
    ORDER BY c.n"""


def _window_spans(plpy, texts: list[str]) -> tuple[list[str], list[str]]:
    """Each chunk's window_bounds and window_lengths (rag.chunks) as int[] literals: where
    each of its windows starts among the positions of its tsvector, one past the last
    window's end, and each window's lexemes. A window is a run of whole sentences of the
    chunk, so its tokens are the chunk's, in order: window i's positions follow window
    i - 1's (checked against to_tsvector on every chunk of the shared eval sets)."""
    per = []
    for t in texts:   # (~0.1 ms a chunk: a cancel is seen between two)
        interrupts.check_interrupts()
        per.append(windows(t) or [t[:WINDOW_TEXT_CHARS]])
    flat = [w for ws in per for w in ws]
    got = plpy.execute(_plan(plpy, _WINDOW_SPANS % LEN_SQL, ["text[]"]), [flat]) if flat else []
    bounds, lengths, k = [], [], 0
    for ws in per:
        b, ln = [1], []
        for g in got[k:k + len(ws)]:
            b.append(b[-1] + g["positions"])
            ln.append(g["lexemes"])
        k += len(ws)
        bounds.append("{" + ",".join(map(str, b)) + "}")
        lengths.append("{" + ",".join(map(str, ln)) + "}")
    return bounds, lengths


_TS_RANK = """
    SELECT coalesce(array_agg(l.id ORDER BY l.rank DESC, l.id), '{}') AS ids,
           coalesce(array_agg(l.rank::float8 ORDER BY l.rank DESC, l.id), '{}') AS scores
    FROM (SELECT c.id, ts_rank(c.tsv, q.q) AS rank
          FROM rag.chunks AS c %s, (SELECT rag.any_terms_tsquery($1) AS q) AS q
          WHERE c.tsv @@ q.q AND c.tenant = rag.current_tenant()
          ORDER BY rank DESC, c.id LIMIT $2) AS l"""
_TS_RANK_OF = """
    SELECT c.id, ts_rank(c.tsv, rag.any_terms_tsquery($1))::float8 AS rank
    FROM rag.chunks AS c WHERE c.tenant = rag.current_tenant() AND c.id = ANY ($2)"""


def _ts_rank_leg(plpy, query: str, k: int, pred: str | None):
    """The lexical leg ranked by ts_rank (lexical_ranking => 'ts_rank'): (ids, ranks) and
    a function giving the ts_rank of other chunks."""
    sql = _TS_RANK % ("" if pred is None else "JOIN rag.documents AS d ON d.id = c.document_id AND " + pred)
    r = plpy.execute(_kept_plan(plpy, sql, ["text", "int"]), [query, k])[0]

    def of(ids):
        got = {x["id"]: x["rank"] for x in plpy.execute(_plan(plpy, _TS_RANK_OF, ["text", "bigint[]"]), [query, ids])}
        return [got.get(i, 0.0) for i in ids]
    return r["ids"], r["scores"], of


def _predicate(plpy, filter_json: str | None) -> str | None:
    """The SQL predicate on documents d of a search filter (jsonb), built by
    rag._filter_predicate, which quotes every value: the callers take the filter itself,
    never SQL text."""
    if filter_json is None:
        return None
    return plpy.execute(_plan(plpy, "SELECT rag._filter_predicate($1) AS p", ["jsonb"]), [filter_json])[0]["p"]


@sql_errors
def search_legs(plpy, query: str, mode: str, vector_k: int, lexical_k: int, k1: float, b: float,
                filter_json: str | None, ranking: str, both_scores: bool, proximity: bool = False,
                window_setting: str = "on", lexical_windows_setting: str = "on"):
    """_legs, and the rag.usage rows of its query embedding (a remote model's; the local
    model's are summed, record_usage) for rag.search to write (usage_deferred)."""
    with usage_deferred(plpy, hand_back=True) as kept:
        legs = _legs(plpy, query, mode, vector_k, lexical_k, k1, b, filter_json, ranking, both_scores, proximity,
                     window_setting, lexical_windows_setting)
    return legs + (kept.json, True)


def _legs(plpy, query: str, mode: str, vector_k: int, lexical_k: int, k1: float, b: float,
          filter_json: str | None, ranking: str, both_scores: bool, proximity: bool,
          window_setting: str, lexical_windows_setting: str):
    """rag.search's candidates: the union of each leg's best (vector: cosine; lexical: BM25
    or ts_rank), as (ids, vector scores, lexical scores, vector ranks, lexical ranks,
    proximities, best windows' BM25); a rank is None outside that leg's top. With
    `both_scores` (hybrid, score fusion) every candidate gets both legs' scores: its exact
    BM25 (0 without a query term) and its cosine; and with `proximity` and BM25 its
    proximity (lexical.proximity) and, unless `lexical_windows_setting` (rag.lexical_windows)
    is off, its best window's BM25 (_window_bm25) (else None). A chunk's vector score is
    its cosine, or with window embeddings (unless `window_setting`, rag.window_embeddings,
    is off) the mean of its cosine and its best window's; the vector leg is ranked by it.
    The query's embedding runs in the worker thread while BM25 runs."""
    pred = _predicate(plpy, filter_json)
    want_vec, want_lex = mode in ("hybrid", "vector"), mode in ("hybrid", "lexical")
    use_windows = want_vec and _bool_setting({"window_embeddings": window_setting or ""}, "window_embeddings")
    lexical_windows = _bool_setting({"lexical_windows": lexical_windows_setting or ""}, "lexical_windows")
    finish = _start_query_vector(plpy, query, None, want_lex and ranking == "bm25") if want_vec else None
    lex_ids, lex_sc, lex_of = [], [], None
    if want_lex and ranking == "bm25":
        lex_ids, lex_sc, lex_of = _bm25(plpy, query, lexical_k, k1, b, pred)
    vec_ids, vec_sc = [], []
    if finish:
        tenant, model, vec, literal = finish()
        vec_ids, vec_sc = _vector_leg(plpy, tenant, model, vec, literal, vector_k, pred)
    if want_lex and ranking == "ts_rank":
        lex_ids, lex_sc, lex_of = _ts_rank_leg(plpy, query, lexical_k, pred)
    vs = dict(zip(vec_ids, vec_sc))
    ls = dict(zip(lex_ids, lex_sc))
    in_vec = set(vec_ids)
    px = wl = None
    fill = both_scores and mode == "hybrid"
    need_cos = [i for i in lex_ids if i not in in_vec] if fill else []
    in_lex = set(lex_ids)
    need_lex = [i for i in vec_ids if i not in in_lex] if fill else []
    # (hits encode a lexeme's index in 16 bits: a query with more lexemes that occur in the
    # tenant's chunks, possible only with rag.max_query_chars raised past ~500,000, gets
    # no proximity term rather than a meaningless one)
    near = list(vec_ids) + need_cos if (fill and proximity and isinstance(lex_of, Scorer)
                                        and len(lex_of.lexemes) <= 65536) else []
    need_win = list(vec_ids) + need_cos if use_windows else []
    if need_cos or need_lex or near or need_win:
        sims, lex_more, prox, wins, wlex = _missing_scores(plpy, tenant, model, vec, literal, need_cos, need_lex,
                                                           lex_of, near, need_win, lexical_windows=lexical_windows)
        vs.update(sims)
        ls.update(lex_more)
        px, wl = (prox, wlex if lexical_windows else None) if near else (None, None)
        # a chunk with windows scores the mean of its own cosine and its best window's (a
        # zero vector's cosine is NaN: such a window is skipped)
        for i, w in wins.items():
            if vs.get(i) is not None and not math.isnan(w):
                vs[i] = (vs[i] + w) / 2
    # a chunk whose own vector is zero (a provider's, or written by hand) has a NaN cosine:
    # it scores as the lowest candidate, so that one such chunk cannot make every fused
    # score NaN
    valid = [v for v in vs.values() if not math.isnan(v)]
    low = min(valid, default=0.0)
    vs = {i: (low if math.isnan(v) else v) for i, v in vs.items()}
    if need_win:
        # the vector leg ranked by its score (the index found it by the chunk's cosine)
        order = sorted(range(len(vec_ids)), key=lambda n: (-vs[vec_ids[n]], n))
        vec_ids = [vec_ids[n] for n in order]
    vrank = {i: r for r, i in enumerate(vec_ids, 1)}
    lrank = {i: r for r, i in enumerate(lex_ids, 1)}
    ids = list(vec_ids) + [i for i in lex_ids if i not in vrank]
    if fill:
        vs = {i: vs.get(i, low) for i in ids}   # low: a chunk without this model's embedding
        ls = {i: ls.get(i, 0.0) for i in ids}
    return (ids, [vs.get(i) for i in ids], [ls.get(i) for i in ids],
            [vrank.get(i) for i in ids], [lrank.get(i) for i in ids],
            [px.get(i, 0.0) for i in ids] if px is not None else None,
            [wl.get(i, 0.0) for i in ids] if wl is not None else None)


@sql_errors
def rerank(plpy, query: str, model: str, kind: str, passages: list[str]):
    """_rerank, and the rag.usage row of its call for rag.search to write (usage_deferred)."""
    with usage_deferred(plpy, hand_back=True) as kept:
        out = _rerank(plpy, query, model, kind, passages)
    return out + (kept.json, True)


def _rerank(plpy, query: str, model: str, kind: str, passages: list[str]):
    """rag.search's reranking of its best candidates: (each passage's new rank, 1-based;
    the reranker's scores or None; None). A failing provider (down, refusing, over budget)
    gives (None, None, the reason): the search keeps its fused order and says why. The
    call is logged in rag.usage as operation 'rerank'."""
    LAST_RERANK["error"] = None
    rerank_mod.check_passages(passages or [])
    s = settings(plpy)
    spec = model_spec(plpy, model, kind)
    if spec.provider == "local":
        raise InvalidParameter(f"rag.search: model {shown(model)} cannot rerank (it is built in, not a language model)",
                               hint="rerank => a model of kind rerank, or a chat model behind a server")
    scores = m = msgs = None
    t0 = time.perf_counter()
    try:
        m = meter(plpy, s, spec, "rerank")
        secret = secret_for(plpy, spec)
        if spec.kind == "rerank":
            scores, n_in, calls = providers.rerank(spec, policy(s, m), secret, query, passages)
            order, n_out = rerank_mod.order_by_scores(scores), 0
        else:
            # the window holds the answer too; token counts are the registry tokenizer's, a
            # stand-in for the model's own (as for rag.ask's context)
            out_max = 4 * len(passages) + 8
            window = int(spec.max_input_tokens * 0.8) - out_max
            msgs = rerank_mod.listwise_messages(query, passages, window,
                                                lambda t, n: tokens.truncate(t, n, spec.tokenizer))
            r = providers.chat(spec, policy(s, m), secret, msgs, max_tokens=out_max, temperature=0.0)
            order, n_in, n_out, calls = rerank_mod.parse_order(r.text, len(passages)), r.input_tokens, r.output_tokens, 1
    except (providers.ProviderUnavailable, providers.ProviderRejected, providers.ProviderAuth,
            providers.ProviderNotFound, BudgetExceeded) as e:
        STATS["rerank_failures"] += 1
        LAST_RERANK["error"] = e.message
        sent = getattr(e, "sent", 0)
        if sent:
            # requests sent, their answers refused or never come: the search goes on, so their
            # row is written, at the tokens sent (hostile review 44: none was)
            n_in = sent * (providers.rerank_tokens(spec, query, passages) if msgs is None
                           else providers.message_tokens(msgs, spec))
            record_usage(plpy, s, "rerank", spec, sent, n_in, 0, time.perf_counter() - t0, m)
        return None, None, e.message
    record_usage(plpy, s, "rerank", spec, calls, n_in, n_out, time.perf_counter() - t0, m)
    ranks = [0] * len(passages)
    for rank, i in enumerate(order, 1):
        ranks[i] = rank
    return ranks, scores, None


def _embed_missing(plpy, s: dict, spec: providers.ModelSpec, items, known: dict, operation: str) -> None:
    """The embedding cache: for (key, text) items, embed each text whose key is not in
    `known` (key -> vector literal) once, and add it there; the rest count as reused."""
    items = list(items)
    todo: dict = {}
    for key, text in items:
        if key not in known:
            todo.setdefault(key, text)
    if todo:
        vecs = _embed(plpy, s, list(todo.values()), operation, spec)
        known.update(zip(todo.keys(), map(to_vector_literal, vecs)))
    STATS["chunks_reused"] += len(items) - len(todo)


def _window_literals(plpy, s: dict, spec: providers.ModelSpec, keys: list, texts: list[str], known: dict,
                     operation: str) -> list[str | None]:
    """Each chunk's window embeddings (chunking.windows) as a vector[] literal: known ones
    (key -> literal) reused, the rest embedded (each distinct window once) and added to
    `known`; '{}' for a chunk that is one window; all None with rag.window_embeddings off."""
    if not _bool_setting(s, "window_embeddings"):
        return [None] * len(texts)
    per = {}
    for key, text in zip(keys, texts):   # (a cancel is seen between two)
        if key not in known:
            interrupts.check_interrupts()
            per[key] = windows(text)
    todo = dict.fromkeys(w for ws in per.values() for w in ws)
    lit = {}
    if todo:
        lit = dict(zip(todo, map(to_vector_literal, _embed(plpy, s, list(todo), operation, spec))))
    for key, ws in per.items():
        known[key] = "{" + ",".join('"%s"' % lit[w] for w in ws) + "}"
    return [known[key] for key in keys]


_WINDOW_TODO = """
    SELECT c.id, c.content, (c.model = $2 AND c.window_embeddings IS NULL) AS embed
    FROM rag.chunks AS c
    WHERE c.tenant = $1 AND (%s)
    ORDER BY c.id LIMIT $3 FOR UPDATE OF c SKIP LOCKED"""


def _batch_of(s: dict, n: int | None) -> int:
    """A batch size asked of rag._window_batch or rag._reembed_batch, at most what rag.work
    and rag._finish_switch take (rag.index_batch_size, 256); NULL or less than 1 refused (a
    writer's rag._window_batch(NULL) held every chunk of its tenant in one call: review 48)."""
    if n is None or n < 1:
        raise InvalidParameter(f"rag: a batch of {n} chunks", hint="pass a batch size of 1 or more")
    return min(n, max(256, _int_setting(s, "index_batch_size", 1, 100000)))


@sql_errors
def window_batch(plpy, n: int) -> int:
    """Fill in the windows of up to n chunks of the session's tenant: their embeddings in
    the tenant's embedding model where they have none (indexed before rag 0.5.0, by an
    earlier model, or with rag.window_embeddings off, which skips this), and their bounds
    (rag.chunks.window_bounds, no model involved) where they have none; returns how many
    chunks (0: none left)."""
    s = settings(plpy)
    n = _batch_of(s, n)
    embed = _bool_setting(s, "window_embeddings")
    # (two partial indexes: rag.chunks' windows_todo and bounds_todo; with the setting off,
    # the chunks that keep no window embeddings are not read at all)
    todo_sql = _WINDOW_TODO % ("(c.model = $2 AND c.window_embeddings IS NULL) OR c.window_bounds IS NULL" if embed
                               else "c.window_bounds IS NULL")
    todo = plpy.execute(_plan(plpy, todo_sql, ["text", "text", "int"]), [s["tenant"], s["embedding_model"], n])
    if not todo:
        return 0
    ids = [r["id"] for r in todo]
    texts = [r["content"] for r in todo]
    lits = [None] * len(todo)
    part = [i for i, r in enumerate(todo) if embed and r["embed"]]
    if part:   # the model is looked up only when there is something to embed
        spec = model_spec(plpy, s["embedding_model"], "embed")
        made = _window_literals(plpy, s, spec, [ids[i] for i in part], [texts[i] for i in part], {}, "index")
        for i, lit in zip(part, made):
            lits[i] = lit
    bounds, lengths = _window_spans(plpy, texts)
    plpy.execute(_plan(plpy, """
        UPDATE rag.chunks AS c
        SET window_embeddings = coalesce(u.w::@extschema:vector@.vector[], c.window_embeddings),
            window_bounds = u.wb::int4[], window_lengths = u.wl::int4[]
        FROM unnest($1::bigint[], $2::text[], $4::text[], $5::text[]) AS u (id, w, wb, wl)
        WHERE c.id = u.id AND c.tenant = $3""",
        ["bigint[]", "text[]", "text", "text[]", "text[]"]), [ids, lits, s["tenant"], bounds, lengths])
    return len(todo)


@sql_errors
def index_documents(plpy, doc_ids: list[int]) -> int:
    """(Re)build the chunks of these documents; returns the number of chunks written.

    Chunks whose (model, sha256) already exist anywhere in rag.chunks reuse that
    embedding, so re-ingesting changed text embeds only the new chunks."""
    if not doc_ids:
        return 0
    STATS["index_calls"] += 1
    # each tenant's embedding model stays as read until this transaction ends: its
    # rag.tenant_models row, made if need be, is held FOR KEY SHARE, and a model switch
    # (rag.set_embedding_model, rag._finish_switch) takes it FOR UPDATE. (A superuser's
    # statement may write several tenants' documents: each is embedded by its own model.)
    per_tenant = plpy.execute(_plan(plpy, """
        WITH d AS MATERIALIZED (SELECT tenant, array_agg(id ORDER BY id) AS ids
                                FROM rag.documents WHERE id = ANY($1) GROUP BY tenant)
        SELECT d.ids, m.model FROM rag._claim_tenant_models(ARRAY(SELECT tenant FROM d)) AS m
        JOIN d ON d.tenant = m.for_tenant ORDER BY m.for_tenant""", ["bigint[]"]), [doc_ids])
    s = settings(plpy)
    per_round = _int_setting(s, "index_batch_size", 1, 100000)  # bounds memory per round
    written = 0
    for group in per_tenant:
        ids = group["ids"]
        for i in range(0, len(ids), per_round):
            written += _index_round(plpy, s, ids[i:i + per_round], group["model"])
    return written


INSERT_SLICE = 512  # chunks per INSERT into rag.chunks


def _index_round(plpy, s: dict, ids: list[int], model: str) -> int:
    STATS["index_rounds"] += 1
    spec = model_spec(plpy, model, "embed")
    model = spec.name
    # chunks are measured in the model's own word pieces for a local model; for a remote
    # one, in MiniLM's (a close, conservative stand-in for most subword vocabularies)
    tok_name = model if spec.provider == "local" else DEFAULT_MODEL
    tok = _TOKENIZERS.get(tok_name) or _TOKENIZERS.setdefault(tok_name, load_tokenizer(tok_name))
    hard_max = min(_embedder(s, model).max_tokens if spec.provider == "local" else spec.max_input_tokens,
                   WIDEST_WINDOW) - 2
    target = _int_setting(s, "chunk_target_tokens", 8, hard_max)
    overlap = _int_setting(s, "chunk_overlap_tokens", 0, target - 1)
    max_chunks = _int_setting(s, "max_chunks_per_document", 1, 10_000_000)

    t0 = time.perf_counter()
    docs = plpy.execute(_plan(plpy, """
        SELECT id, tenant, source, content, title, metadata->>'format' AS fmt
        FROM rag.documents WHERE id = ANY($1) ORDER BY id""", ["bigint[]"]), [ids])
    t1 = time.perf_counter()
    rows = []  # (document, chunk)
    titles = []
    for d in docs:
        interrupts.check_interrupts()
        text, found_title = to_text(d["content"], d["fmt"] or "auto")
        try:
            chunks = chunk_text(text, tok, target, overlap, hard_max, max_chunks)
        except LimitExceeded as e:
            raise LimitExceeded(e.message.replace("chunk_text: the text", f"rag: document {shown(d['source'])}", 1),
                                hint=e.hint) from None
        if not chunks:
            raise InvalidParameter(
                f"rag: document {shown(d['source'])} has no text to index after conversion",
                hint="the content is empty once markup is removed; check metadata->>'format'")
        rows.extend((d, c) for c in chunks)
        if d["title"] is None and found_title:
            titles.append((d["id"], found_title))
    # embeddings are reused within a tenant only: (tenant, sha256) is the cache key
    hashes = [hashlib.sha256(c.text.encode("utf-8")).digest() for _, c in rows]
    keys = [(d["tenant"], h) for (d, _), h in zip(rows, hashes)]
    t2 = time.perf_counter()

    # (a chunk with its window embeddings first; they are not read when windows are off)
    found = plpy.execute(_plan(plpy, """
        SELECT DISTINCT ON (tenant, content_hash) tenant AS t, content_hash AS h, embedding::text AS e,
               CASE WHEN $4 THEN window_embeddings::text END AS w
        FROM rag.chunks
        WHERE model = $1 AND tenant = ANY($3) AND content_hash = ANY($2)
        ORDER BY tenant, content_hash, window_embeddings IS NULL""", ["text", "bytea[]", "text[]", "boolean"]),
        [model, list(set(hashes)), list({d["tenant"] for d in docs}), _bool_setting(s, "window_embeddings")])
    known = {(r["t"], bytes(r["h"])): r["e"] for r in found}
    known_w = {(r["t"], bytes(r["h"])): r["w"] for r in found if r["w"] is not None}
    t3 = time.perf_counter()

    with usage_deferred(plpy):
        written = _write_round(plpy, s, spec, ids, rows, hashes, keys, known, known_w, titles)
    t5 = time.perf_counter()

    STATS["chunk_seconds"] += t2 - t1
    STATS["db_seconds"] += (t1 - t0) + (t3 - t2) + written["db_seconds"]
    STATS["chunks_written"] += len(rows)
    STATS["documents_indexed"] += len(docs)
    return len(rows)


# one statement per slice of chunks writes them, the round's rag.usage rows so far and the
# documents' titles (the first slice): one subtransaction id per slice (usage_deferred)
_WRITE_SLICE = """
    WITH """ + usage_cte(14) + """,
    titles AS (
        UPDATE rag.documents AS d SET title = t.title
        FROM unnest($15::bigint[], $16::text[]) AS t (id, title)
        WHERE d.id = t.id AND d.title IS NULL)
    INSERT INTO rag.chunks (tenant, document_id, ord, content, heading, page, tokens, content_hash, model, embedding,
                            window_embeddings, window_bounds, window_lengths)
    SELECT u.tn, u.d, u.o, u.c, u.h, u.p, u.t, u.x, $7, u.e::@extschema:vector@.vector, u.w::@extschema:vector@.vector[],
           u.wb::int4[], u.wl::int4[]
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::int[], $6::bytea[], $8::text[], $9::text[],
                $10::int[], $11::text[], $12::text[], $13::text[])
         AS u (d, o, c, h, t, x, e, tn, p, w, wb, wl)"""


def _taken(titles: list) -> list:
    """_WRITE_SLICE's parameters $14-$16: the usage rows and titles not written yet (which
    are then no longer kept)."""
    cols = usage_params() + [[t[0] for t in titles], [t[1] for t in titles]]
    titles.clear()
    return cols


def _write_round(plpy, s: dict, spec: providers.ModelSpec, ids: list[int], rows: list, hashes: list, keys: list,
                 known: dict, known_w: dict, titles: list) -> dict:
    """Embed what a round of _index_round lacks and write its chunks in slices; returns
    the seconds spent in the database."""
    model = spec.name
    t3 = time.perf_counter()
    _embed_missing(plpy, s, spec, zip(keys, (c.text for _, c in rows)), known, "index")
    t4 = time.perf_counter()

    plpy.execute(_plan(plpy, "DELETE FROM rag.chunks WHERE document_id = ANY($1)", ["bigint[]"]), [ids])
    insert = _plan(plpy, _WRITE_SLICE,
                   ["bigint[]", "int[]", "text[]", "text[]", "int[]", "bytea[]", "text", "text[]", "text[]", "int[]",
                    "text[]", "text[]", "text[]"] + USAGE_TYPES + ["bigint[]", "text[]"])
    # in slices, so that the statement's arrays, its transition table and the postings
    # trigger's work stay bounded whatever the document's size; the windows are embedded
    # per slice too, and a slice's are kept only while a later slice repeats that chunk
    window_seconds = 0.0
    uses = Counter(keys)
    for i in range(0, len(rows), INSERT_SLICE):
        interrupts.check_interrupts()
        part, k = rows[i:i + INSERT_SLICE], keys[i:i + INSERT_SLICE]
        tw = time.perf_counter()
        wins = _window_literals(plpy, s, spec, k, [c.text for _, c in part], known_w, "index")
        uses.subtract(k)
        for key in set(k):
            if uses[key] <= 0:
                known_w.pop(key, None)
        window_seconds += time.perf_counter() - tw
        bounds, lengths = _window_spans(plpy, [c.text for _, c in part])
        plpy.execute(insert, [[d["id"] for d, _ in part], [c.ord for _, c in part], [c.text for _, c in part],
                              [c.heading for _, c in part], [c.tokens for _, c in part], hashes[i:i + INSERT_SLICE],
                              model, [known[x] for x in k], [d["tenant"] for d, _ in part],
                              [c.page for _, c in part], wins, bounds, lengths, *_taken(titles)])
    return {"db_seconds": time.perf_counter() - t4 - window_seconds}


@sql_errors
def extract_file(plpy, data: bytes, filename: str, fmt: str) -> tuple:
    """rag._extract_file_py: (content, file_format, text_format, title, pages, ok)."""
    s = settings(plpy)
    t0 = time.perf_counter()
    x = files.extract(data, filename, fmt, _int_setting(s, "max_file_pages", 1, 10_000_000),
                      _int_setting(s, "max_document_bytes", 1, 1 << 40),
                      reader_memory=_int_setting(s, "max_file_memory", 1 << 27, 1 << 40),
                      reader_seconds=_int_setting(s, "max_file_seconds", 1, 86400))
    STATS["extract_seconds"] += time.perf_counter() - t0
    STATS["files_extracted"] += 1
    STATS["pages_extracted"] += x.pages or 0
    return x.text, x.file_format, x.text_format, x.title, x.pages, True


# (a switch's chunks in id order from past the last one done, which the index
# embeddings_next_tenant_chunk finds: each batch reads its own chunks, not the ones done
# before it, which made a switch quadratic in the tenant's chunks: review 48, F5. The last
# one done is read first and passed in: as a sub-select, under a writer's row-level
# security it was a filter after the tenant's every chunk, not an index bound: review 49.
# Rows past the tenant's last chunk, which a writer may plant, do not count.)
_REEMBED_AFTER = """
    SELECT coalesce(max(x.chunk_id), 0) AS after FROM rag.embeddings_next AS x
    WHERE x.tenant = $1 AND x.model = $2
      AND x.chunk_id <= (SELECT max(c.id) FROM rag.chunks AS c WHERE c.tenant = $1)"""

_REEMBED_TODO = """
    SELECT c.id, c.content, c.content_hash FROM rag.chunks AS c
    WHERE c.tenant = $1 AND c.id > $2
    ORDER BY c.id LIMIT $3 FOR UPDATE OF c SKIP LOCKED"""

# (then, once past the last chunk, the ones behind it: written by a transaction that
# committed after the batches had passed their ids, or passed over by a batch that failed
# or while another worker held them; one pass over the tenant's chunks per call)
_REEMBED_LEFT = """
    SELECT c.id, c.content, c.content_hash FROM rag.chunks AS c
    WHERE c.tenant = $1 AND NOT EXISTS (SELECT 1 FROM rag.embeddings_next AS x
                                        WHERE x.tenant = $1 AND x.chunk_id = c.id AND x.model = $2)
    ORDER BY c.id LIMIT $3 FOR UPDATE OF c SKIP LOCKED"""

_NEXT_MODEL = ("SELECT next_model, switch_started_at::text AS started FROM rag.tenant_models "
               "WHERE tenant = $1 AND next_model IS NOT NULL")


@sql_errors
def reembed_batch(plpy, n: int) -> int:
    """Embed up to n chunks of the session's tenant with its next embedding model (a model
    switch in progress) into rag.embeddings_next; -1 when there is no switch. Fewer than n
    (0: none) once the chunks past the last one done run out, and 0 when the switch changed
    while the batch was embedded (its vectors are not written)."""
    s = settings(plpy)
    n = _batch_of(s, n)
    tenant = s["tenant"]
    rows = plpy.execute(_plan(plpy, _NEXT_MODEL, ["text"]), [tenant])
    if not rows:
        return -1
    spec = model_spec(plpy, rows[0]["next_model"], "embed")
    after = plpy.execute(_plan(plpy, _REEMBED_AFTER, ["text", "text"]), [tenant, spec.name])[0]["after"]
    todo = plpy.execute(_plan(plpy, _REEMBED_TODO, ["text", "bigint", "int"]), [tenant, after, n])
    if not todo:
        todo = plpy.execute(_plan(plpy, _REEMBED_LEFT, ["text", "text", "int"]), [tenant, spec.name, n])
    if not todo:
        return 0
    ids = [r["id"] for r in todo]
    hashes = [bytes(r["content_hash"]) for r in todo]
    # (one row per hash: all of a text's rows were read, so a switch over many copies of
    # one chunk was quadratic as well)
    known = {bytes(r["h"]): r["e"] for r in plpy.execute(_plan(plpy, """
        SELECT u.h, (SELECT x.embedding::text FROM rag.embeddings_next AS x
                     WHERE x.tenant = $1 AND x.model = $2 AND x.content_hash = u.h LIMIT 1) AS e
        FROM unnest($3::bytea[]) AS u (h)""", ["text", "text", "bytea[]"]),
        [tenant, spec.name, list(set(hashes))]) if r["e"] is not None}
    texts = [r["content"] for r in todo]
    if spec.provider != "local":
        # (a chunk was cut for the window of the model it was written with; a server with a
        # shorter one refused it, and the switch never finished: it is embedded from its
        # first tokens in this model's window, as rag.reindex() would cut it anew)
        texts = [tokens.truncate(t, spec.max_input_tokens, spec.tokenizer) for t in texts]
    _embed_missing(plpy, s, spec, zip(hashes, texts), known, "reembed")
    # then the tenant's row, held as a writer's (FOR KEY SHARE, until this transaction
    # ends), and the next model read again under it: the vectors are written only if the
    # switch is still to spec. An admin's switch to a third model waits for this write, not
    # for the model's calls (held across them, a batch of more than 5 s kept an admin from
    # cancelling: review 49), then drops its rows; before, a batch of the model it replaced
    # that committed after it left rows on which every later batch failed (23505: review 48, F4)
    plpy.execute(_plan(plpy, "SELECT 1 FROM rag._claim_tenant_models(ARRAY[$1])", ["text"]), [tenant])
    # (the same switch, not only the same name: switched away and back meanwhile, the
    # model may have been registered anew, with other dimensions: review 49b)
    now = plpy.execute(_plan(plpy, _NEXT_MODEL, ["text"]), [tenant])
    if not now or (now[0]["next_model"], now[0]["started"]) != (spec.name, rows[0]["started"]):
        return 0
    # (a row of another model for one of these chunks, left by that race before 0.10.0 or
    # written by a writer of the tenant by hand, is replaced: found by the primary key, as
    # ON CONFLICT does, for a DELETE of them was planned on another index of this table, a
    # switch starts it empty and unanalysed, and read every row of the tenant per chunk)
    plpy.execute(_plan(plpy, """
        INSERT INTO rag.embeddings_next AS x (chunk_id, tenant, model, content_hash, embedding)
        SELECT u.id, $2, $3, u.h, u.e::@extschema:vector@.vector FROM unnest($1::bigint[], $4::bytea[], $5::text[]) AS u (id, h, e)
        ON CONFLICT (tenant, chunk_id) DO UPDATE
        SET model = excluded.model, content_hash = excluded.content_hash, embedding = excluded.embedding,
            created_at = excluded.created_at""",
        ["bigint[]", "text", "text", "bytea[]", "text[]"]),
        [ids, tenant, spec.name, hashes, [known[h] for h in hashes]])
    return len(todo)


@sql_errors
def write_key_file(plpy, name: str, secret: str | None, base_url: str | None) -> bool:
    keys.write(name, secret, base_url, keys.database(plpy))
    return True


def backend_stats() -> str:
    emb = {f"{n}/{t}": {"calls": e.calls, "texts": e.texts} for (n, t), e in _EMBEDDERS.items()}
    return json.dumps(STATS | {"embedders": emb})


# -- the lexical leg: BM25 over block-encoded postings (ragpg/lexical.py) ----------------

@dataclass
class Scorer:
    """Exact BM25 of any chunk for one query: its lexemes with their IDF, and k1, b and the
    tenant's average length; the tf and length come from the chunk's tsvector (TF_SQL,
    LEN_SQL)."""
    lexemes: list[str]
    idf: object        # numpy array, one per lexeme
    k1: float
    b: float
    avglen: float

    def scores(self, tf_rows: list, lengths: list) -> list[float]:
        import numpy as np

        if not tf_rows:
            return []
        tf = np.array(tf_rows, dtype=np.float64).reshape(len(tf_rows), len(self.lexemes))
        ln = np.array(lengths, dtype=np.float64)[:, None]
        return lexical.weight(tf, ln, self.idf[None, :], self.k1, self.b, self.avglen).sum(axis=1).tolist()


# a chunk's length (lexemes) and the tf of each lexeme of $L in it, from its tsvector
# (weights are all D: marking the lexemes A and keeping the A ones keeps exactly them)
LEN_SQL = "(SELECT coalesce(sum(cardinality(u.positions)), 0) FROM unnest(c.tsv) AS u)::float8"
TF_SQL = """ARRAY(SELECT coalesce(cardinality(u.positions), 0)
                  FROM unnest($L::text[]) WITH ORDINALITY AS l (lexeme, i)
                  LEFT JOIN unnest(ts_filter(setweight(c.tsv, 'A', $L), '{a}')) AS u ON u.lexeme = l.lexeme
                  ORDER BY l.i)"""
# ... and its occurrences of $L's lexemes, as position * 65536 + lexeme index (0-based)
HITS_SQL = """ARRAY(SELECT p * 65536 + (l.i - 1)
                    FROM unnest($L::text[]) WITH ORDINALITY AS l (lexeme, i)
                    JOIN unnest(ts_filter(setweight(c.tsv, 'A', $L), '{a}')) AS u ON u.lexeme = l.lexeme
                    CROSS JOIN LATERAL unnest(u.positions) AS p)"""


_BM25_CORPUS = """
    SELECT $1::text AS tenant, sum(c.chunks)::float8 AS chunks, sum(c.total_len)::float8 AS total_len
    FROM rag.corpus_stats AS c WHERE c.tenant = $1"""
# a query's whole plan in one round trip: the tenant, its corpus statistics, each query
# lexeme's document frequency and each of its blocks' bounds
_BM25_PLAN = """
    WITH t AS (SELECT rag.current_tenant() AS tenant),
    c AS (SELECT sum(s.chunks)::float8 AS chunks, sum(s.total_len)::float8 AS total_len
          FROM rag.corpus_stats AS s, t WHERE s.tenant = t.tenant),
    d AS (SELECT s.lexeme, sum(s.df)::float8 AS df
          FROM rag.lexeme_stats AS s, t
          WHERE s.tenant = t.tenant AND s.lexeme = ANY (rag.query_lexemes($1))
          GROUP BY s.lexeme HAVING sum(s.df) > 0)
    SELECT t.tenant, c.chunks, c.total_len, d.lexeme, d.df, b.first_id, b.n, b.max_tf, b.min_len,
           CASE WHEN b.n <= $2 THEN b.ids END AS ids, CASE WHEN b.n <= $2 THEN b.tfs END AS tfs,
           CASE WHEN b.n <= $2 THEN b.lens END AS lens
    FROM t CROSS JOIN c LEFT JOIN d ON true
    LEFT JOIN rag.posting_blocks AS b ON b.tenant = t.tenant AND b.lexeme = d.lexeme"""
# blocks this small come with the plan (a merged list's first four: its best 1,920
# postings), larger ones when the search asks for them
PRELOAD_MAX = 1024
_BLOCK_READ = """
    SELECT b.lexeme, b.first_id, b.ids, b.tfs, b.lens, b.n
    FROM unnest($2::text[], $3::bigint[]) AS w (lexeme, first_id)
    JOIN rag.posting_blocks AS b ON b.tenant = $1 AND b.lexeme = w.lexeme AND b.first_id = w.first_id"""
# the candidates' tf of each query lexeme (and length), for their exact scores
_EXACT_TF = ("SELECT c.id, " + TF_SQL.replace("$L", "$3") +
             " AS tf FROM rag.chunks AS c WHERE c.tenant = $1 AND c.id = ANY ($2) ORDER BY c.id")

@sql_errors
def bm25(plpy, query: str, n: int, k1: float, b: float, filter_json: str | None):
    """rag.bm25: exact BM25 top n of the current tenant, as (chunk ids, scores)."""
    return _bm25(plpy, query, n, k1, b, _predicate(plpy, filter_json))[:2]


def _bm25(plpy, query: str, n: int, k1: float, b: float, pred: str | None):
    """The lexical leg: exact BM25 top n of the current tenant, as (chunk ids, scores, a
    Scorer for other chunks' exact scores, or None without query lexemes). A concurrent merge can move blocks
    between the plan and a later read (each statement of a volatile function sees what
    committed before it): then plan again."""
    if not (k1 >= 0 and 0 <= b <= 1 and k1 < float("inf")):
        raise InvalidParameter(f"rag.bm25: k1 must be >= 0 and b between 0 and 1, got {k1} and {b}",
                               hint="RESET rag.bm25_k1; RESET rag.bm25_b")
    for attempt in range(3):
        try:
            return _bm25_once(plpy, query, n, k1, b, pred)
        except lexical.BlocksMoved:
            if attempt == 2:
                raise lexical.BlocksMoved("rag.bm25: the lexical index kept changing under the query "
                                          "(concurrent merges); retry", hint="retry the statement") from None
    raise AssertionError("unreachable")


def _bm25_once(plpy, query: str, n: int, k1: float, b: float, pred: str | None):
    import numpy as np

    rows = plpy.execute(_plan(plpy, _BM25_PLAN, ["text", "int"]), [query, PRELOAD_MAX])
    tenant, n_chunks, total_len = rows[0]["tenant"], rows[0]["chunks"] or 0.0, rows[0]["total_len"] or 0.0
    df = {r["lexeme"]: r["df"] for r in rows if r["lexeme"] is not None}
    if n_chunks <= 0 or not df:
        return [], [], None
    avglen = max(total_len / n_chunks, 1.0)
    terms = {lx: lexical.Term(lx, float(np.log(1 + (n_chunks - d + 0.5) / (d + 0.5)))) for lx, d in df.items()}
    # what scoring other chunks exactly needs (search_legs: the vector leg's candidates)
    scorer = Scorer(list(terms), np.array([t.idf for t in terms.values()]), k1, b, avglen)
    postings = dict.fromkeys(terms, 0)
    have = {}
    for r in rows:
        if r["first_id"] is not None:
            terms[r["lexeme"]].blocks.append((r["first_id"], r["n"], r["max_tf"], r["min_len"]))
            postings[r["lexeme"]] += r["n"]
            if r["ids"] is not None:
                have[(r["lexeme"], r["first_id"])] = (r["lexeme"], r["first_id"], r["ids"], r["tfs"], r["lens"], r["n"])
    read_plan = _plan(plpy, _BLOCK_READ, ["text", "text[]", "bigint[]"])

    def read(want):
        interrupts.check_interrupts()
        out = [have[w] for w in want if w in have]
        rest = [w for w in want if w not in have]
        if rest:
            got = plpy.execute(read_plan, [tenant, [w[0] for w in rest], [w[1] for w in rest]])
            if len(got) != len(rest):
                raise lexical.BlocksMoved("rag.bm25: posting blocks moved")
            out += [(r["lexeme"], r["first_id"], r["ids"], r["tfs"], r["lens"], r["n"]) for r in got]
        return out

    order = list(terms)
    if pred is not None:
        return _bm25_filtered(plpy, tenant, query, n, k1, b, avglen, [terms[lx] for lx in order], pred, read) \
            + (scorer,)
    exact_plan = _plan(plpy, _EXACT_TF, ["text", "bigint[]", "text[]"])
    live = [t for t in order if terms[t].blocks]

    def exact(ids):
        interrupts.check_interrupts()
        rows = plpy.execute(exact_plan, [tenant, ids, live])
        return (np.array([r["id"] for r in rows], dtype=np.int64),
                np.array([r["tf"] for r in rows], dtype=np.float64).reshape(len(rows), len(live)))

    # deleted chunks' postings wait in their blocks for the next merge: the blocks then
    # hold more postings than the lexeme's document frequency
    ghosts = any(postings[lx] > df[lx] for lx in terms)
    stats = lexical.Stats()
    ids, scores = lexical.top_k([terms[t] for t in live], n, k1, b, avglen, read, exact, ghosts, stats)
    STATS["lexical_queries"] += 1
    STATS["lexical_postings_read"] += stats.postings_read
    STATS["lexical_postings_total"] += stats.postings_total
    STATS["lexical_exact_lookups"] += stats.exact_lookups
    return ids.tolist(), scores.tolist(), scorer


def _bm25_filtered(plpy, tenant, query, n, k1, b, avglen, terms, pred, read):
    """BM25 over the chunks that match a filter (a predicate on documents d, built by
    rag._filter_predicate): every block of the query's lexemes, scored where it matches."""
    import numpy as np

    allowed = np.array([r["id"] for r in plpy.execute(plpy.prepare(
        "SELECT c.id FROM rag.chunks AS c JOIN rag.documents AS d ON d.id = c.document_id AND " + pred +
        " WHERE c.tenant = $1 AND c.tsv @@ rag.any_terms_tsquery($2)", ["text", "text"]), [tenant, query])],
        dtype=np.int64)
    if not len(allowed):
        return [], []
    want = [(t.lexeme, blk[0]) for t in terms for blk in t.blocks]
    idf = {t.lexeme: t.idf for t in terms}
    got_ids, got_w = [], []
    for i in range(0, len(want), 256):
        for lexeme, fid, ids, tfs, lens, cnt in read(want[i:i + 256]):
            a, tf, ln = lexical.decode(ids, tfs, lens, cnt, f"({lexeme!r}, {fid})")
            keep = np.isin(a, allowed)
            got_ids.append(a[keep])
            got_w.append(lexical.weight(tf[keep], ln[keep], idf[lexeme], k1, b, avglen))
    if not got_ids:
        return [], []
    uniq, inv = np.unique(np.concatenate(got_ids), return_inverse=True)
    score = np.bincount(inv, weights=np.concatenate(got_w), minlength=len(uniq))
    top = np.lexsort((uniq, -score))[:n]
    return uniq[top].tolist(), score[top].tolist()


MERGE_POSTINGS = 1 << 18   # postings a merge holds at once (a lexeme with more: alone)
MERGE_LEXEMES = 512        # and lexemes (a join in its plan may be nested loops: hostile review 32)


@sql_errors
def merge_posting_blocks(plpy, tenant: str, lexemes: list[str]) -> int:
    """Rewrite each lexeme's blocks as merged blocks (ragpg.lexical.merge), dropping the
    postings of deleted chunks. A lexeme that another transaction is merging is skipped
    (a try-lock): writers never wait for each other here. Only the current tenant's,
    but for a superuser (a role could otherwise hold another tenant's merge locks)."""
    import numpy as np

    who = plpy.execute(_plan(plpy, "SELECT rag.current_tenant() AS t, rag._is_superuser() AS su", []))[0]
    if tenant != who["t"] and not who["su"]:   # a superuser's statement may write any tenant's chunks
        raise NotAllowed(f"rag.merge_posting_blocks: tenant {shown(tenant)} is not the current tenant",
                         hint="SET rag.tenant first")

    # Lexemes in batches of up to MERGE_POSTINGS postings (memory) and MERGE_LEXEMES
    # lexemes, each batch in two writing statements: every statement PL/Python runs is a
    # subtransaction, and each that writes takes a subtransaction id (past 64 in a
    # transaction, every snapshot in the cluster reads pg_subtrans). A lexeme is merged
    # whole or skipped: a try-lock on all its blocks, or another merge holds some (the few
    # locked here stay locked until this transaction ends, and nothing waits for them;
    # only the blocks it locked are taken: a block that came since waits for the next
    # merge). Row locks, not an advisory lock: any role could take one whose key it can
    # compute and hold off a tenant's merges; these rows only the tenant's roles see
    # (row-level security)
    sizes = plpy.execute(_plan(plpy, """
        SELECT b.lexeme, sum(b.n)::bigint AS n FROM rag.posting_blocks AS b
        WHERE b.tenant = $1 AND b.lexeme = ANY ($2) GROUP BY b.lexeme ORDER BY b.lexeme""", ["text", "text[]"]),
        [tenant, list(lexemes)])
    take = _plan(plpy, """
        WITH locked AS MATERIALIZED (
            SELECT b.lexeme, b.first_id FROM rag.posting_blocks AS b
            WHERE b.tenant = $1 AND b.lexeme = ANY ($2) FOR UPDATE SKIP LOCKED
        ), whole AS MATERIALIZED (
            SELECT l.lexeme FROM (SELECT x.lexeme, count(*) AS n FROM locked AS x GROUP BY x.lexeme) AS l
            JOIN (SELECT b.lexeme, count(*) AS n FROM rag.posting_blocks AS b
                  WHERE b.tenant = $1 AND b.lexeme = ANY ($2) GROUP BY b.lexeme) AS a
              ON a.lexeme = l.lexeme AND a.n = l.n
        )
        DELETE FROM rag.posting_blocks AS b USING locked AS l, whole AS w
        WHERE b.tenant = $1 AND b.lexeme = l.lexeme AND b.first_id = l.first_id AND w.lexeme = l.lexeme
        RETURNING b.lexeme, b.first_id, b.ids, b.tfs, b.lens, b.n""", ["text", "text[]"])
    df_plan = _plan(plpy, "SELECT s.lexeme, sum(s.df)::bigint AS df FROM rag.lexeme_stats AS s "
                          "WHERE s.tenant = $1 AND s.lexeme = ANY ($2) GROUP BY s.lexeme", ["text", "text[]"])
    dead_plan = _plan(plpy, """
        SELECT coalesce(array_agg(u.id), '{}') AS dead FROM unnest($2::text::bigint[]) AS u (id)
        WHERE NOT EXISTS (SELECT 1 FROM rag.chunks AS c WHERE c.tenant = $1 AND c.id = u.id)""", ["text", "text"])
    put = _plan(plpy, """
        INSERT INTO rag.posting_blocks (tenant, lexeme, first_id, merged, n, max_tf, min_len, ids, tfs, lens)
        SELECT $1, u.x, u.f, true, u.n, u.mt, u.ml, u.i, u.t, u.l
        FROM unnest($2::text[], $3::bigint[], $4::int[], $5::int[], $6::int[], $7::bytea[], $8::bytea[], $9::bytea[])
             AS u (x, f, n, mt, ml, i, t, l)""",
        ["text", "text[]", "bigint[]", "int[]", "int[]", "int[]", "bytea[]", "bytea[]", "bytea[]"])
    corpus = plpy.execute(_plan(plpy, _BM25_CORPUS, ["text"]), [tenant])[0]
    avglen = max((corpus["total_len"] or 0.0) / max(corpus["chunks"] or 0.0, 1.0), 1.0)
    batches, size = [], 0
    for r in sizes:
        if not batches or size + r["n"] > MERGE_POSTINGS or len(batches[-1]) >= MERGE_LEXEMES:
            batches.append([])
            size = 0
        batches[-1].append(r["lexeme"])
        size += r["n"]
    done = 0
    for batch in batches:
        interrupts.check_interrupts()
        parts: dict[str, list] = {}
        for r in plpy.execute(take, [tenant, batch]):
            parts.setdefault(r["lexeme"], []).append(
                lexical.decode(r["ids"], r["tfs"], r["lens"], r["n"], f"({r['lexeme']!r}, {r['first_id']})"))
        if not parts:
            continue
        df = {r["lexeme"]: r["df"] for r in plpy.execute(df_plan, [tenant, list(parts)])}
        out = []   # (lexeme, Block)
        for lexeme, got in parts.items():
            interrupts.check_interrupts()
            dead = None
            if sum(len(p[0]) for p in got) > df.get(lexeme, 0):   # deleted chunks among them
                ids = np.concatenate([p[0] for p in got])
                dead = np.array(plpy.execute(dead_plan, [tenant, "{" + ",".join(map(str, ids.tolist())) + "}"]
                                             )[0]["dead"], dtype=np.int64)
            out.extend((lexeme, x) for x in lexical.merge(got, avglen, dead))
            done += 1
        if out:
            plpy.execute(put, [tenant, [x for x, _ in out], [b.first_id for _, b in out], [b.n for _, b in out],
                               [b.max_tf for _, b in out], [b.min_len for _, b in out], [b.ids for _, b in out],
                               [b.tfs for _, b in out], [b.lens for _, b in out]])
    return done
