"""Remote models behind one interface: any OpenAI-compatible server (stage 3 and 5 of the
data path when a model of rag.models has provider 'openai').

The official `openai` package does the HTTP (its own retries are off); `tenacity` retries
429, 5xx, timeouts and connection errors with exponential backoff and full jitter; any
other 4xx fails at once with an error that says what to fix. Token counts come from the
server's `usage` when it sends them, else from tiktoken (tokens.py).

An error names the model, the server's URL (without credentials or query) and the HTTP
status; of the server's answer it keeps only the message of an OpenAI-style JSON error
(`{"error": {"message": ...}}`), control characters removed, at most 200 characters, else
says "no error message". The rest of the body, the headers, the request and the API key
never appear: the URL may point at an internal service whose error pages say too much.

A server's answer is input like any other (hostile reviews 44 and 44b): the client's
transport (`_bounded_transport`) reads it in pieces and refuses one over MAX_ANSWER_BYTES
(an embeddings answer what its texts' vectors take: `_embeddings_answer_bytes`), a
compressed one (gzip of 1 MB was 1 GB) and redirects. Under it, every socket wait is cut
into slices of interrupts.INTERVAL (`Guarded`): between two, a request made in a worker
thread (rag's calls; a stream's opening) ends once twice rag.provider_timeout_seconds have
passed since it was sent, headers included (a read timeout alone let a server drip a byte
a second for ever), or once its caller gave up (a cancel: the worker then ends, not reads
on; a cancel also shuts its socket, for the one wait that is not sliced, a TLS handshake;
a name's lookup waits as long as the resolver says), and a stream read in the backend's
own thread sees a cancel within a slice (events sent just under the read timeout held a
cancel that long) and ends when the server takes twice the timeout for the answer's next
piece (review 45). A connect waits in slices too, each address of a host with the
timeout (reviews 46, 46b).
"""
from __future__ import annotations

import errno
import json
import os
import re
import select
import socket
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from . import interrupts, tokens
from .errors import RagError


class ProviderUnavailable(RagError):
    sqlstate = "58000"  # system_error: the model server failed, timed out or is unreachable


class ProviderRejected(RagError):
    sqlstate = "22023"  # the server refused the request as given


class ProviderAuth(RagError):
    sqlstate = "28000"  # invalid_authorization_specification


class ProviderNotFound(RagError):
    sqlstate = "42704"  # undefined_object: the server does not know the model


@dataclass
class ModelSpec:
    name: str
    kind: str
    provider: str
    provider_model: str | None
    base_url: str | None
    dimensions: int | None
    max_input_tokens: int
    price_input_per_1m: float
    price_output_per_1m: float
    api_key: str | None
    tokenizer: str | None
    options: dict = field(default_factory=dict)

    @property
    def remote_name(self) -> str:
        return self.provider_model or self.name

    @property
    def priced(self) -> bool:
        return self.price_input_per_1m > 0 or self.price_output_per_1m > 0

    def cost(self, input_tokens: int, output_tokens: int = 0) -> float:
        return (input_tokens * self.price_input_per_1m + output_tokens * self.price_output_per_1m) / 1e6


@dataclass
class CallPolicy:
    timeout: float = 30.0
    max_retries: int = 3
    retry_base: float = 0.5
    batch_size: int = 96
    # a priced model's: reserve(input_tokens, output_tokens) before each attempt (raises
    # when the day's budget is spent), sent() once one is answered (pg.Meter)
    meter: object | None = None


@dataclass
class ChatResult:
    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    attempts: int = 1
    first_token_s: float | None = None


_CLIENTS: dict[tuple, object] = {}
MAX_ANSWER_BYTES = 4 << 20   # a chat answer, a reranking, an error's body
# an embeddings answer: what its texts' vectors take as JSON (a float64's longest text is 24
# bytes), a kilobyte a text and 64 KiB more; parsed JSON takes 12-27 times its bytes, so a
# flat 64 MiB let one rag.embed use 1.7 GB (review 44b)
_EXPECTED = threading.local()


