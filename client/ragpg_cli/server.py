"""HTTP API over the `rag` extension: a thin layer, every answer comes from SQL.

    ragpg serve --dsn "host=... user=rag_api" --keys-file keys.txt

Each request's role (and so its tenant) comes from its API key (`Authorization: Bearer
KEY` or `X-API-Key: KEY`), mapped to a database role in the keys file (`KEY ROLE` per
line); the request runs under `SET LOCAL ROLE <role>` in its own transaction, so
row-level security applies exactly as for a SQL user. The body never names a tenant.

Errors: 400 with the extension's message for bad input (SQLSTATE class 22), 401 without a
valid key, 403 for 42501, 422 for a body that is not valid JSON or lacks fields, 503 when
the database cannot be reached. No stack traces leave the server.
"""
from __future__ import annotations

import json
import logging
import re
from contextlib import asynccontextmanager
from typing import Any, Literal

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, Field

log = logging.getLogger("ragpg.serve")


# --- request and response models (AskOut/Citation keep the seed's fields) ------------------

INT4 = {"ge": -2**31, "le": 2**31 - 1}  # any int4 reaches SQL, which owns the limits (rag.max_k)


class AskIn(BaseModel):
    question: str = Field(..., max_length=100_000)
    k: int = Field(8, **INT4)


class Citation(BaseModel):
    index: int
    document_id: int
    snippet: str
    chunk_id: int | None = None
    source: str | None = None
    title: str | None = None
    url: str | None = None


class AskOut(BaseModel):
    answer: str
    citations: list[Citation]


class SearchIn(BaseModel):
    query: str = Field(..., max_length=100_000)
    k: int = Field(8, **INT4)
    mode: Literal["hybrid", "vector", "lexical"] = "hybrid"
    filter: dict[str, Any] | None = None


class SearchHit(BaseModel):
    chunk_id: int
    document_id: int
    ord: int
    content: str
    score: float
    vector_rank: int | None
    lexical_rank: int | None


class SearchOut(BaseModel):
    results: list[SearchHit]


class IngestIn(BaseModel):
    content: str = Field(..., max_length=100_000_000)
    source: str
    title: str | None = None
    url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


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


ERRORS = {400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 403: {"model": ErrorOut},
          503: {"model": ErrorOut}}


class ApiError(Exception):
    def __init__(self, status: int, error: str, sqlstate: str | None = None, hint: str | None = None):
        self.status, self.body = status, ErrorOut(error=error, sqlstate=sqlstate, hint=hint)


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
    context = [w for w in re.findall(r"[\w-]+", users[-2]) if w.lower() not in _STOP]
    extra = [w for w in context if w.lower() not in {x.lower() for x in words}]
    return f"{question} ({' '.join(extra)})" if extra else question


# --- the app -------------------------------------------------------------------------------

def load_keys(path: str | None, inline: str | None = None) -> dict[str, str]:
    """API key -> database role, from a file of `KEY ROLE` lines and/or 'KEY=ROLE,...'."""
    keys: dict[str, str] = {}
    lines = open(path, encoding="utf-8").read().splitlines() if path else []
    lines += [p.replace("=", " ") for p in (inline or "").split(",") if p.strip()]
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            key, role = line.split()[:2]
            keys[key] = role
    return keys


