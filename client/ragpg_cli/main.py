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
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        from .demo import run
        return run(args.dsn, args.docs, args.limit, args.question)
    return 2


if __name__ == "__main__":
    sys.exit(main())