def _embeddings_answer_bytes(texts: int, dimensions: int) -> int:
    return (64 << 10) + texts * (1024 + 32 * dimensions)


def _expecting(limit: int, fn):
    """fn, run where the answer it reads may be at most `limit` bytes (the thread's)."""
    def call():
        _EXPECTED.limit = limit
        try:
            return fn()
        finally:
            _EXPECTED.limit = None
    return call


class AnswerRefused(Exception):
    """A server's answer that rag does not read on (too large, compressed, redirected)."""


_CALL = threading.local()   # .deadline: when what this thread waits for must come (a request, a stream's piece)


def _bounded_transport(timeout: float):
    """The client's transport: the default one, its answers read as the module's docstring
    says (httpx2 is imported here: the unit tests' environment has none)."""
    import httpcore2
    import httpx2

    def waiting(end: float | None, timed_out) -> float | None:
        """How long the next socket wait may take in all (None: no limit); first, a cancel
        is seen, and a given-up call or one past its deadline ends."""
        if threading.current_thread() is threading.main_thread():
            interrupts.check_interrupts()
        elif interrupts.abandoned():
            raise AnswerRefused("the call was cancelled")
        now = time.monotonic()
        deadline = getattr(_CALL, "deadline", None)
        if deadline is not None and now >= deadline:
            raise timed_out("the answer took longer than twice rag.provider_timeout_seconds")
        if end is not None and now >= end:
            raise timed_out("timed out")
        return min((t - now for t in (end, deadline) if t is not None), default=None)

    class Guarded(httpcore2.NetworkStream):
        """A connection whose waits end as `waiting` says; a read waits in slices of
        interrupts.INTERVAL, so that is checked between two."""
        def __init__(self, inner):
            self.inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            end = None if timeout is None else time.monotonic() + timeout
            while True:
                left = waiting(end, httpcore2.ReadTimeout)
                try:
                    return self.inner.read(max_bytes, interrupts.INTERVAL if left is None
                                           else min(left, interrupts.INTERVAL))
                except httpcore2.ReadTimeout:
                    pass   # a slice passed with nothing to read (nothing was consumed)

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            # in pieces, each within what is left (a timed-out piece may be partly sent: the
            # request fails, and is not resumed)
            view = memoryview(buffer)
            end = None if timeout is None else time.monotonic() + timeout
            for i in range(0, len(view), 1 << 16):
                self.inner.write(view[i:i + (1 << 16)], waiting(end, httpcore2.WriteTimeout))

        def close(self) -> None:
            self.inner.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return Guarded(self.inner.start_tls(ssl_context, server_hostname, timeout))

        def get_extra_info(self, info: str):
            return self.inner.get_extra_info(info)

    class GuardedBackend(httpcore2.NetworkBackend):
        def __init__(self, inner):
            self.inner = inner

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            """As httpcore2's, but the connect waits in slices too (a server that drops SYNs
            held a cancelled call's worker until its timeout, up to the 3,600 s a session
            may set). The name is resolved as before: a slow resolver has its own timeout."""
            from httpcore2._backends.sync import SyncStream

            try:
                found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as e:
                raise httpcore2.ConnectError(str(e)) from None
            failed: Exception | None = None
            for family, kind, proto, _, address in found:
                # each address has the timeout, as in socket.create_connection (an IPv6
                # address that drops packets, then an IPv4 one that answers: review 46b);
                # a cancel, or the call's own deadline, ends them all
                end = None if timeout is None else time.monotonic() + timeout
                sock = socket.socket(family, kind, proto)
                try:
                    if local_address is not None:
                        sock.bind((local_address, 0))
                    sock.setblocking(False)
                    code = sock.connect_ex(address)
                    if code == errno.EINPROGRESS:
                        ready = select.poll()
                        ready.register(sock, select.POLLOUT)
                        while True:
                            left = waiting(end, httpcore2.ConnectTimeout)
                            if ready.poll(1000 * (interrupts.INTERVAL if left is None
                                                  else min(left, interrupts.INTERVAL))):
                                break
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        raise OSError(code, os.strerror(code))
                    sock.setblocking(True)
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return self.guarded(SyncStream(sock))
                except (OSError, httpcore2.ConnectTimeout) as e:
                    sock.close()
                    failed = e   # (the next address, as socket.create_connection does)
                except BaseException:
                    sock.close()
                    raise
            if isinstance(failed, httpcore2.ConnectTimeout):
                raise failed
            raise httpcore2.ConnectError(str(failed or "no address"))

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            return self.guarded(self.inner.connect_unix_socket(path, timeout, socket_options))

        @staticmethod
        def guarded(stream):
            # a cancel shuts the socket: its TLS handshake (one wait, no slices) ends then,
            # not at its timeout (review 45: 5 cancels left 5 threads in handshakes)
            sock = stream.get_extra_info("socket")
            if sock is not None:
                # (a dup: TLS takes the socket's own descriptor over; the dup names the same
                # connection, and is closed with the worker)
                held = sock.dup()
                interrupts.on_abandon(lambda: held.shutdown(socket.SHUT_RDWR))
            return Guarded(stream)

        def sleep(self, seconds: float) -> None:
            self.inner.sleep(seconds)

    class BoundedStream(httpx2.SyncByteStream):
        def __init__(self, inner, limit: int):
            self.inner, self.limit = inner, limit

        def __iter__(self):
            n = 0
            for piece in self.inner:
                n += len(piece)
                if n > self.limit:
                    raise AnswerRefused(f"its answer is over {self.limit:,} bytes")
                yield piece

        def close(self) -> None:
            self.inner.close()

    class Bounded(httpx2.BaseTransport):
        def __init__(self):
            self.inner = httpx2.HTTPTransport()
            # httpx2 takes no network backend: its pool's is replaced before any connection
            # is made (the dependencies are pinned with the release; a change fails here)
            pool = self.inner._pool
            if not isinstance(getattr(pool, "_network_backend", None), httpcore2.SyncBackend):
                raise RuntimeError("rag: httpx2's connection pool has no network backend to guard")
            pool._network_backend = GuardedBackend(pool._network_backend)

        def handle_request(self, request):
            if threading.current_thread() is not threading.main_thread():
                _CALL.deadline = time.monotonic() + 2 * timeout   # (a worker makes one request)
            response = self.inner.handle_request(request)
            if 300 <= response.status_code < 400:
                response.close()
                raise AnswerRefused(f"it answered HTTP {response.status_code}, a redirect, which rag does not follow")
            if response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
                response.close()
                raise AnswerRefused("its answer is compressed, which rag did not ask for")
            limit = getattr(_EXPECTED, "limit", None) or MAX_ANSWER_BYTES
            return httpx2.Response(status_code=response.status_code, headers=response.headers,
                                   stream=BoundedStream(response.stream, limit), extensions=response.extensions)

        def close(self) -> None:
            self.inner.close()

    return Bounded()


