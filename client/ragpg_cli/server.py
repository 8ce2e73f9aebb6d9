"""HTTP API over the `rag` extension: a thin layer, every answer comes from SQL.

    ragpg serve --dsn "host=... user=rag_api" --keys-file keys.txt

Each request's role (and so its tenant) comes from its API key (`Authorization: Bearer
KEY` or `X-API-Key: KEY`), mapped to a database role in the keys file (`KEY ROLE` per
line); the request runs under `SET LOCAL ROLE <role>` in its own transaction, so
row-level security applies exactly as for a SQL user. The body never names a tenant.

Errors (body: {"error", "sqlstate", "hint"}; no stack trace ever leaves the server):
- 400: the input is at fault. A database error of SQLSTATE class 21, 22, 23, 2F, 38, 39,
  42, 44, 54, 0A or P0 (the extension's own errors, PL/Python's 38000 included) comes back
  with its message and SQLSTATE; a JSON body with a lone surrogate (`"\\ud800"`) is
  refused before any SQL runs.
- 401 without a valid key, and 413 for a body over its limit (1 MiB; a JSON /ingest
  4 MiB, a file 101 MB) or with over 100,000 JSON arrays and objects, before its body is
  parsed (Gate); 403 for 42501; 409 for class 40 (serialization failure or deadlock: send
  it again); 422 for a body that is not JSON or lacks fields (without the input it
  echoed); 400 for JSON nested too deeply.
- 429 with Retry-After (1 s) when the server is saturated: a request finds `queue_size`
  requests (50) already waiting for one of the `pool_size` database connections (10) and
  is answered at once, or waits `queue_timeout` seconds (10) without getting one. One
  role (its keys together) holds at most `per_role` connections (half the pool; all of
  it when the keys name one role), so one busy role leaves the others half; its other
  requests wait their turn, bodies unread, outside the pool's queue, at most `queue_size`
  of them, under the same timeout. Also 429 (no Retry-After) for 53400, the extension's
  spent rag.daily_budget.
- 502 when the model provider failed or refused the key (58000, 28000); 504 when the
  statement ran into statement_timeout (57014): `statement_timeout` seconds (300) per
  request, or the login role's own setting where that is lower. A request whose client
  goes away is cancelled in the database (499 in the log; nothing is sent).
- 503 with Retry-After only when the database cannot be reached: no connection can be
  made, the connection broke (class 08, 57P01-57P03, or no SQLSTATE) or the server is out
  of resources (class 53). Any other database error is a 500 with its SQLSTATE, logged.
  /healthz asks the database on a connection of its own, not the pool's (busy is not
  down), once a second at most whatever the number of probes (a probe that comes while a
  check runs gets the last outcome at once, if there is one), and answers 503 after 5 s
  without an answer.

Slow clients: a request's headers and body must arrive within `read_timeout` seconds
(15) of the connection opening or of the request's first byte, else the connection is
closed; an idle connection is closed `keep_alive` seconds (5) after its last response.
uvicorn alone waits for ever on a client that trickles its headers or body (slowloris).
At most `max_connections` (1,000) connections are open at once, and `max_per_client`
(100) from one client (an IPv4 address or an IPv6 /64): past a client's cap a connection
is answered 429 and closed before it is read; at the server's cap it takes the place of
a connection without a request in progress (one that never sent a request first, a
response that still drains last), or is answered 503 if every one has a request
(ConnectionCaps). JSON /ingest bodies are parsed PARSERS (2) at a time, one role's one
at a time, in two threads of their own, if their client is still there.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import fcntl
import ipaddress
import itertools
import json
import logging
import re
import socket
import struct
import termios
import threading
import time
from collections.abc import Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import h11
import psycopg
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("ragpg.serve")


# --- request and response models (AskOut/Citation keep the seed's fields) ------------------

INT4 = {"ge": -2**31, "le": 2**31 - 1}  # any int4 reaches SQL, which owns the limits (rag.max_k)


class AskIn(BaseModel):
    question: str = Field(..., max_length=100_000)
    k: int = Field(8, **INT4)
    rerank: str | None = Field(None, max_length=128, description="a rerank or chat model of rag.models")
    rerank_k: int = Field(30, **INT4)


class Citation(BaseModel):
    index: int
    document_id: int
    snippet: str
    chunk_id: int | None = None
    source: str | None = None
    title: str | None = None
    url: str | None = None        # with #page=N when the page is known
    heading: str | None = None    # the chunk's heading path
    page: int | None = None       # its page (PDF)


class AskOut(BaseModel):
    answer: str
    citations: list[Citation]
    rerank: dict[str, Any] | None = None   # {model, rerank_k, reranked, error}: only when a reranker was named


class SearchIn(BaseModel):
    query: str = Field(..., max_length=100_000)
    k: int = Field(8, **INT4)
    mode: Literal["hybrid", "vector", "lexical"] = "hybrid"
    filter: dict[str, Any] | None = None
    fusion: Literal["convex", "rrf"] = "convex"
    rerank: str | None = Field(None, max_length=128, description="a rerank or chat model of rag.models")
    rerank_k: int = Field(30, **INT4)
    # rag.search's weights; omitted: its defaults (SQL checks the values: 22023 -> 400)
    vector_weight: float | None = None
    lexical_weight: float | None = None
    proximity_weight: float | None = None


WEIGHTS = ("vector_weight", "lexical_weight", "proximity_weight")


class SearchHit(BaseModel):
    chunk_id: int
    document_id: int
    ord: int
    content: str
    score: float
    vector_rank: int | None
    lexical_rank: int | None
    rerank_rank: int | None = None
    heading: str | None = None
    page: int | None = None
    url: str | None = None


class SearchOut(BaseModel):
    results: list[SearchHit]


class IngestIn(BaseModel):
    content: str = Field(..., max_length=100_000_000)
    source: str
    title: str | None = None
    url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class FileIn(BaseModel):
    """POST /ingest as multipart/form-data: a file part and optional fields."""
    file: bytes = Field(..., description="the file: PDF, DOCX, HTML, markdown or text (rag.ingest_file)")
    source: str | None = Field(None, max_length=10_000, description="default: the file's name")
    title: str | None = Field(None, max_length=10_000)
    url: str | None = Field(None, max_length=10_000)
    metadata: str | None = Field(None, max_length=100_000, description="a JSON object, as text")


@dataclass
class Upload:
    data: bytes
    filename: str
    source: str | None
    title: str | None
    url: str | None
    metadata: dict


UPLOAD_CHECK = ("SELECT has_function_privilege('rag.ingest_file(bytea, text, text, text, text, jsonb, text)', "
                "'EXECUTE') AS ingest, (SELECT s.value::bigint FROM rag.settings() AS s "
                "WHERE s.name = 'max_file_bytes') AS most")
MAX_UPLOAD = 100_000_000   # bytes of one uploaded file; rag.max_file_bytes is the real limit (50 MB)
MAX_UPLOAD_BODY = MAX_UPLOAD + 1_048_576   # a multipart POST /ingest: the file, its fields, the framing
MAX_DOCUMENT_BODY = 4_194_304   # a JSON POST /ingest (a larger document goes as a file: not parsed as JSON)
MAX_BODY = 1_048_576       # any other POST body (a question is at most rag.max_query_chars, 4,000)
MAX_CONTAINERS = 100_000   # JSON arrays and objects in one body
# /ingest takes either body; FastAPI would document only one, so both are written out here
INGEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/IngestIn"}},
    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/FileIn"},
                            "encoding": {"file": {"contentType": "application/octet-stream"}}}}}}


async def file_upload(request: Request, most: int) -> Upload:
    """The file and fields of a multipart /ingest; 422 for a malformed or incomplete one, a
    54000 for a file over `most` bytes (the database's limit), before it is read into
    memory (review 47: five 99 MB uploads took the server 936 MB, to be refused then)."""
    def bad(msg: str, loc: str = "file"):
        return RequestValidationError([{"type": "value_error", "loc": ["body", loc], "msg": msg, "input": None}])
    try:
        form = await request.form(max_files=1, max_fields=8)
    except HTTPException:
        raise   # (BodyTooLarge)
    except Exception as e:  # noqa: BLE001 (starlette raises several kinds on a malformed body)
        raise bad(f"not a valid multipart body: {str(e)[:200]}") from None
    try:
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise bad("a file part named 'file' is required")
        most = min(most, MAX_UPLOAD)
        if part.size is not None and part.size > most:
            raise ApiError(400, f"the file is {part.size:,} bytes, over the limit of {most:,} bytes", "54000",
                           hint="split it; rag.max_file_bytes bounds what the database takes")
        data = await part.read(most + 1)
        if len(data) > most:
            raise ApiError(400, f"the file is over the limit of {most:,} bytes", "54000",
                           hint="split it; rag.max_file_bytes bounds what the database takes")
        fields = {k: form.get(k) for k in ("source", "title", "url", "metadata")}
        if any(v is not None and not isinstance(v, str) for v in fields.values()):
            raise bad("only 'file' may be a file part", "metadata")
        try:
            meta = json.loads(fields["metadata"]) if fields["metadata"] else {}
        except ValueError:
            raise bad("metadata must be a JSON object", "metadata") from None
        if not isinstance(meta, dict):
            raise bad("metadata must be a JSON object", "metadata")
        name = part.filename or "upload"
        return Upload(data, name, fields["source"], fields["title"], fields["url"], meta)
    finally:
        await form.close()   # the spooled file parts


class IngestOut(BaseModel):
    document_id: int


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(..., max_length=100_000)


class ChatIn(BaseModel):
    messages: list[Turn] = Field(..., min_length=1, max_length=100)
    k: int = Field(8, **INT4)


class ChatOut(AskOut):
    rewritten_query: str


class Health(BaseModel):
    status: str
    database: str


class ErrorOut(BaseModel):
    error: str
    sqlstate: str | None = None
    hint: str | None = None


ERRORS = {status: {"model": ErrorOut} for status in (400, 401, 403, 409, 429, 500, 502, 503, 504)}
HEALTH_TIMEOUT = 5.0   # seconds /healthz waits for the database
RETRY_AFTER = {"Retry-After": "1"}  # seconds, on 429 (saturated) and 503 (database unreachable)


class ApiError(Exception):
    def __init__(self, status: int, error: str, sqlstate: str | None = None, hint: str | None = None,
                 headers: dict[str, str] | None = None):
        self.status, self.body = status, ErrorOut(error=error, sqlstate=sqlstate, hint=hint)
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content=self.body.model_dump(exclude_none=True),
                            headers=self.headers)


class BodyTooLarge(HTTPException):
    """A request body past a limit, found while it was read (a chunked body, or one too
    full of JSON containers); an HTTPException so that FastAPI's body parsing lets it
    through as it is."""
    hint = "a large document goes to /ingest as a file (multipart/form-data)"

    def __init__(self, detail: str):
        super().__init__(413, detail)

    def response(self) -> JSONResponse:
        return ApiError(413, self.detail, hint=self.hint).response()


def key_of(headers) -> str:
    """The API key a request presents: `Authorization: Bearer KEY`, else `X-API-Key`."""
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")


class Gate:
    """ASGI middleware: what is checked before anything reads a request's body.

    A POST (or any method but GET, HEAD, OPTIONS) without a known API key is a 401 at
    once. Then the request waits for its role's turn (`turn`: at most per_role of a
    role's requests go on at a time), so that a role's waiting requests hold no body
    (past uvicorn's 64 KiB buffer; such a request is closed if its wait outlasts the
    read deadline, 15 s against the turn's 10). The turn ends when the response starts:
    a client that reads its answer slowly, or never, holds none.
    A body over its limit is a 413, at once when Content-Length says so, else as soon as
    the bytes read pass it: `max_upload` for a multipart /ingest (a file), `max_document`
    for a JSON /ingest, `max_body` for any other. A JSON body may hold at most
    `max_containers` arrays and objects (every `[` and `{` counts, in strings too): parsed,
    each costs ~60 bytes, and a body of `[[],[],...]` cost 65 times its size. Without
    this FastAPI reads and parses a whole body before any dependency, the key check
    included: an unauthenticated client made the server hold gigabytes."""

    def __init__(self, app, keys: dict[str, str], turn, max_body: int, max_document: int, max_upload: int,
                 max_containers: int):
        self.app, self.keys, self.turn = app, keys, turn
        self.max_body, self.max_document, self.max_upload = max_body, max_document, max_upload
        self.max_containers = max_containers

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        key = key_of(headers)
        if not key or key not in self.keys:
            return await ApiError(401, "missing or unknown API key",
                                  hint="send Authorization: Bearer <key>").response()(scope, receive, send)
        upload = headers.get("content-type", "").lower().startswith("multipart/")
        limit = self.max_body if scope["path"] != "/ingest" else self.max_upload if upload else self.max_document
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return await BodyTooLarge(f"request body over {limit:,} bytes").response()(scope, receive, send)
        seen = containers = 0
        started = False

        async def bounded_receive():
            nonlocal seen, containers
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > limit:
                    raise BodyTooLarge(f"request body over {limit:,} bytes")
                if not upload:
                    containers += chunk.count(b"[") + chunk.count(b"{")
                    if containers > self.max_containers:
                        raise BodyTooLarge(f"request body: more than {self.max_containers:,} JSON arrays and "
                                           "objects ([ and { are counted, in strings too)")
            return message

        turn = contextlib.AsyncExitStack()

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                await turn.aclose()   # the answer is made: writing it to a slow reader takes no turn
            await send(message)

        role = scope.setdefault("state", {})["role"] = self.keys[key]   # (request.state.role)
        try:
            await turn.enter_async_context(self.turn(role))
        except ApiError as e:   # the role's turn did not come
            return await e.response()(scope, receive, send)
        try:
            await self.app(scope, bounded_receive, watched_send)
        except BodyTooLarge as e:   # raised where no handler of the app saw it
            if started:
                raise
            await e.response()(scope, receive, send)
        finally:
            await turn.aclose()


# --- database errors -> HTTP status (the module docstring says why) -------------------------

SQLSTATE_STATUS = {
    # by code
    "42501": 403,                               # insufficient_privilege
    "53400": 429,                               # configuration_limit_exceeded: rag.daily_budget is spent
    "57014": 504,                               # query_canceled: statement_timeout
    "57P01": 503, "57P02": 503, "57P03": 503,   # the server is shutting down, crashed, or starting
    "58000": 502, "28000": 502,                 # the model provider failed, or refused the model's key
    # by class: the input is at fault
    "21": 400, "22": 400, "23": 400, "2F": 400, "38": 400, "39": 400, "42": 400, "44": 400,
    "54": 400, "0A": 400, "P0": 400,
    # by class: try again
    "40": 409,                                  # serialization failure, deadlock
    "08": 503, "53": 503,                       # connection exception; insufficient resources
}


def http_status(sqlstate: str) -> int:
    """The HTTP status for a database error: its code's, else its class's, else 500."""
    return SQLSTATE_STATUS.get(sqlstate) or SQLSTATE_STATUS.get(sqlstate[:2], 500)


def database_error(e: psycopg.Error) -> ApiError:
    first_line = (str(e).splitlines() or [type(e).__name__])[0][:200]
    state = e.sqlstate
    if state is None:  # raised by the driver, not by the server
        if isinstance(e, psycopg.DataError):  # refused before sending, e.g. a NUL character
            return ApiError(400, first_line, "22021")
        if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):  # the connection broke
            return ApiError(503, "database unavailable", hint=first_line, headers=RETRY_AFTER)
        log.error("database driver error: %s", first_line)
        return ApiError(500, "database error")
    status = http_status(state)
    if status == 503:
        return ApiError(503, "database unavailable", state, headers=RETRY_AFTER)
    if status == 500:
        log.error("database error %s: %s", state, first_line)
        return ApiError(500, "database error", state)
    return ApiError(status, e.diag.message_primary or first_line, state, e.diag.message_hint)


# --- the request body must be Unicode text --------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_at(body: Any) -> tuple | None:
    """Where parsed JSON holds a lone surrogate (a key or a string), as a path, or None.

    json.loads turns an unpaired `\\ud800` escape into a character that no UTF-8 encoder
    accepts (pydantic, psycopg, the error response); a valid pair is already one character.
    Depth first, one iterator per level of nesting: time linear in the body, memory in its
    depth (a path per queued item cost items x depth)."""
    if isinstance(body, str):
        return () if _SURROGATE.search(body) else None
    if not isinstance(body, (dict, list)):
        return None
    path: list = []
    levels = [_items(body)]
    while levels:
        for key, item in levels[-1]:
            if isinstance(key, str) and _SURROGATE.search(key):
                return tuple(path) + (key,)
            if isinstance(item, str):
                if _SURROGATE.search(item):
                    return tuple(path) + (key,)
            elif isinstance(item, (dict, list)):
                path.append(key)
                levels.append(_items(item))
                break
        else:   # this level is done
            levels.pop()
            if path:
                path.pop()
    return None


def _items(value):
    return iter(value.items()) if isinstance(value, dict) else enumerate(value)


def nested_too_deeply() -> ApiError:
    return ApiError(400, "request body: JSON nested too deeply", hint="a few levels are enough")


def unicode_json(raw: bytes) -> Any:
    """The body parsed as JSON (ValueError if it is not); 400 for JSON nested past what the
    parser takes, or with a lone surrogate anywhere."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise nested_too_deeply() from None
    check_unicode(body)
    return body


def check_unicode(body: Any) -> None:
    path = lone_surrogate_at(body)
    if path is not None:
        where = ".".join(str(p).encode("utf-8", "backslashreplace").decode()[:40] for p in path) or "the body"
        raise ApiError(400, f"request body: {where} holds a lone surrogate (an unpaired \\ud800-\\udfff "
                            "escape), which is not Unicode text",
                       hint="send UTF-8 text; a character outside the BMP is a pair of escapes, high then low")


async def unicode_body(request: Request) -> None:
    """A dependency of every route: 400 for a JSON body with a lone surrogate anywhere, or
    nested past what the parser takes. (A multipart body is the upload's to read; a JSON
    /ingest is checked by its route, ingest_arguments.)"""
    if request.method not in ("POST", "PUT", "PATCH") or request.url.path == "/ingest" or \
            request.headers.get("content-type", "").lower().startswith("multipart/") or not await request.body():
        return
    try:
        body = await request.json()  # FastAPI has parsed it already (at most 1 MiB): this is its cache
    except ValueError:
        return  # not JSON: FastAPI answers 422
    except RecursionError:
        raise nested_too_deeply() from None
    await asyncio.to_thread(check_unicode, body)


async def client_gone(request: Request) -> None:
    """Returns when the client closes the connection (its body was read before: the
    next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClientLeft(Exception):
    """The client closed the connection before its request's work ended."""


async def while_client_there(request: Request, work: Coroutine):
    """work's outcome, or ClientLeft if the client closes the connection first: work is
    then cancelled, and awaited (its cleanup done: a statement's cancel in the database,
    its rollback, its connection back in the pool). Call it once the body has been read:
    the watch reads the request's next message."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(client_gone(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientLeft
    return task.result()


PARSERS = 2   # JSON /ingest bodies parsed at once, server-wide (each up to ~80 MB of objects)
_PARSING = threading.BoundedSemaphore(PARSERS)   # held by the threads that parse (see ingest_arguments)
# the parses' own threads: the allocator keeps what a thread's parses freed for that thread
# (asyncio's default pool, with a thread per cancelled parse, held ~500 MB after a flood)
_PARSE_THREADS = concurrent.futures.ThreadPoolExecutor(PARSERS, thread_name_prefix="ragpg-parse")


def ingest_arguments(raw: bytes) -> tuple:
    """A JSON /ingest body as rag.ingest's arguments, metadata as JSON text: the parsed
    objects are gone when this returns (a 4 MiB body of short strings is ~80 MB of them).
    ApiError, or RequestValidationError (422). At most PARSERS at once: the app's locks
    queue the requests (one role's at a time), and this semaphore holds while a thread
    parses, also when the request that started it was cancelled (which releases the
    app's locks)."""
    with _PARSING:
        return _ingest_arguments(raw)


def _ingest_arguments(raw: bytes) -> tuple:
    try:
        payload = IngestIn.model_validate(unicode_json(raw))
    except ValueError as e:   # not JSON, or not an IngestIn (pydantic's ValidationError is one)
        errors = e.errors(include_url=False) if isinstance(e, ValidationError) else \
            [{"type": "json_invalid", "loc": ["body"], "msg": "the body is not JSON"}]
        raise RequestValidationError(errors) from None
    return payload.content, payload.source, payload.title, payload.url, json.dumps(payload.metadata)


# --- a streamed answer's pieces -------------------------------------------------------------

_MARKER = re.compile(r"\[\d+\]\s*")


def answer_pieces(answer: str) -> list[str]:
    """The answer cut after each citation marker (and the space after it): pieces that
    join back to the whole answer, newlines included; linear in its length."""
    pieces, start = [], 0
    for m in _MARKER.finditer(answer):
        pieces.append(answer[start:m.end()])
        start = m.end()
    if start < len(answer):
        pieces.append(answer[start:])
    return pieces


# --- conversational rewrite ----------------------------------------------------------------

_FOLLOW_UP = re.compile(r"\b(it|its|that|this|those|these|they|them|their|there|he|she|one|ones|same)\b", re.I)
_STOP = set("""a an and are as at be by can do does did for from how i in is it its of on or the to was
what when where which who why will with you your me my we our about tell more please also""".split())


def rewrite_follow_up(messages: list[Turn]) -> str:
    """Rule-based standalone query: a follow-up that leans on earlier turns (pronouns, or
    very short) gets the content words of the previous user question added."""
    users = [m.content.strip() for m in messages if m.role == "user" and m.content.strip()]
    if not users:
        raise ApiError(400, "chat: no user message", "22023", "the last message should be the user's question")
    question = users[-1]
    if len(users) == 1:
        return question
    words = re.findall(r"[\w-]+", question)
    if not (_FOLLOW_UP.search(question) or len(words) <= 4):
        return question
    seen = {x.lower() for x in words} | _STOP
    extra = []
    for w in re.findall(r"[\w-]+", users[-2]):
        if w.lower() not in seen:   # each word once, at most REWRITE_WORDS of them
            seen.add(w.lower())
            extra.append(w)
            if len(extra) == REWRITE_WORDS:
                break
    return f"{question} ({' '.join(extra)})" if extra else question


REWRITE_WORDS = 20   # content words a follow-up borrows from the question before it


# --- the app -------------------------------------------------------------------------------

def load_keys(path: str | None, inline: str | None = None) -> dict[str, str]:
    """API key -> database role, from a file of `KEY ROLE` lines (blank lines and lines
    starting with # are skipped) and/or 'KEY=ROLE,...'. A line that is not exactly a key
    and a role, or a key given twice, stops the server, named by its line (never the key)."""
    keys: dict[str, str] = {}
    lines = [(f"{path}:{n}", line) for n, line in enumerate(open(path, encoding="utf-8").read().splitlines(), 1)] \
        if path else []
    lines += [(f"--keys item {n}", p.replace("=", " ", 1) if p.count("=") == 1 else p)
              for n, p in enumerate((inline or "").split(","), 1) if p.strip()]
    for where, line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise SystemExit(f"ragpg serve: {where}: expected an API key and a role, got {len(fields)} fields")
        key, role = fields
        if key in keys:
            raise SystemExit(f"ragpg serve: {where}: this API key was given before (for role {keys[key]})")
        keys[key] = role
    return keys


def default_per_role(pool_size: int, keys: dict[str, str]) -> int:
    """Connections one role may hold: half the pool when the keys name several roles (one
    busy role leaves the others half; several busy ones share it), the whole pool when
    they name one."""
    return max(1, pool_size // 2) if len(set(keys.values())) > 1 else pool_size


def create_app(dsn: str, keys: dict[str, str], pool_size: int = 10, queue_size: int = 50,
               queue_timeout: float = 10.0, per_role: int | None = None, statement_timeout: float = 300.0,
               max_body: int = MAX_BODY, max_document: int = MAX_DOCUMENT_BODY, max_upload: int = MAX_UPLOAD_BODY,
               max_containers: int = MAX_CONTAINERS) -> FastAPI:
    """The app. At most `pool_size` database connections; at most `queue_size` requests wait
    for one, each at most `queue_timeout` seconds; past either bound a request gets 429.
    One role (its keys together) holds at most `per_role` connections (default_per_role);
    its other requests wait their turn, at most `queue_size` of them and each at most
    `queue_timeout` seconds (then 429), without taking a place in the pool's queue. Each
    statement ends after `statement_timeout` seconds (504), or sooner where the
    connection's own setting is lower. Bodies: see Gate."""
    held = 0  # connections lent to requests now: a pool timeout while some are held means busy
    per_role = per_role or default_per_role(pool_size, keys)
    turns = {role: asyncio.Semaphore(per_role) for role in set(keys.values())}
    waiting: dict[str, int] = {}   # role -> its requests waiting for their turn
    timeout_ms = max(1, round(statement_timeout * 1000))
    health = {"at": -1.0, "out": None, "conn": None, "closing": None, "task": None}
    # JSON /ingest bodies (up to 4 MiB) are parsed PARSERS at a time, one role's one at a
    # time: one role's five bodies delayed another's small ingest from 0.07 s to 1.5 s
    # behind a single server-wide lock (review 47, finding 5); memory stays PARSERS parses
    parsing = asyncio.Semaphore(PARSERS)
    parsing_for = {role: asyncio.Lock() for role in set(keys.values())}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=pool_size, open=False, timeout=queue_timeout,
                                   max_waiting=queue_size, kwargs={"autocommit": False, "connect_timeout": 5})
        await pool.open(wait=False)
        app.state.pool = pool
        yield
        await pool.close()
        if health["conn"] is not None:
            await health["conn"].close()

    app = FastAPI(title="ragpg", version="0.12.0", lifespan=lifespan, dependencies=[Depends(unicode_body)],
                  description="HTTP access to the rag Postgres extension: ask, search, ingest.")
    generated = app.openapi

    def openapi() -> dict:
        """FastAPI's schema, plus the two bodies /ingest documents by hand (INGEST_BODY)."""
        schema = generated()
        found = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (IngestIn, FileIn):   # (once: FastAPI keeps the schema; 2.3 ms a request, review 53)
            if model.__name__ not in found:
                found[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        return schema
    app.openapi = openapi

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, exc: BodyTooLarge):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        # FastAPI's 422 without the `input` it echoes (up to a whole body, back to the sender)
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(
            [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()[:20]])})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):  # never a stack trace to the client
        log.exception("unexpected error")
        return JSONResponse(status_code=500, content={"error": "internal error"})

    def role_of(request: Request) -> str:
        return request.state.role   # the key's, found by Gate (401 there without one)

    @asynccontextmanager
    async def for_role(role: str):
        """Role's turn: one of its per_role places; 429 when queue_size of its requests wait
        already, or after queue_timeout seconds of waiting."""
        turn = turns[role]
        if turn.locked() and waiting.get(role, 0) >= queue_size:
            raise ApiError(429, f"server busy: {queue_size} requests of this key's role are already waiting",
                           hint="retry after the Retry-After seconds", headers=RETRY_AFTER)
        waiting[role] = waiting.get(role, 0) + 1
        try:
            async with asyncio.timeout(queue_timeout):
                await turn.acquire()
        except TimeoutError:
            raise ApiError(429, f"server busy: this key's role has had its {per_role} connections for "
                                f"{queue_timeout:g} s", hint="retry after the Retry-After seconds",
                           headers=RETRY_AFTER) from None
        finally:
            waiting[role] -= 1
        try:
            yield
        finally:
            turn.release()

    @asynccontextmanager
    async def connection(request: Request):
        """A pooled connection, or 429 (saturated) / 503 (the database cannot be reached)."""
        nonlocal held
        pool = request.app.state.pool
        try:
            conn = await pool.getconn()
        except TooManyRequests:
            raise ApiError(429, f"server busy: {queue_size} requests are already waiting for a database "
                                "connection", hint="retry after the Retry-After seconds",
                           headers=RETRY_AFTER) from None
        except PoolTimeout as e:
            if held:
                raise ApiError(429, f"server busy: no database connection came free in {queue_timeout:g} s",
                               hint="retry after the Retry-After seconds", headers=RETRY_AFTER) from None
            raise ApiError(503, "database unavailable", hint=str(e).splitlines()[0][:200],
                           headers=RETRY_AFTER) from None
        held += 1
        try:
            async with conn:  # commit, or roll back on an error
                yield conn
        finally:
            held -= 1
            await pool.putconn(conn)

    app.add_middleware(Gate, keys=keys, turn=for_role, max_body=max_body, max_document=max_document,
                       max_upload=max_upload, max_containers=max_containers)

    # the request's role, and its statement timeout (never above the connection's own)
    prelude = ("SET LOCAL ROLE {}; SELECT set_config('statement_timeout', CASE WHEN setting::bigint = 0 "
               "OR setting::bigint > %d THEN '%d' ELSE setting END, true) FROM pg_settings "
               "WHERE name = 'statement_timeout'" % (timeout_ms, timeout_ms))

    async def statement(request: Request, role: str, query: str, params: tuple) -> list[dict]:
        try:
            async with connection(request) as conn:   # (the role's turn: Gate)
                await conn.execute(sql.SQL(prelude).format(sql.Identifier(role)))
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(query, params)
                return await cur.fetchall()
        except UnicodeEncodeError:
            raise ApiError(400, "text is not valid unicode (lone surrogate)", "22021") from None
        except psycopg.Error as e:
            raise database_error(e) from None

    async def run(request: Request, role: str, query: str, params: tuple) -> list[dict]:
        """The request's statement, cancelled in the database if its client goes away
        first (psycopg cancels the query of a task cancelled while it waits for it): no
        one would read its answer, and it would hold a connection until it ended."""
        try:
            return await while_client_there(request, statement(request, role, query, params))
        except ClientLeft:
            raise ApiError(499, "the client closed the connection; its statement was cancelled", "57014") from None

    async def parse_while_there(request: Request, role: str, raw: bytes) -> tuple | None:
        """A JSON /ingest body parsed in its turn (one role's at a time, PARSERS at once,
        off the event loop: what parsing holds is bounded), or None if its client goes away
        first: a client that sent its body and left had it parsed all the same, after its
        turn, and a flood of them kept the server parsing after it ended (review 52). A
        parse already running goes on in its thread (bounded by _PARSING), unawaited."""
        async def in_turn():
            async with parsing_for[role], parsing:
                return await asyncio.get_running_loop().run_in_executor(_PARSE_THREADS, ingest_arguments, raw)

        try:
            return await while_client_there(request, in_turn())
        except ClientLeft:
            return None

    async def ask_sql(request: Request, role: str, question: str, k: int, rerank: str | None = None,
                      rerank_k: int = 30) -> dict:
        rows = await run(request, role, "SELECT rag.ask(%s, %s, rerank => %s, rerank_k => %s) AS out",
                         (question, k, rerank, rerank_k))
        return rows[0]["out"]

    async def database_answers() -> Health | ApiError:
        """SELECT 1 on a connection of its own, within HEALTH_TIMEOUT seconds: a pool that
        the tenants keep busy is not a database that is down."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                if health["conn"] is None or health["conn"].closed:
                    health["conn"] = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)
                await health["conn"].execute("SELECT 1")
            return Health(status="ok", database="ok")
        except (psycopg.Error, TimeoutError) as e:
            stuck, health["conn"] = health["conn"], None
            if stuck is not None:   # closed in the background (not waited for), kept till then
                health["closing"] = asyncio.get_running_loop().create_task(stuck.close())
            if isinstance(e, TimeoutError):
                return ApiError(503, "database unavailable", hint=f"no answer in {HEALTH_TIMEOUT:g} s",
                                headers=RETRY_AFTER)
            return ApiError(503, "database unavailable", e.sqlstate, headers=RETRY_AFTER)

    async def check_health() -> None:
        """/healthz's check: its outcome, and when it came."""
        try:
            out = await database_answers()
        except Exception as e:   # (an outcome all the same: the probes must not wait for ever)
            log.warning("the health check failed: %r", e)
            out = ApiError(503, "database unavailable", hint=f"the check failed: {type(e).__name__}",
                           headers=RETRY_AFTER)
        health["out"], health["at"] = out, time.monotonic()

    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorOut}})
    async def healthz():
        # one check at a time, in a task of its own, its outcome kept for a second, whatever
        # the number of probes (no key is needed); a probe gets the last outcome at once and
        # waits only for the first check, with no outcome yet. Probes that waited for a hung
        # database's check were requests in progress, which no newcomer may take the place
        # of: 200 of them had every other client answered 503 (review 52, finding 3); and
        # behind a lock, the probes queued at the first check each started the next one in
        # turn, so it lasted as long as they came (review 52b, finding 5).
        task = health["task"]
        if (task is None or task.done()) and time.monotonic() - health["at"] >= 1.0:
            task = health["task"] = asyncio.ensure_future(check_health())
        if health["out"] is None:
            await asyncio.shield(task)
        out = health["out"]
        if isinstance(out, ApiError):
            raise out
        return out

    # rerank is in the answer only when a reranker was asked for (the seed's shape otherwise)
    @app.post("/ask", response_model=AskOut, response_model_exclude_unset=True, responses=ERRORS)
    async def ask(payload: AskIn, request: Request, role: str = Depends(role_of)):
        return await ask_sql(request, role, payload.question, payload.k, payload.rerank, payload.rerank_k)

    @app.post("/ask/stream", responses=ERRORS | {200: {"content": {"text/event-stream": {}}}})
    async def ask_stream(payload: AskIn, request: Request, role: str = Depends(role_of)):
        out = await ask_sql(request, role, payload.question, payload.k, payload.rerank,
                            payload.rerank_k)  # errors before the stream starts

        async def events():
            # the answer in pieces (up to each citation marker), then the citations, then done
            for piece in answer_pieces(out["answer"]):
                yield f"event: answer\ndata: {json.dumps({'text': piece})}\n\n"
            yield f"event: citations\ndata: {json.dumps(out['citations'])}\n\n"
            yield "event: done\ndata: {}\n\n"
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/search", response_model=SearchOut, responses=ERRORS)
    async def search(payload: SearchIn, request: Request, role: str = Depends(role_of)):
        weights = {w: getattr(payload, w) for w in WEIGHTS if getattr(payload, w) is not None}
        rows = await run(request, role, """
            SELECT chunk_id, document_id, ord, content, score, vector_rank, lexical_rank, rerank_rank, heading, page, url
            FROM rag.search(%s, %s, %s, %s::jsonb, fusion => %s, rerank => %s, rerank_k => %s""" +
            "".join(f", {w} => %s" for w in weights) + ")",   # names from WEIGHTS only
            (payload.query, payload.k, payload.mode,
             json.dumps(payload.filter) if payload.filter is not None else None,
             payload.fusion, payload.rerank, payload.rerank_k, *weights.values()))
        return SearchOut(results=rows)

    @app.post("/ingest", response_model=IngestOut, openapi_extra=INGEST_BODY, responses={
        **ERRORS, 422: {"description": "Validation Error",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}})
    async def ingest(request: Request, role: str = Depends(role_of)):
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            # before the file is read: may the role ingest files, and how large (a reader's
            # key had the server read 99 MB, to be refused then: review 47)
            # (statement, not run: the body is not read yet, and run's watch would read it)
            may = (await statement(request, role, UPLOAD_CHECK, ()))[0]
            if not may["ingest"]:
                raise ApiError(403, "permission denied for function rag.ingest_file", "42501",
                               hint="the key's role needs rag_writer")
            f = await file_upload(request, may["most"])
            # (%b: the bytes go as they are, not as hex text twice their size)
            rows = await run(request, role, "SELECT rag.ingest_file(%b, %s, %s, %s, %s, %s::jsonb) AS id",
                             (f.data, f.filename, f.source, f.title, f.url, json.dumps(f.metadata)))
            return IngestOut(document_id=rows[0]["id"])
        try:
            raw = await request.body()
        except ClientDisconnect:   # (gone: nothing to answer; two tracebacks each before, review 51c)
            return Response(status_code=499)
        arguments = await parse_while_there(request, role, raw)
        if arguments is None:   # (gone: nothing to answer)
            return Response(status_code=499)
        rows = await run(request, role, "SELECT rag.ingest(%s, %s, %s, %s, %s::jsonb) AS id", arguments)
        return IngestOut(document_id=rows[0]["id"])

    @app.post("/chat", response_model=ChatOut, responses=ERRORS)
    async def chat(payload: ChatIn, request: Request, role: str = Depends(role_of)):
        query = rewrite_follow_up(payload.messages)
        out = await ask_sql(request, role, query, payload.k)
        return ChatOut(answer=out["answer"], citations=out["citations"], rewritten_query=query)

    return app