def create_app(dsn: str, keys: dict[str, str], pool_size: int = 10) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=pool_size, open=False, timeout=10,
                                   kwargs={"autocommit": False, "connect_timeout": 5})
        await pool.open(wait=False)
        app.state.pool = pool
        yield
        await pool.close()

    app = FastAPI(title="ragpg", version="0.2.0", lifespan=lifespan,
                  description="HTTP access to the rag Postgres extension: ask, search, ingest.")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return JSONResponse(status_code=exc.status, content=exc.body.model_dump(exclude_none=True))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):  # never a stack trace to the client
        log.exception("unexpected error")
        return JSONResponse(status_code=500, content={"error": "internal error"})

    def role_of(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        role = keys.get(key)
        if not key or role is None:
            raise ApiError(401, "missing or unknown API key", hint="send Authorization: Bearer <key>")
        return role

    async def run(request: Request, role: str, query: str, params: tuple) -> list[dict]:
        try:
            async with request.app.state.pool.connection() as conn:
                async with conn.transaction():
                    await conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                    cur = conn.cursor(row_factory=dict_row)
                    await cur.execute(query, params)
                    return await cur.fetchall()
        except (PoolTimeout, psycopg.OperationalError) as e:
            raise ApiError(503, "database unavailable", hint=str(e).splitlines()[0][:200]) from None
        except UnicodeEncodeError:
            raise ApiError(400, "text is not valid unicode (lone surrogate)", "22021") from None
        except psycopg.DataError as e:
            if e.sqlstate is None:  # refused by the driver before sending, e.g. a NUL character
                raise ApiError(400, str(e).splitlines()[0], "22021") from None
            raise ApiError(400, e.diag.message_primary or str(e), e.sqlstate, e.diag.message_hint) from None
        except psycopg.Error as e:
            state = e.sqlstate or ""
            message = e.diag.message_primary or str(e).splitlines()[0]
            if state.startswith("22"):
                raise ApiError(400, message, state, e.diag.message_hint) from None
            if state == "42501":
                raise ApiError(403, message, state, e.diag.message_hint) from None
            if state.startswith(("08", "57")):
                raise ApiError(503, "database unavailable", state) from None
            log.error("database error %s: %s", state, message)
            raise ApiError(500, "database error", state) from None

    async def ask_sql(request: Request, role: str, question: str, k: int) -> dict:
        rows = await run(request, role, "SELECT rag.ask(%s, %s) AS out", (question, k))
        return rows[0]["out"]

    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorOut}})
    async def healthz(request: Request):
        try:
            async with request.app.state.pool.connection(timeout=5) as conn:
                await conn.execute("SELECT 1")
        except (PoolTimeout, psycopg.OperationalError):
            raise ApiError(503, "database unavailable") from None
        return Health(status="ok", database="ok")

    @app.post("/ask", response_model=AskOut, responses=ERRORS)
    async def ask(payload: AskIn, request: Request, role: str = Depends(role_of)):
        return await ask_sql(request, role, payload.question, payload.k)

    @app.post("/ask/stream", responses=ERRORS | {200: {"content": {"text/event-stream": {}}}})
    async def ask_stream(payload: AskIn, request: Request, role: str = Depends(role_of)):
        out = await ask_sql(request, role, payload.question, payload.k)  # errors before the stream starts

        async def events():
            # the answer in pieces (sentence by sentence), then the citations, then done
            for piece in re.findall(r".+?(?:\[\d+\]|$)\s*", out["answer"]) or [out["answer"]]:
                if piece:
                    yield f"event: answer\ndata: {json.dumps({'text': piece})}\n\n"
            yield f"event: citations\ndata: {json.dumps(out['citations'])}\n\n"
            yield "event: done\ndata: {}\n\n"
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/search", response_model=SearchOut, responses=ERRORS)
    async def search(payload: SearchIn, request: Request, role: str = Depends(role_of)):
        rows = await run(request, role, """
            SELECT chunk_id, document_id, ord, content, score, vector_rank, lexical_rank
            FROM rag.search(%s, %s, %s, %s::jsonb)""",
            (payload.query, payload.k, payload.mode,
             json.dumps(payload.filter) if payload.filter is not None else None))
        return SearchOut(results=rows)

    @app.post("/ingest", response_model=IngestOut, responses=ERRORS)
    async def ingest(payload: IngestIn, request: Request, role: str = Depends(role_of)):
        rows = await run(request, role, "SELECT rag.ingest(%s, %s, %s, %s, %s::jsonb) AS id",
                         (payload.content, payload.source, payload.title, payload.url,
                          json.dumps(payload.metadata)))
        return IngestOut(document_id=rows[0]["id"])

    @app.post("/chat", response_model=ChatOut, responses=ERRORS)
    async def chat(payload: ChatIn, request: Request, role: str = Depends(role_of)):
        query = rewrite_follow_up(payload.messages)
        out = await ask_sql(request, role, query, payload.k)
        return ChatOut(answer=out["answer"], citations=out["citations"], rewritten_query=query)

    return app


def serve(dsn: str, keys: dict[str, str], host: str, port: int) -> int:
    import uvicorn

    if not keys:
        raise SystemExit("ragpg serve: no API keys; pass --keys-file FILE (lines: KEY ROLE) or --keys KEY=ROLE")
    uvicorn.run(create_app(dsn, keys), host=host, port=port, log_level="info")
    return 0
