"""A scripted OpenAI-compatible HTTP server on loopback: a FAKE model provider.

The real thing (OpenAI's API) cannot be reached here, and a real server cannot be made
to fail on cue; this one answers /v1/embeddings, /v1/chat/completions and /v1/rerank (the
reranking protocol of Cohere, Jina, TEI, vLLM and llama.cpp) by a script per
scenario (the first path segment: http://127.0.0.1:PORT/<scenario>/v1), records every
request it gets, and can answer 429, 500, 401 or hang. The database calls it through the
same `openai` provider code as the real local LLM (tests/test_providers.py uses both).
"""
from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Scenario:
    """fail: a list of statuses to answer first, in order (then succeed), or 'always:500';
    hang: seconds to wait before answering; chat_text, usage: what a chat answers (streamed
    as server-sent events, a word a piece, when the request asks for a stream);
    rerank_format: how /rerank answers (cohere: {"results": [{index, relevance_score}]},
    tei: a bare list of {index, score}, broken: {"results": "no"}); it scores a document
    1 / (1 + its length), so the shortest comes first. hostile: an answer no real server
    should send (hostile review 44), for at most 30 s: "big" (a 100 MB JSON body), "drip"
    (a byte every 0.2 s), "header-drip" (the headers so), "pings" (server-sent events with
    nothing in them, every 0.1 s), "slow-pings" (every 3 s, under any read timeout),
    "cut-stream" (two pieces of an answer, then the connection closed),
    "redirect" (302 elsewhere), "gzip" (50 KB that inflate to 50 MB), "nan",
    "huge-floats" and "string-numbers" (embeddings holding NaN, 3e38s whose float32 norm is
    infinite, or "0.5"), "no-choices" and "number-content" (a chat answer of `choices: []`,
    or whose content is 42)."""

    def __init__(self, fail=(), always: int | None = None, hang: float = 0.0, dims: int = 3,
                 chat_text: str = "ok", usage: dict | None = None, send_usage: bool = True,
                 echo_key: bool = False, rerank_format: str = "cohere", hostile: str | None = None):
        self.fail = list(fail)
        self.always = always
        self.hang = hang
        self.dims = dims
        self.chat_text = chat_text
        self.usage = usage
        self.send_usage = send_usage
        self.echo_key = echo_key
        self.rerank_format = rerank_format
        self.hostile = hostile