# --- the server: uvicorn, with a deadline on reading each request ---------------------------

READING = (h11.IDLE, h11.SEND_BODY)  # the client's state while its request is on the way
MAX_CONNECTIONS = 1000          # open at once, server-wide (`--max-connections`)
MAX_CLIENT_CONNECTIONS = 100    # open at once from one client address (`--max-connections-per-client`)
LOGGED_EVERY = 10.0             # seconds: refusals and repeated warnings are logged as counts
EVICTION_SAMPLE = 16            # connections that waited longest, looked at for one to close
SEND_BUFFER = 256 * 1024        # bytes: a connection's kernel send buffer (Linux gives twice this; `--send-buffer`)
MAX_SEND_BUFFER = 1 << 30       # (the kernel takes an int, and caps it at net.core.wmem_max)
PIPELINED = 4                   # requests in a row a connection may have waiting when the one before is answered
LINGER = 1.0                    # seconds a closed connection reads and drops what its client still sends
LINGERING = 64                  # connections doing so at once, server-wide (past it: reset at once)
LINGERING_PER_CLIENT = 8        # of those, from one client
LINGER_READ = 64 * 1024         # bytes dropped so, at most (then reset)
ACCESS_LOG_PER_CLIENT = 100     # access log lines of one client every LOGGED_EVERY seconds (`--access-log-per-client`)
ACCESS_LOG_TOTAL = 1000         # access log lines in all every LOGGED_EVERY seconds (`--access-log-lines`)
ACCESS_LOG_FIRST = 10           # past the total, a client's first lines still logged (up to the total again)
LOGGED_TARGET = 200             # characters of a request's target in its access log line (the API's are short)
LOGGED_METHOD = 20              # ... and of its method