def _client(spec: ModelSpec, secret: str | None, timeout: float):
    import openai

    key = (spec.base_url, secret, timeout)
    c = _CLIENTS.get(key)
    if c is None:
        if len(_CLIENTS) > 16:
            _CLIENTS.clear()
        http = openai.DefaultHttpxClient(transport=_bounded_transport(timeout), timeout=timeout,
                                         follow_redirects=False, headers={"Accept-Encoding": "identity"})
        # the package insists on a key; servers without auth ignore this placeholder
        c = _CLIENTS[key] = openai.OpenAI(base_url=spec.base_url, api_key=secret or "no-key",
                                           timeout=timeout, max_retries=0, http_client=http)
    return c


def _refused(e: BaseException) -> AnswerRefused | None:
    """The AnswerRefused behind an exception the client wrapped, if any."""
    while e is not None:
        if isinstance(e, AnswerRefused):
            return e
        e = e.__cause__ or e.__context__
    return None


def _sent(err: RagError, attempts: int) -> RagError:
    """err, marked with the requests already sent (a caller that goes on without the
    answer, such as a failed rerank falling back to the fused order, records them)."""
    err.sent = attempts
    return err


def _retryable(e: BaseException) -> bool:
    import openai

    if _refused(e) is not None:
        return False
    if isinstance(e, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    return isinstance(e, openai.APIStatusError) and (e.status_code == 429 or e.status_code >= 500)


MESSAGE_CHARS = 200  # of the server's error message
_SPACES = re.compile(r"\s+")


def _clean(text: str, secret: str | None = None) -> str:
    """One line of at most MESSAGE_CHARS printable characters, the secret masked."""
    if secret:
        text = text.replace(secret, "***")
    text = text[:4 * MESSAGE_CHARS]  # bounds the work below
    # control and format characters (C*: newlines, escapes, bidi overrides, lone surrogates)
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"


def _shown_url(url: str | None) -> str:
    """The URL without user:password@, query or fragment."""
    try:
        p = urlsplit(url or "")
        return urlunsplit((p.scheme, p.netloc.rpartition("@")[2], p.path, "", ""))
    except ValueError:
        return "(invalid URL)"


def _server_message(e) -> str | None:
    """The `error.message` of an OpenAI-style JSON error body, or None."""
    try:
        text = e.response.text
    except Exception:  # the body was not read (a stream closed early)
        return None
    if len(text) > 1_000_000:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message.strip() else None


def _describe(e: BaseException, secret: str | None = None) -> str:
    import openai

    refused = _refused(e)
    if refused is not None:
        return str(refused)
    if isinstance(e, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(e, openai.APIConnectionError):
        return "the server could not be reached"
    if isinstance(e, openai.APIStatusError):
        message = _server_message(e)
        return f"HTTP {e.status_code}: {_clean(message, secret) if message else 'no error message'}"
    return f"{type(e).__name__}: {_clean(str(e), secret)}"


def _error(spec: ModelSpec, e: BaseException, attempts: int, secret: str | None) -> RagError:
    import openai

    what = f"rag: model {spec.name!r} at {_shown_url(spec.base_url)}: {_describe(e, secret)}"
    if secret:
        what = what.replace(secret, "***")
    if _refused(e) is not None:
        return ProviderRejected(what, hint="rag reads a model server's answer only as it is sent to its request, "
                                           "uncompressed and bounded in size: is base_url the model server?")
    if _retryable(e):
        return ProviderUnavailable(
            f"{what} (after {attempts} attempt{'s' if attempts != 1 else ''})",
            hint="check that the server is up; rag.provider_timeout_seconds and rag.provider_max_retries "
                 "set how long rag waits")
    status = getattr(e, "status_code", None)
    if isinstance(e, openai.APIStatusError) and status in (401, 403):
        return ProviderAuth(what, hint="check the model's API key (rag.set_api_key) and its grants")
    if isinstance(e, openai.APIStatusError) and status == 404:
        return ProviderNotFound(what, hint=f"is {spec.remote_name!r} the server's name for the model? "
                                           "rag.add_model(..., provider_model => ...) sets it")
    return ProviderRejected(what, hint="the server refused the request; its message says why")


def _call(spec: ModelSpec, policy: CallPolicy, secret: str | None, fn, most: tuple[int, int] = (0, 0)):
    """fn() with retries; returns (result, attempts). With a meter, each attempt is counted
    at `most` (input, output tokens) before it is sent: a provider may bill an attempt its
    client gave up on."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

    attempts = 0
    try:
        # reraise: the last attempt's own exception, not tenacity's RetryError
        for attempt in Retrying(retry=retry_if_exception(_retryable),
                                stop=stop_after_attempt(policy.max_retries + 1),
                                wait=wait_random_exponential(multiplier=policy.retry_base, max=60),
                                sleep=interrupts.sleep, reraise=True):
            with attempt:
                attempts = attempt.retry_state.attempt_number
                if policy.meter is not None:
                    policy.meter.reserve(*most)
                # the request waits in a worker thread, so a cancel is seen within 50 ms
                out = interrupts.wait(fn)
                if policy.meter is not None:
                    policy.meter.sent()
                return out, attempts
    except RagError:
        raise
    except interrupts.Interrupt:
        raise
    except Exception as e:
        raise _sent(_error(spec, e, attempts, secret), attempts) from None


def embed(spec: ModelSpec, policy: CallPolicy, secret: str | None, texts: list[str]):
    """(n x dimensions float32 array, input tokens, requests made)."""
    import numpy as np

    client = interrupts.wait(lambda: _client(spec, secret, policy.timeout))  # its first import takes ~1 s
    out = np.zeros((len(texts), spec.dimensions or 0), dtype=np.float32)
    in_tokens = calls = 0
    for b in range(0, len(texts), policy.batch_size):
        interrupts.check_interrupts()  # here, not inside _call: its `except Exception` would hide a cancel
        batch = texts[b:b + policy.batch_size]
        counted = _tokens_of(spec, batch) if policy.meter is not None else None
        resp, _ = _call(spec, policy, secret,
                        _expecting(_embeddings_answer_bytes(len(batch), spec.dimensions or 8192),
                                   lambda: client.embeddings.create(model=spec.remote_name, input=batch)),
                        (counted or 0, 0))
        calls += 1
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(batch) or [d.index for d in data] != list(range(len(batch))):
            raise ProviderRejected(f"rag: model {spec.name!r} returned {len(data)} embeddings for {len(batch)} texts"
                                   + ("" if len(data) != len(batch) else ", not one for each"))
        try:
            raw = np.asarray([d.embedding for d in data])
        except ValueError:   # numpy refuses a ragged list
            raw = np.empty(0, dtype=object)
        if raw.ndim == 2 and raw.dtype.kind not in "fiu":
            # (strings such as "0.5" were parsed by numpy and taken: hostile review 44, left then)
            raise ProviderRejected(f"rag: model {spec.name!r} returned an embedding that is not a list of numbers "
                                   f"(it holds {_kind_of(raw)})")
        vecs = raw.astype(np.float32) if raw.ndim == 2 else raw
        if vecs.ndim != 2 or vecs.shape[1] != spec.dimensions:
            got = vecs.shape[1] if vecs.ndim == 2 else "ragged"
            raise ProviderRejected(
                f"rag: model {spec.name!r} returned vectors of {got} dimensions; rag.models says {spec.dimensions}",
                hint="fix the registry: rag.add_model(name, 'embed', ..., dimensions => ...)")
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        if not np.isfinite(norms).all():
            # (NaN, Infinity or 1e39 failed later, at the insert, naming no model; 3e38s made
            # an infinite float32 norm and a zero vector: hostile review 44)
            raise ProviderRejected(f"rag: model {spec.name!r} returned a vector that is not finite (NaN, Infinity "
                                   "or past float32)")
        if spec.options.get("normalize", True):
            vecs = vecs / np.where(norms > 0, norms, 1)
        out[b:b + len(batch)] = vecs
        usage = getattr(resp, "usage", None)
        n = _reported(getattr(usage, "prompt_tokens", None) if usage is not None else None)
        in_tokens += n or counted or _tokens_of(spec, batch)
    return out, in_tokens, calls


def _kind_of(raw) -> str:
    """What an array that should hold numbers holds instead, for an error message."""
    kinds = {"U": "strings", "S": "strings", "b": "booleans", "O": "values that are not plain numbers"}
    return kinds.get(raw.dtype.kind, str(raw.dtype))


def chat(spec: ModelSpec, policy: CallPolicy, secret: str | None, messages: list[dict],
         max_tokens: int, temperature: float) -> ChatResult:
    client = interrupts.wait(lambda: _client(spec, secret, policy.timeout))  # its first import takes ~1 s
    t0 = time.perf_counter()
    most = (message_tokens(messages, spec), max_tokens) if policy.meter is not None else (0, 0)
    resp, attempts = _call(spec, policy, secret, lambda: client.chat.completions.create(
        model=spec.remote_name, messages=messages, max_tokens=max_tokens, temperature=temperature), most)
    if not resp.choices:
        # (an answer of `choices: []` was stored as an empty answer: hostile review 44, left then)
        raise _sent(ProviderRejected(f"rag: model {spec.name!r} at {_shown_url(spec.base_url)}: its answer has no "
                                     "choices", hint="is it a chat completions server?"), attempts)
    choice = resp.choices[0]
    message = getattr(choice, "message", None)
    text = getattr(message, "content", None) or ""
    if not isinstance(text, str):
        raise _sent(ProviderRejected(f"rag: model {spec.name!r} at {_shown_url(spec.base_url)}: its answer's "
                                     f"content is {type(text).__name__}, not text",
                                     hint="is it a chat completions server?"), attempts)
    _storable(spec, text, attempts)
    usage = getattr(resp, "usage", None)
    r = ChatResult(text=text, finish_reason=getattr(choice, "finish_reason", None), attempts=attempts,
                   first_token_s=time.perf_counter() - t0)
    r.input_tokens = _reported(getattr(usage, "prompt_tokens", None)) or message_tokens(messages, spec)
    r.output_tokens = _reported(getattr(usage, "completion_tokens", None)) or tokens.count(text, spec.tokenizer)
    return r


def _storable(spec: ModelSpec, text: str, attempts: int) -> None:
    """A chat answer holds no NUL, which Postgres text cannot (it failed at the store with
    22P05, naming no model: review 44b)."""
    if "\x00" in text:
        raise _sent(ProviderRejected(f"rag: model {spec.name!r} at {_shown_url(spec.base_url)}: its answer holds a "
                                     "NUL character, which Postgres text cannot"), attempts)


def rerank(spec: ModelSpec, policy: CallPolicy, secret: str | None, query: str, documents: list[str]):
    """A reranking server's relevance score for each document: POST {base_url}/rerank with
    {model, query, documents, top_n} (Cohere, Jina, Voyage, TEI, vLLM, llama.cpp). Answers
    {"results": [{"index", "relevance_score"}]}, {"data": [...]} (Voyage) or a bare list
    with "score" (TEI) are all read. Returns (scores, input tokens, requests made)."""
    client = interrupts.wait(lambda: _client(spec, secret, policy.timeout))
    body = {"model": spec.remote_name, "query": query, "documents": documents, "top_n": len(documents)}
    counted = rerank_tokens(spec, query, documents) if policy.meter is not None else None
    resp, attempts = _call(spec, policy, secret, lambda: client.post("/rerank", body=body, cast_to=object),
                           (counted or 0, 0))
    results = resp
    if isinstance(resp, dict):
        results = resp.get("results", resp.get("data"))
    bad = _sent(ProviderRejected(f"rag: model {spec.name!r} at {_shown_url(spec.base_url)}: its /rerank answer "
                                 "is not a list of {index, relevance_score}", hint="is it a reranking server?"),
                attempts)
    if not isinstance(results, list):
        raise bad
    scores: list[float | None] = [None] * len(documents)
    for r in results:
        i = r.get("index") if isinstance(r, dict) else None
        x = r.get("relevance_score", r.get("score")) if isinstance(r, dict) else None
        if not isinstance(i, int) or not 0 <= i < len(documents) or isinstance(x, bool) \
                or not isinstance(x, (int, float)) or x != x or not -1e300 < x < 1e300:
            raise bad
        scores[i] = float(x)
    if any(x is None for x in scores):
        raise _sent(ProviderRejected(f"rag: model {spec.name!r} scored {sum(x is not None for x in scores)} of "
                                     f"{len(documents)} passages",
                                     hint="the reranker must score every document it is sent"), attempts)
    usage = resp.get("usage") if isinstance(resp, dict) else None
    n = _reported((usage.get("prompt_tokens") or usage.get("total_tokens")) if isinstance(usage, dict) else None)
    return scores, n or counted or rerank_tokens(spec, query, documents), 1


def _tokens_of(spec: ModelSpec, texts: list[str]) -> int:
    return sum(tokens.count(t, spec.tokenizer) for t in texts)


def rerank_tokens(spec: ModelSpec, query: str, documents: list[str]) -> int:
    """A reranking's input: the query beside each document."""
    return len(documents) * tokens.count(query, spec.tokenizer) + _tokens_of(spec, documents)


def _reported(n) -> int:
    """A token count a server reported, or 0 (not reported): a count that is not a whole
    number from 1 to 2**31 is not believed (a negative one would take back what the
    budget counted; a huge one would fill the ledger's bigint and the day's count)."""
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 2**31 else 0


def message_tokens(messages: list[dict], spec: ModelSpec) -> int:
    # what OpenAI's chat format adds per message is about 4 tokens
    return sum(tokens.count(m["content"], spec.tokenizer) + 4 for m in messages) + 2


class ChatStream:
    """A chat completion streamed piece by piece. The request is made (and retried) when
    the stream is opened, so unreachable servers and 4xx fail before any row is sent."""

    def __init__(self, spec: ModelSpec, policy: CallPolicy, secret: str | None, messages: list[dict],
                 max_tokens: int, temperature: float):
        self.spec, self.secret, self.messages = spec, secret, messages
        self.wait = 2 * policy.timeout   # the most the server may take for the answer's next piece
        self.result = ChatResult()
        self.t0 = time.perf_counter()
        client = interrupts.wait(lambda: _client(spec, secret, policy.timeout))  # its first import takes ~1 s
        most = (message_tokens(messages, spec), max_tokens) if policy.meter is not None else (0, 0)
        self._stream, self.result.attempts = _call(spec, policy, secret, lambda: client.chat.completions.create(
            model=spec.remote_name, messages=messages, max_tokens=max_tokens, temperature=temperature,
            stream=True, stream_options={"include_usage": True}), most)

    def __iter__(self):
        """The answer's pieces. The server has self.wait for the next one (empty events,
        keep-alives, count for nothing: a server sending one every 0.3 s held a stream for
        as long as it liked, review 45); the client's time between two rows is its own."""
        r = self.result
        parts = []
        try:
            _CALL.deadline = time.monotonic() + self.wait
            for ev in self._stream:
                usage = getattr(ev, "usage", None)
                if usage is not None:
                    r.input_tokens = _reported(getattr(usage, "prompt_tokens", None))
                    r.output_tokens = _reported(getattr(usage, "completion_tokens", None))
                for ch in ev.choices or []:
                    piece = getattr(ch.delta, "content", None) if ch.delta is not None else None
                    if ch.finish_reason:
                        r.finish_reason = ch.finish_reason
                    if piece:
                        _storable(self.spec, piece, r.attempts)
                        if r.first_token_s is None:
                            r.first_token_s = time.perf_counter() - self.t0
                        parts.append(piece)
                        _CALL.deadline = None
                        yield piece
                        _CALL.deadline = time.monotonic() + self.wait
            if r.finish_reason is None:
                # (a server that closed the connection mid-answer: it was stored as whole, review 45)
                raise ProviderUnavailable(f"rag: model {self.spec.name!r} at {_shown_url(self.spec.base_url)}: its "
                                          "stream ended before the answer did (no finish_reason)",
                                          hint="check the server's log; the answer was not stored")
        except RagError:
            raise
        except interrupts.Interrupt:   # a cancel seen while the answer streams in (_bounded_transport)
            raise
        except Exception as e:
            raise _error(self.spec, e, r.attempts, self.secret) from None
        finally:
            _CALL.deadline = None
        r.text = "".join(parts)
        r.input_tokens = r.input_tokens or message_tokens(self.messages, self.spec)
        r.output_tokens = r.output_tokens or tokens.count(r.text, self.spec.tokenizer)

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close:
            close()