class FakeOpenAI:
    def __init__(self):
        self.scenarios: dict[str, Scenario] = {}
        self.requests: dict[str, list[dict]] = defaultdict(list)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, sc: Scenario, body: dict):
                """A chat completion as OpenAI streams it: server-sent events, a piece per
                word, the usage in a last chunk when stream_options asks for it."""
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True

                def event(choices: list, **extra):
                    chunk = {"id": "fake-1", "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": body.get("model"), "choices": choices} | extra
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                words = sc.chat_text.split(" ")
                for i, w in enumerate(words):
                    event([{"index": 0, "delta": {"content": w if i == 0 else " " + w}, "finish_reason": None}])
                event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
                if sc.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                    event([], usage=sc.usage or {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _hostile(self, kind: str, body: dict):
                end = time.monotonic() + 30
                self.close_connection = True
                if kind == "redirect":
                    self.send_response(302)
                    self.send_header("location", "http://127.0.0.1:9/elsewhere")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if kind in ("nan", "huge-floats", "string-numbers"):   # (json.dumps writes NaN, which json reads)
                    n = len(body["input"]) if isinstance(body.get("input"), list) else 1
                    value = {"nan": float("nan"), "huge-floats": 3e38, "string-numbers": "0.5"}[kind]
                    return self._send(200, {"object": "list", "model": body.get("model"),
                                            "data": [{"object": "embedding", "index": i, "embedding": [value, 1.0, 1.0]}
                                                     for i in range(n)]})
                if kind in ("no-choices", "number-content"):
                    choices = [] if kind == "no-choices" else [
                        {"index": 0, "message": {"role": "assistant", "content": 42}, "finish_reason": "stop"}]
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 1,
                                            "model": body.get("model"), "choices": choices})
                if kind == "gzip":
                    data = gzip.compress(b'{"data": [' + b" " * 50_000_000 + b"]}")
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-encoding", "gzip")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if kind == "cut-stream":   # two pieces of the answer, then the connection closed
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for word in ("Refunds take", " five"):
                        self.wfile.write(b'data: {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": '
                                         b'"m", "choices": [{"index": 0, "delta": {"content": "' + word.encode()
                                         + b'"}}]}\n\n')
                    self.wfile.flush()
                    return
                if kind == "header-drip":   # its headers, a byte every 0.2 s, never ended
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                        while time.monotonic() < end:
                            self.wfile.write(b"a")
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream" if "pings" in kind else "application/json")
                if kind == "big":
                    self.send_header("content-length", str(100 << 20))
                elif kind == "drip":
                    self.send_header("content-length", "100000")
                self.end_headers()
                try:
                    if kind == "big":
                        self.wfile.write(b'{"data": [')
                        for _ in range(100):
                            self.wfile.write(b" " * (1 << 20))
                    while time.monotonic() < end:
                        if kind == "drip":
                            self.wfile.write(b" ")
                            time.sleep(0.2)
                        elif kind in ("pings", "slow-pings"):
                            self.wfile.write(b'data: {"id": "x", "object": "chat.completion.chunk", "created": 1, '
                                             b'"model": "m", "choices": [{"index": 0, "delta": {}}]}\n\n')
                            self.wfile.flush()
                            time.sleep(0.1 if kind == "pings" else 3)
                        else:
                            break
                        self.wfile.flush()
                except OSError:   # the client went away
                    pass

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                parts = self.path.strip("/").split("/")
                name = parts[0]
                sc = fake.scenarios.get(name)
                fake.requests[name].append({"path": self.path, "body": body,
                                            "authorization": self.headers.get("authorization")})
                if sc is None:
                    return self._send(404, {"error": {"message": f"no scenario {name}"}})
                if sc.hostile:
                    return self._hostile(sc.hostile, body)
                if sc.hang:
                    time.sleep(sc.hang)
                if sc.always:
                    return self._send(sc.always, {"error": {"message": f"scripted {sc.always}"}})
                if sc.fail:
                    status = sc.fail.pop(0)
                    return self._send(status, {"error": {"message": f"scripted {status}"}})
                if sc.echo_key:  # like OpenAI's 401, which quotes the key it got
                    return self._send(401, {"error": {"message": "Incorrect API key provided: "
                                                      + (self.headers.get("authorization") or "")[7:]}})
                if parts[-1] == "embeddings":
                    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    data = [{"object": "embedding", "index": i,
                             "embedding": [float(len(t) % 7 + 1)] + [1.0] * (sc.dims - 1)}
                            for i, t in enumerate(texts)]
                    out = {"object": "list", "data": data, "model": body.get("model")}
                    if sc.send_usage:
                        out["usage"] = sc.usage or {"prompt_tokens": 5 * len(texts), "total_tokens": 5 * len(texts)}
                    return self._send(200, out)
                if parts[-1] == "rerank":
                    scores = [{"index": i, "relevance_score": 1 / (1 + len(d))} for i, d in enumerate(body["documents"])]
                    scores.sort(key=lambda r: -r["relevance_score"])
                    if sc.rerank_format == "tei":
                        return self._send(200, [{"index": r["index"], "score": r["relevance_score"]} for r in scores])
                    if sc.rerank_format == "broken":
                        return self._send(200, {"results": "no"})
                    out = {"model": body.get("model"), "results": scores}
                    if sc.send_usage:
                        out["usage"] = sc.usage or {"prompt_tokens": 7 * len(scores), "total_tokens": 7 * len(scores)}
                    return self._send(200, out)
                if body.get("stream"):
                    return self._stream(sc, body)
                out = {"id": "fake-1", "object": "chat.completion", "created": int(time.time()),
                       "model": body.get("model"),
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": sc.chat_text}}]}
                if sc.send_usage:
                    out["usage"] = sc.usage or {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
                return self._send(200, out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, scenario: Scenario) -> str:
        """Register a scenario; returns its base_url."""
        self.scenarios[name] = scenario
        self.requests.pop(name, None)
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Silent:
    """A fake server: a TCP listener on loopback that accepts connections and never sends a
    byte (a TLS handshake with it waits until its timeout)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:   # closed
                return
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


class Deaf:
    """A fake server: a TCP listener on loopback whose queue of connections is full, so the
    kernel drops every new SYN (as a firewall that drops packets: a connect waits until
    its timeout)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fill = []
        for _ in range(3):   # (never accepted: the first fills the queue, the others wait)
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fill.append(c)
        time.sleep(0.2)

    def close(self):
        self.sock.close()
        for c in self.fill:
            c.close()