def _refusal(status: str, error: str) -> bytes:
    """A whole HTTP/1.1 response sent to a connection refused for its count, before it has
    said anything (the API's ErrorOut and Retry-After; the connection closes after it)."""
    body = json.dumps(ErrorOut(error=error, hint="retry after the Retry-After seconds")
                      .model_dump(exclude_none=True)).encode()
    headers = "".join(f"{k}: {v}\r\n" for k, v in RETRY_AFTER.items())
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{headers}Connection: close\r\n\r\n").encode() + body


def client_of(client: tuple | None) -> str:
    """The "client" a connection counts for: its IPv4 address (an IPv4-mapped IPv6 one as
    IPv4), or its IPv6 address's /64, which one host usually holds whole (each address its
    own client let one host pass the cap per client: review 51, finding 4). A Unix
    socket's peers share ""."""
    if not client:
        return ""
    try:
        address = ipaddress.ip_address(client[0].split("%", 1)[0])
    except ValueError:
        return client[0]
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _count_down(counts: dict[str, int], key: str) -> None:
    """One fewer for key; its entry goes at 0 (so the dict holds only keys counted)."""
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class ConnectionCaps:
    """How many connections are open, server-wide and per client (client_of), and whether
    one more may be: 21,000 idle sockets had filled the process's file descriptors (the
    accept loop then logged 87,000 "Too many open files" lines in 40 s, and other clients
    waited up to 4.9 s: review 47, finding 6).

    A connection past its client's cap is answered 429 at once and closed, unread. At the
    server's cap, a new connection takes the place of one that waits (silent since it
    connected, its request's head still arriving, idle between requests, or its response
    not taken by the client), which is closed: of those that have waited longest, the
    one whose client holds the most places (_victim). Idle sockets from a few addresses
    had held all 1,000 places and every other client got 503 (review 51, finding 3);
    only when every connection has a request in progress is the newcomer answered 503.
    A connection whose unsent bytes (its buffer and the kernel's) do not change for
    `write_timeout` seconds (a client that stops reading) is closed by a sweep once a
    second. Refusals and evictions are logged as one count every `log_every` seconds.
    `per_client` 0: no cap per client (behind a proxy, whose address every client has).
    Used from the event loop's thread only."""

    def __init__(self, total: int = MAX_CONNECTIONS, per_client: int = MAX_CLIENT_CONNECTIONS,
                 write_timeout: float = 15.0):
        if total < 1 or per_client < 0 or write_timeout <= 0:
            raise ValueError(f"connection caps: total {total} must be at least 1, per client {per_client} at "
                             f"least 0, write_timeout {write_timeout} above 0")
        self.total, self.per_client, self.write_timeout = total, per_client, write_timeout
        self.by_client: dict[str, int] = {}
        self.members: dict[DeadlineH11Protocol, None] = {}   # every connection counted in
        self.waiting: dict[DeadlineH11Protocol, None] = {}   # those without a request in progress, oldest first
        self.fresh: dict[DeadlineH11Protocol, None] = {}     # of those, the ones that never sent a whole head
        self.stalled: dict[DeadlineH11Protocol, tuple[int, float]] = {}   # unsent bytes, since when
        self.counts = {"server": 0, "client": 0, "evicted": 0, "stalled": 0}   # since the last log line
        self.log_every = LOGGED_EVERY
        self.logged_at = -LOGGED_EVERY
        self.flush_due = False
        self.sweeping: asyncio.TimerHandle | None = None
        self.lingering = 0   # connections closing gently (DeadlineH11Protocol.close_gently), at most LINGERING
        self.lingering_by: dict[str, int] = {}   # client -> of those, its (at most LINGERING_PER_CLIENT)

    @property
    def open(self) -> int:
        return len(self.members)

    def admit(self, conn: DeadlineH11Protocol) -> bytes | None:
        """None, counting the connection in (perhaps in the place of one that waits: see the
        class); or the refusal to send it."""
        who = client_of(conn.client)
        if self.per_client and self.by_client.get(who, 0) >= self.per_client:
            return self._refuse("client", "429 Too Many Requests",
                                f"too many connections from this address: {self.per_client} are open")
        if len(self.members) >= self.total:
            if not self.waiting:
                return self._refuse("server", "503 Service Unavailable",
                                    f"server busy: {self.total} connections are open")
            self.evict(self._victim(), "evicted")
        conn.counted_as = who
        self.members[conn] = None
        self.waiting[conn] = None
        self.fresh[conn] = None
        self.by_client[who] = self.by_client.get(who, 0) + 1
        if self.sweeping is None:
            self.sweeping = asyncio.get_running_loop().call_later(1.0, self._sweep)
        return None

    def busy(self, conn: DeadlineH11Protocol, busy: bool) -> None:
        """The connection has a request in progress (it is not evicted), or waits again."""
        if conn not in self.members:
            return
        self.waiting.pop(conn, None)
        if busy:
            self.fresh.pop(conn, None)
        else:
            self.waiting[conn] = None   # (last: it waits from now)

    def release(self, conn: DeadlineH11Protocol) -> None:
        """Its place freed (once: a connection evicted is released again when it is lost)."""
        if conn not in self.members:
            return
        del self.members[conn]
        self.waiting.pop(conn, None)
        self.fresh.pop(conn, None)
        self.stalled.pop(conn, None)
        _count_down(self.by_client, conn.counted_as)   # (one entry per client with a connection open: bounded)

    def take_linger(self, who: str) -> bool:
        """One of the LINGERING places for a refused connection of this client to close
        gently in, if one is free and the client holds fewer than LINGERING_PER_CLIENT
        (one client's refused connections held every place: review 53b)."""
        if self.lingering >= LINGERING or self.lingering_by.get(who, 0) >= LINGERING_PER_CLIENT:
            return False
        self.lingering += 1
        self.lingering_by[who] = self.lingering_by.get(who, 0) + 1
        return True

    def end_linger(self, who: str) -> None:
        """The place take_linger gave is free again (the connection is gone)."""
        self.lingering -= 1
        _count_down(self.lingering_by, who)

    def _victim(self) -> DeadlineH11Protocol:
        """Of the EVICTION_SAMPLE connections that never sent a whole request head and have
        waited longest, then of those of any that waits, leaving out responses that drain
        and connections whose request the kernel holds unread: the one whose client holds
        the most places (the oldest of those). If every one is left out, the one whose client
        holds most of both samples. A flood's own sockets go before a client's kept-alive connection,
        a response that is draining, or a fresh connection whose request is on the way
        (oldest first, a flood of 2,900 evictions a second closed a client's kept-alive
        connection before each reuse, and a connection whose head came 100 ms after it:
        review 51b, findings 4 and 5; a flood of one socket per address made every count
        equal: review 51c, finding 1). Linear in the sample, not in the connections."""
        count = self.by_client.__getitem__
        fresh = list(itertools.islice(self.fresh, EVICTION_SAMPLE))
        waiting = list(itertools.islice(self.waiting, EVICTION_SAMPLE))
        # (a response that drains, however slowly, goes last: one paused at the 64 KiB mark
        # waited from its first write, and downloads at full speed were cut: review 51c; and
        # a connection whose bytes the kernel holds unread: its request came, but the event
        # loop, behind, has not read it; under a flood, a client's fresh connections were
        # reset with their request sent, 8 of 10: review 52, finding 2)
        for sample in (fresh, waiting):
            # in the order they would go (sorted keeps the oldest first of equals), each looked
            # at only until one may go: two system calls per look (review 52b, finding 3)
            for c in sorted(sample, key=lambda c: -count(c.counted_as)):
                if not self.draining(c) and not c.unread():
                    return c
        # every one drains or has its request on the way: the one whose client holds most
        # (a flood's draining sockets before a client's one fresh connection: review 52)
        return max(dict.fromkeys(fresh + waiting), key=lambda c: count(c.counted_as))

    def draining(self, conn: DeadlineH11Protocol) -> bool:
        """Whether the connection's paused response has moved since it paused, or since the
        sweep last looked."""
        if not conn.writing_paused:
            return False
        before, _ = self.stalled.get(conn, (conn.unsent_at_pause, 0.0))
        return conn.unsent() != before

    def evict(self, conn: DeadlineH11Protocol, why: str) -> None:
        """Closed now, its unsent bytes dropped (the kernel's too: SO_LINGER 0, else each
        closed socket kept up to its send buffer until the client went: review 51b,
        finding 2), and its place freed."""
        self.release(conn)
        self._count(why)
        conn.reset()

    def _sweep(self) -> None:
        """Once a second: close connections whose unsent bytes have not changed for
        write_timeout seconds (nothing else bounds a response a client never reads, and a
        close waits for it to drain: review 51, finding 3)."""
        now = time.monotonic()
        for conn in list(self.members):
            unsent = conn.unsent()
            if not unsent:
                self.stalled.pop(conn, None)
                continue
            before, since = self.stalled.get(conn, (None, now))
            if unsent != before:   # (any change is progress: a stream's buffer swings, review 51b, finding 6)
                self.stalled[conn] = (unsent, now)
            elif now - since >= self.write_timeout:
                self.evict(conn, "stalled")
        self.sweeping = asyncio.get_running_loop().call_later(1.0, self._sweep) if self.members else None

    def _refuse(self, kind: str, status: str, error: str) -> bytes:
        self._count(kind)
        return _refusal(status, error)

    def _count(self, kind: str) -> None:
        self.counts[kind] += 1
        wait = self.logged_at + self.log_every - time.monotonic()
        if wait <= 0:
            self._log()
        elif not self.flush_due:   # the count since the last line is logged when its time comes
            self.flush_due = True
            asyncio.get_running_loop().call_later(wait, self._log)

    def _log(self) -> None:
        c = self.counts
        log.warning("connections since the last such line: %d refused past the server's cap of %d, %d refused past "
                    "the cap of %d per client, %d closed to make room, %d closed for not reading their response "
                    "(%d open now)", c["server"], self.total, c["client"], self.per_client, c["evicted"],
                    c["stalled"], self.open)
        self.logged_at, self.flush_due = time.monotonic(), False
        self.counts = dict.fromkeys(c, 0)


