"""`ragpg` command line: ragpg demo --dsn ..."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ragpg", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="ingest the PostgreSQL manual and answer a question")
    demo.add_argument("--dsn", required=True, help="libpq connection string")
    demo.add_argument("--docs", default="/usr/share/doc/postgresql-doc-15/html",
                      help="directory of HTML pages to ingest")
    demo.add_argument("--limit", type=int, default=None, help="ingest at most this many pages")
    demo.add_argument("--question", action="append",
                      help="question to ask (repeatable); default: a few about the manual")
    demo.add_argument("--files", nargs="*", default=None, metavar="PATH",
                      help="files and folders (PDF, DOCX, ...) to ingest too, with `ragpg ingest`")
    demo.add_argument("--chat-model", help="answer with this chat model of rag.models (e.g. smollm2, "
                                           "served by `make llm`); default: rag.chat_model")
    ing = sub.add_parser("ingest", help="send files and folders (PDF, DOCX, HTML, markdown, text) to rag.ingest_file")
    ing.add_argument("paths", nargs="+", metavar="PATH", help="files, and folders to walk")
    ing.add_argument("--dsn", required=True, help="libpq connection string")
    ing.add_argument("--url-prefix", help="each document's url: this prefix + its path (citations link to #page=N)")
    ing.add_argument("--tenant", help="SET rag.tenant first (the role must be allowed to act for it)")
    ing.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    ev = sub.add_parser("eval", help="load the BEIR-layout eval sets, evaluate, print a table and plot")
    ev.add_argument("--dsn", required=True)
    ev.add_argument("--dir", default=None, help="folder of sets (default: ../shared/eval)")
    ev.add_argument("--set", action="append", dest="sets", help="set name (repeatable; default: all)")
    ev.add_argument("--out", default="bench/results", help="where the JSON and PNG go")
    sv = sub.add_parser("serve", help="HTTP API (FastAPI): /ask, /ask/stream, /search, /ingest, /chat")
    sv.add_argument("--dsn", required=True, help="login role whose members include the keys' roles")
    sv.add_argument("--keys-file", help="lines of 'API_KEY DATABASE_ROLE'")
    sv.add_argument("--keys", help="inline 'KEY=ROLE,KEY2=ROLE2' (prefer --keys-file)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--pool-size", type=int, default=10, help="database connections")
    sv.add_argument("--queue-size", type=int, default=50, help="requests waiting for a connection; past it: 429")
    sv.add_argument("--queue-timeout", type=float, default=10.0, help="seconds a request waits, then 429")
    sv.add_argument("--read-timeout", type=float, default=15.0, help="seconds to receive a request's headers and body")
    sv.add_argument("--keep-alive", type=float, default=5.0, help="seconds an idle connection stays open")
    sv.add_argument("--per-role", type=int, help="connections one role may hold; its other requests wait their "
                                                 "turn (default: half of --pool-size, all if the keys name one role)")
    sv.add_argument("--statement-timeout", type=float, default=300.0,
                    help="seconds a request's statement may run, then 504 (a lower setting of the login role stays)")
    sv.add_argument("--max-connections", type=int, default=1000,
                    help="connections open at once; past it a new one takes the place of one without a request "
                         "in progress (closed), or gets 503 and is closed if every one has a request")
    sv.add_argument("--max-connections-per-client", type=int, default=100,
                    help="connections open at once from one client (an IPv4 address or an IPv6 /64); past it: "
                         "429 and closed (0: no cap, e.g. behind a proxy that caps them itself)")
    sv.add_argument("--send-buffer", type=int, default=256 * 1024,
                    help="bytes of a connection's kernel send buffer (Linux doubles it): what a client that "
                         "does not read can hold; it caps one connection's throughput at about twice it per "
                         "round trip (0: the kernel's own, which grows)")
    sv.add_argument("--access-log-per-client", type=int, default=100,
                    help="access log lines of one client every 10 s; its further requests are counted in one "
                         "line (0: no limit)")
    sv.add_argument("--access-log-lines", type=int, default=1000,
                    help="access log lines in all every 10 s; past them, a client's first 10 lines are still "
                         "logged (at most as many again); further requests are counted in one line (0: no limit)")
    wk = sub.add_parser("worker", help="drain rag.queue (attached tables in async mode) with CALL rag.work()")
    wk.add_argument("--dsn", required=True)
    wk.add_argument("--interval", type=float, default=1.0, help="seconds to sleep when the queue is empty")
    wk.add_argument("--tenant", help="SET rag.tenant first (the role must be allowed to act for it)")
    wk.add_argument("--once", action="store_true", help="one pass, then exit")
    lm = sub.add_parser("llm", help="serve the local LLM (SmolLM2, llama.cpp) on 127.0.0.1 for rag.ask")
    lm.add_argument("--port", type=int, default=8765)
    lm.add_argument("--threads", type=int, default=1, help="1 is fastest here, and robust to load")
    lm.add_argument("--pidfile", help="run in the background and write its pid here")
    lm.add_argument("--log", help="with --pidfile: append the server's output here")
    args = parser.parse_args(argv)
    if args.cmd == "llm":
        from .llm import run as run_llm
        return run_llm(args.port, args.threads, args.pidfile, args.log)
    if args.cmd == "worker":
        from .worker import run as run_worker
        return run_worker(args.dsn, args.interval, args.once, args.tenant)
    if args.cmd == "serve":
        from .server import load_keys, serve
        return serve(args.dsn, load_keys(args.keys_file, args.keys), args.host, args.port,
                     pool_size=args.pool_size, queue_size=args.queue_size, queue_timeout=args.queue_timeout,
                     read_timeout=args.read_timeout, keep_alive=args.keep_alive, per_role=args.per_role,
                     statement_timeout=args.statement_timeout, max_connections=args.max_connections,
                     max_per_client=args.max_connections_per_client, send_buffer=args.send_buffer,
                     access_log_per_client=args.access_log_per_client, access_log_total=args.access_log_lines)
    if args.cmd == "ingest":
        from .ingest import run as run_ingest
        return run_ingest(args.dsn, args.paths, args.url_prefix, args.tenant, args.quiet)
    if args.cmd == "eval":
        from pathlib import Path

        from .evaluation import run_all
        return run_all(args.dsn, Path(args.dir) if args.dir else None, args.sets, Path(args.out))
    if args.cmd == "demo":
        from .demo import run
        return run(args.dsn, args.docs, args.limit, args.question, args.chat_model, args.files)
    return 2


if __name__ == "__main__":
    sys.exit(main())