class RepeatedWarnings(logging.Filter):
    """Lets the first of each of these warnings through every `every` seconds, with the
    count of those held back since: a client could write one per request ("Invalid HTTP
    request received.", ~1,900 a second from one address), and a flood of connections
    one per failed accept (175,000 tracebacks in 50 s: review 51, findings 2 and 5)."""

    def __init__(self, prefixes: tuple[str, ...], every: float = LOGGED_EVERY):
        super().__init__()
        self.prefixes, self.every = prefixes, every
        self.seen: dict[str, tuple[float, int]] = {}   # prefix -> (last let through, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        prefix = next((p for p in self.prefixes if text.startswith(p)), None)
        if prefix is None:
            return True
        now = time.monotonic()
        at, held = self.seen.get(prefix, (-self.every, 0))
        if now - at < self.every:
            self.seen[prefix] = (at, held + 1)
            return False
        self.seen[prefix] = (now, 0)
        if held:
            record.msg, record.args = f"{text} ({held} more like it in the last {now - at:.0f} s)", ()
        return True


def shortened(text, most: int):
    """text, or its first `most` characters and its length."""
    return f"{text[:most]}... ({len(text):,} characters)" if isinstance(text, str) and len(text) > most else text


class AccessLogBudget(logging.Filter):
    """uvicorn's access log, one line per request, within a budget: at most `per_client`
    lines for one client (client_of) and `total` in all in each `every` seconds (0: no
    limit). Past the total, a client's `first` lines (ACCESS_LOG_FIRST, or per_client if
    lower) are still logged, up to `total` such lines: a flood from ten addresses used up
    the total and hid every other client (review 52b, finding 2). The requests past it are
    counted, and written as one line of ragpg.serve when the period ends: how many, from
    how many clients, which client sent most, and by status. A client pipelining requests
    it never reads had the server write ~660 lines a second (39,789 in 60 s: review 51b,
    finding 7), and every IPv6 /64 or IPv4 address is a client of its own, hence the
    total. At most 2 x `total` lines a period, each with at most LOGGED_TARGET characters
    of its request's target and LOGGED_METHOD of its method (a 16 KiB one made 1,000 lines 16 MB:
    review 53, finding 3);
    memory: at most 2 x `total` clients are counted by name, the others together."""

    def __init__(self, per_client: int, total: int, every: float = LOGGED_EVERY):
        super().__init__()
        self.per_client, self.total, self.every = per_client, total, every
        self.first = min(ACCESS_LOG_FIRST, per_client or ACCESS_LOG_FIRST)
        self.started = time.monotonic()
        self.logged: collections.Counter[str] = collections.Counter()   # client -> lines let through
        self.let = 0     # lines let through within the total
        self.firsts = 0  # lines let through past the total, as a client's first
        self.held: collections.Counter[str] = collections.Counter()     # client -> lines held (named ones)
        self.held_unnamed = 0
        self.held_status: collections.Counter[int] = collections.Counter()
        self.flush: asyncio.TimerHandle | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            address, method, target, version, status = record.args
            host = address.rsplit(":", 1)[0] if address else ""
        except (TypeError, ValueError):
            return True   # (not uvicorn's line)
        # (h11 takes any token as the method: 16,000 characters of one were logged whole, review 53b)
        record.args = (address, shortened(method, LOGGED_METHOD), shortened(target, LOGGED_TARGET), version, status)
        if not (self.per_client or self.total):
            return True
        now = time.monotonic()
        if now - self.started >= self.every:
            self.summarise(now)
        client = client_of((host, 0)) if host else ""
        if self.per_client and self.logged[client] >= self.per_client:
            return self.hold(client, status, now)
        if self.total and self.let >= self.total:
            if self.logged[client] >= self.first or self.firsts >= self.total:
                return self.hold(client, status, now)
            self.firsts += 1
        else:
            self.let += 1
        self.logged[client] += 1
        return True

    def hold(self, client: str, status: int, now: float) -> bool:
        """Counts a request whose line is not written (False: the filter's answer)."""
        if client in self.logged:
            self.held[client] += 1
        else:
            self.held_unnamed += 1
        self.held_status[status] += 1
        if self.flush is None:
            with contextlib.suppress(RuntimeError):   # (no loop: the next line writes it)
                self.flush = asyncio.get_running_loop().call_later(
                    self.started + self.every - now, lambda: self.summarise(time.monotonic()))
        return False

    def summarise(self, now: float) -> None:
        """The line for the period that ended (if any request was held), and a new period."""
        if self.flush is not None:
            self.flush.cancel()
            self.flush = None
        held = sum(self.held.values()) + self.held_unnamed
        if held:
            # (named: the clients that had lines through in the period; the others, who may
            # have sent more, are counted together: review 52b, finding 2)
            top = self.held.most_common(1)
            log.warning("access log: %d requests not logged in the last %.0f s (past %s lines per client or %s in "
                        "all%s), from %d clients%s%s; by status: %s", held, now - self.started,
                        self.per_client or "any", self.total or "any",
                        f" and then a client's first {self.first}" if self.total else "",
                        len(self.held) + (self.held_unnamed > 0),
                        " or more" if self.held_unnamed else "",   # (those not named, counted as one)
                        (f", most from {top[0][0]} ({top[0][1]}) of those logged before" if self.held_unnamed
                         else f", most from {top[0][0]} ({top[0][1]})") if top else "",
                        ", ".join(f"{s} x {n}" for s, n in sorted(self.held_status.items())))
        self.started, self.let, self.firsts = now, 0, 0
        self.logged.clear()
        self.held.clear()
        self.held_unnamed = 0
        self.held_status.clear()


QUIETED = {"uvicorn.error": ("Invalid HTTP request received.",),
           "asyncio": ("socket.accept() out of system resource",)}


def quiet_repeated_warnings() -> None:
    """RepeatedWarnings on the loggers that a client can make write one line per request
    or connection (once per process)."""
    for name, prefixes in QUIETED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatedWarnings) for f in logger.filters):
            logger.addFilter(RepeatedWarnings(prefixes))


def budget_access_log(per_client: int, total: int) -> None:
    """An AccessLogBudget on uvicorn's access log, in place of any earlier one (the logger
    is the process's: the last server configured sets it). Its count of the period that
    has not ended is written when the process exits (review 52b, finding 4)."""
    logger = logging.getLogger("uvicorn.access")
    for f in [f for f in logger.filters if isinstance(f, AccessLogBudget)]:
        logger.removeFilter(f)
    logger.addFilter(AccessLogBudget(per_client, total))   # (with no limits, it still shortens targets)
    if per_client or total:
        if not getattr(budget_access_log, "at_exit", False):
            atexit.register(_summarise_access_log)   # (before logging's own: atexit runs the last first)
            budget_access_log.at_exit = True


def _summarise_access_log() -> None:
    for f in logging.getLogger("uvicorn.access").filters:
        if isinstance(f, AccessLogBudget):
            f.summarise(time.monotonic())


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) with a deadline on reading each request, caps on
    connections (ConnectionCaps), and no protocol upgrade.

    uvicorn closes a connection idle between requests (timeout_keep_alive: armed when a
    response is sent, cancelled by the next byte) but bounds nothing else: a client that
    connects and says nothing, or sends its headers or body a byte at a time, holds its
    socket for ever. Here a request's headers and body must all have arrived
    `read_timeout` seconds after the connection opened, or after the request's first
    byte on a kept-alive connection; else the connection is closed. The API has no
    WebSocket: a request asking to upgrade is served as plain HTTP (uvicorn handed an
    upgraded socket to another protocol, whose end this one never saw: with a WebSocket
    library installed, 100 upgrades held a client's places for good, review 51, finding 1).
    At most PIPELINED requests in a row are answered that were already waiting when the
    one before was answered; the last with Connection: close. Refused connections, and
    those closed after their last pipelined answer, close gently (close_gently)."""

    read_timeout = 15.0
    _deadline: asyncio.TimerHandle | None = None
    caps: ConnectionCaps   # one per server (uvicorn_config)
    send_buffer = SEND_BUFFER   # 0: the kernel's (it grows)
    counted_as: str | None = None   # the client it counts for, once admitted
    writing_paused = False
    unsent_at_pause = 0
    pipelined = 0   # requests in a row that were waiting when the one before was answered
    linger: asyncio.TimerHandle | None = None   # while closing gently: its next look (close_gently)
    gentle = False   # closing gently (close_gently)
    lingering_as: str | None = None   # ... refused: the client whose place to linger it took
    dropped = 0            # ... the bytes it dropped,
    linger_started = 0.0   # since when,
    linger_unsent = 0      # and its unsent bytes at the last look

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        refusal = self.caps.admit(self)
        if refusal is not None:   # answered and closed
            transport.write(refusal)
            self.close_gently()
            return
        self._start_deadline()   # (first: nothing below may leave a connection without it, review 52)
        # a fixed send buffer: the kernel's own grew to ~2.8 MB a connection, so a client
        # that pipelined requests and never read had ~190 answers written for it, held
        # that memory, and looked busy, not stalled (review 51b, finding 1)
        if self.send_buffer:
            with contextlib.suppress(OSError, AttributeError, OverflowError, TypeError):
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)

    def unsent(self) -> int:
        """Bytes written for the client that it has not taken: the transport's buffer and
        the kernel's send queue (SIOCOUTQ)."""
        queued = 0
        with contextlib.suppress(OSError, AttributeError, ValueError):
            fd = self.transport.get_extra_info("socket").fileno()
            if fd >= 0:
                queued = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        return self.transport.get_write_buffer_size() + queued

    def unread(self) -> int:
        """Bytes the client sent that the kernel holds and this protocol has not read yet
        (FIONREAD)."""
        with contextlib.suppress(OSError, AttributeError, ValueError):
            fd = self.transport.get_extra_info("socket").fileno()
            if fd >= 0:
                return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        return 0

    def pause_writing(self) -> None:
        super().pause_writing()
        self.writing_paused, self.unsent_at_pause = True, self.unsent()
        self.note_busy()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.writing_paused = False
        self.note_busy()

    def data_received(self, data: bytes) -> None:
        if self.gentle or self not in self.caps.members:   # closing gently, refused or evicted: dropped
            if self.gentle:
                self.dropped += len(data)
                if self.dropped > LINGER_READ:   # (reading a flood to drop it: 40 GB in 10 s, review 53b)
                    self.reset()
            return
        if self._deadline is None and self.conn.their_state in READING:
            self._start_deadline()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        self.note_busy()
        if self.conn.their_state not in READING:  # the whole request is in (or the connection is over)
            self._stop_deadline()

    def _should_upgrade(self) -> bool:
        return False   # (no WebSocket, and no warning per request that asks)

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()  # may start a pipelined request received in part
        if self.cycle is not answered and not self.transport.is_closing():
            # (a pipelined request, started at once: a connection that pipelines and never
            # reads is busy until its answers fill the kernel's buffers, its own and the
            # client's, ~6,000 small ones; 220 such connections held every place for
            # minutes, review 53, finding 1; at 31 in a row, read, they still held them,
            # review 53b. The PIPELINED-th such request is its last, the PIPELINED + 1-th
            # answer in a row: the client sends the rest again on a new connection, as
            # HTTP/1.1 clients do)
            self.pipelined += 1
            if self.pipelined >= PIPELINED:
                self.cycle.scope["headers"].append((b"connection", b"close"))   # (uvicorn says so in the answer)
                self.cycle.transport = GentleClose(self)   # (and closes: gently)
        else:
            self.pipelined = 0
        self.note_busy()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._start_deadline()  # (headers in part: uvicorn's keep-alive timer still runs)

    def close_gently(self, keep_place: bool = False) -> None:
        """Closes the connection once what was written is sent, reading and dropping what
        the client still sends until it closes too, for LINGER seconds at most: a socket
        closed with bytes of its client unread is reset, and the reset makes the client's
        kernel drop what it received and its program has not read yet. A refusal sent so,
        at once, to a client that had sent its request was lost 49 times in 50 (review 53,
        finding 2). A refused connection takes one of LINGERING places (past them, or past
        LINGERING_PER_CLIENT of its client's, it is reset at once); one closed after its
        last pipelined answer keeps its own place (`keep_place`) until it is gone: it may
        be closed to make room, and is reset if its answer stalls (slow readers held every
        refusal's place, review 53c)."""
        if not keep_place:
            self.caps.release(self)   # (its place is free)
        self._stop_deadline()
        if self.transport.is_closing() or self.gentle:
            return
        if not keep_place:
            who = client_of(self.client)
            if not self.caps.take_linger(who):
                self.reset()
                return
            self.lingering_as = who
        self.gentle, self.dropped, self.linger_started = True, 0, time.monotonic()
        self.linger_unsent = self.unsent()
        self.linger = self.loop.call_later(LINGER, self._linger_look)
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            self.transport.write_eof()   # (after what is written)
        self.transport.resume_reading()

    def timeout_keep_alive_handler(self) -> None:
        if not self.gentle:   # (its close would end a gentle one, unreset: review 53c)
            super().timeout_keep_alive_handler()

    def _linger_look(self) -> None:
        """Every LINGER seconds while closing gently: another LINGER while the client takes
        what is left of the answer (its unsent bytes fell since the last look; a slow
        client lost the end of its last one, review 53b), up to read_timeout in all; else
        reset."""
        unsent = self.unsent()
        if unsent < self.linger_unsent and time.monotonic() - self.linger_started < self.read_timeout:
            self.linger_unsent = unsent
            self.linger = self.loop.call_later(LINGER, self._linger_look)
            return
        self.reset()

    def reset(self) -> None:
        """Closed now, what is unsent dropped, the kernel's too (SO_LINGER 0: else the kernel
        keeps the socket, and up to its send buffer, until the client takes it: 400 of
        them held 165 MB that no cap counted, review 53b)."""
        with contextlib.suppress(OSError, AttributeError):
            self.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                               struct.pack("ii", 1, 0))
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        self.caps.release(self)
        if self.linger is not None:
            self.linger.cancel()
        if self.lingering_as is not None:
            self.caps.end_linger(self.lingering_as)
            self.lingering_as = None
        super().connection_lost(exc)

    def note_busy(self) -> None:
        # (a paused response waits for the client: the connection may be closed to make
        # room, after those that never sent a request and those whose response still
        # drains: ConnectionCaps._victim)
        self.caps.busy(self, self.cycle is not None and not self.cycle.response_complete
                       and not self.writing_paused)

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(self.read_timeout, self._deadline_passed)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.conn.their_state in READING and not self.transport.is_closing():
            log.info("closing %s: no whole request within %g s", self.client, self.read_timeout)
            self.transport.close()


class GentleClose:
    """A connection's transport whose close() is DeadlineH11Protocol.close_gently (given to
    the request cycle that answers a connection's last pipelined request)."""

    def __init__(self, protocol: DeadlineH11Protocol):
        self._protocol, self._transport = protocol, protocol.transport

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_gently(keep_place=True)


def uvicorn_config(app, host: str, port: int, read_timeout: float = 15.0, keep_alive: float = 5.0,
                   max_connections: int = MAX_CONNECTIONS, max_per_client: int = MAX_CLIENT_CONNECTIONS,
                   backlog: int | None = None, send_buffer: int = SEND_BUFFER,
                   access_log_per_client: int = ACCESS_LOG_PER_CLIENT, access_log_total: int = ACCESS_LOG_TOTAL,
                   **kwargs):
    """uvicorn's settings for `ragpg serve` (and its tests): h11 with the read deadline above,
    idle connections closed after `keep_alive` seconds, request headers at most 16 KiB, at
    most `max_connections` open and `max_per_client` from one client (ConnectionCaps; a
    response must drain within `read_timeout` too), no WebSocket, a listen backlog of
    BACKLOG, warnings a client can repeat logged as counts (RepeatedWarnings), and the
    access log within its budget (AccessLogBudget: per client and in all, every 10 s)."""
    import uvicorn

    protocol = type("DeadlineH11Protocol", (DeadlineH11Protocol,),
                    {"read_timeout": read_timeout, "send_buffer": send_buffer,
                     "caps": ConnectionCaps(max_connections, max_per_client, write_timeout=read_timeout)})
    config = uvicorn.Config(app, host=host, port=port, http=protocol, ws="none", timeout_keep_alive=keep_alive,
                            h11_max_incomplete_event_size=16 * 1024, backlog=backlog or BACKLOG, **kwargs)
    quiet_repeated_warnings()   # (after uvicorn.Config, which configures its loggers)
    budget_access_log(access_log_per_client, access_log_total)
    return config


BACKLOG = 256   # connections the kernel queues, and the most the event loop accepts at once
# (uvicorn's 2,048: a flood's refused sockets, each open until the loop's next turn, took
# up to twice that many files at once, past a limit that allowed one backlog: review 51)
ACCEPTED_AT_ONCE = 3   # backlogs' worth of sockets the open-file limit holds beside the connections
SPARE_DESCRIPTORS = 64   # the listening socket, logs, the health connection, what libraries open


def fit_descriptors(max_connections: int, pool_size: int, backlog: int = BACKLOG) -> tuple[int, int]:
    """(max_connections, backlog) that fit the process's open-file limit: the event loop
    accepts up to `backlog` sockets at a time, and a refused one holds its file until the
    loop's next turn, so the limit must hold the open connections, ACCEPTED_AT_ONCE
    backlogs, LINGERING connections closing gently, the pool's connections and some spare. The soft limit is raised towards the
    hard one as needed; where even that is too low, the backlog (to a ninth of the files)
    and then the cap are lowered, with a warning naming what was (SystemExit if nothing
    fits)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = pool_size + SPARE_DESCRIPTORS + LINGERING
    need = max_connections + ACCEPTED_AT_ONCE * backlog + spare
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_connections, backlog
    fitted_backlog = max(16, min(backlog, (soft - spare) // (3 * ACCEPTED_AT_ONCE)))
    fitted = min(max_connections, soft - spare - ACCEPTED_AT_ONCE * fitted_backlog)
    if fitted < 1:
        raise SystemExit(f"ragpg serve: the open-file limit ({soft}) leaves no room for connections beside "
                         f"{pool_size} database connections; raise it (ulimit -n)")
    log.warning("the open-file limit (%d, hard %s) is too low for %d connections and a backlog of %d: %s; raise it "
                "(ulimit -n) for more", soft, hard, max_connections, backlog,
                ", ".join(x for x in (f"backlog lowered to {fitted_backlog}" if fitted_backlog < backlog else "",
                                      f"connections lowered to {fitted}" if fitted < max_connections else "") if x))
    return fitted, fitted_backlog


def serve(dsn: str, keys: dict[str, str], host: str, port: int, pool_size: int = 10, queue_size: int = 50,
          queue_timeout: float = 10.0, read_timeout: float = 15.0, keep_alive: float = 5.0,
          per_role: int | None = None, statement_timeout: float = 300.0,
          max_connections: int = MAX_CONNECTIONS, max_per_client: int = MAX_CLIENT_CONNECTIONS,
          send_buffer: int = SEND_BUFFER, access_log_per_client: int = ACCESS_LOG_PER_CLIENT,
          access_log_total: int = ACCESS_LOG_TOTAL) -> int:
    import uvicorn

    if not keys:
        raise SystemExit("ragpg serve: no API keys; pass --keys-file FILE (lines: KEY ROLE) or --keys KEY=ROLE")
    if max_connections < 1 or max_per_client < 0 or not 0 <= send_buffer <= MAX_SEND_BUFFER \
            or access_log_per_client < 0 or access_log_total < 0:
        raise SystemExit("ragpg serve: --max-connections must be at least 1, --max-connections-per-client "
                         f"at least 0 (0: no cap per client), --send-buffer from 0 (the kernel's) to "
                         f"{MAX_SEND_BUFFER}, and --access-log-per-client and --access-log-lines at least 0 "
                         "(0: no limit)")
    max_connections, backlog = fit_descriptors(max_connections, pool_size)
    app = create_app(dsn, keys, pool_size=pool_size, queue_size=queue_size, queue_timeout=queue_timeout,
                     per_role=per_role, statement_timeout=statement_timeout)
    uvicorn.Server(uvicorn_config(app, host, port, read_timeout=read_timeout, keep_alive=keep_alive,
                                  max_connections=max_connections, max_per_client=max_per_client,
                                  backlog=backlog, send_buffer=send_buffer, log_level="info",
                                  access_log_per_client=access_log_per_client,
                                  access_log_total=access_log_total)).run()
    return 0
