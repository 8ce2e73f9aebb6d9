"""rag.forget_answers: what deleting a document costs with it on and off, what the index
that finds the answers costs each answer written, and how long the upgrade takes to build it.

    .venv/bin/python bench/forget_answers.py --dsn "$(bash scripts/localdb.sh dsn)" [--answers 200000]

Makes its own database (<dbname>_forget): a document of 400 paragraphs ingested in tenant
acme (the local model), --asks real rag.ask calls about it (answers that retrieved its
chunks), and --answers rows of rag.answers of 50 other tenants naming 8 chunk ids each.
Then, alternating off and on, deletes the document (rolled back) --runs times each and
reports the medians and how many answers went; deletes a document of --large chunks
(written straight into rag.chunks) with it off and on; writes --inserts answer rows one at a time
with and without the index (rolled back); and times the index's build. Writes
bench/results/forget-answers-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fresh_database  # noqa: E402

INSERT = ("INSERT INTO rag.answers (question, answer, model, mode, retrieved_chunk_ids, latency_ms) "
          "VALUES ('q', 'a', 'm', 'extractive', %s, 1)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--answers", type=int, default=200_000)
    ap.add_argument("--asks", type=int, default=50)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--inserts", type=int, default=5_000)
    ap.add_argument("--large", type=int, default=20_000)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    dsn = fresh_database(args.dsn, "forget")
    result: dict = {"answers": args.answers, "asks": args.asks, "runs": args.runs}
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET rag.tenant = 'acme'")
        print("ingesting the document and asking about it ...", flush=True)
        c.execute("""SELECT rag.ingest(string_agg(format('Paragraph %s: the harbour ferry leaves at %s and the '
                                                         'bakery %s sells rye bread.', g, g, g), E'\\n\\n'),
                                       source => 'big.md') FROM generate_series(1, 400) AS g""")
        result["chunks"] = c.execute("SELECT count(*) FROM rag.chunks").fetchone()[0]
        for i in range(args.asks):
            c.execute("SELECT rag.ask(%s)", (f"When does the ferry of paragraph {i * 7 % 400} leave?",))
        print(f"{result['chunks']} chunks, {args.asks} answers; adding {args.answers:,} answers of 50 tenants ...",
              flush=True)
        c.execute("""INSERT INTO rag.answers (tenant, question, answer, model, mode, retrieved_chunk_ids, latency_ms)
                     SELECT 't' || (g %% 50), 'q', 'a', 'm', 'extractive',
                            ARRAY(SELECT (1000 + (g * 7919 + i * 104729) %% 1000000)::bigint
                                  FROM generate_series(1, 8) AS i), 1
                     FROM generate_series(1, %s) AS g""", (args.answers,))
        c.execute("VACUUM ANALYZE rag.answers")
        total = c.execute("SELECT count(*) FROM rag.answers").fetchone()[0]

        def deletes(on: bool) -> tuple[float, int]:
            c.execute("SELECT rag.configure('forget_answers', %s)", ("on" if on else "off",))
            times, gone = [], 0
            for _ in range(args.runs):
                c.execute("BEGIN")
                t = time.perf_counter()
                c.execute("DELETE FROM rag.documents WHERE source = 'big.md'")
                times.append((time.perf_counter() - t) * 1000)
                gone = total - c.execute("SELECT count(*) FROM rag.answers").fetchone()[0]
                c.execute("ROLLBACK")
            return statistics.median(times), gone

        result["delete_ms"] = {"off": [], "on": []}
        for rnd in range(2):
            for on in (False, True):
                ms, gone = deletes(on)
                key = "on" if on else "off"
                result["delete_ms"][key].append(round(ms, 2))
                result[f"answers_removed_{key}"] = gone
                print(f"  round {rnd + 1}, forget_answers {key:3}: delete of the document: median {ms:.1f} ms, "
                      f"{gone} answers removed", flush=True)

        def inserts(drop: bool) -> float:
            times = []
            c.execute("BEGIN")
            if drop:
                c.execute("DROP INDEX rag.answers_retrieved")
            for i in range(args.inserts):
                ids = [1000 + (i * 37 + j * 101) % 1_000_000 for j in range(8)]
                t = time.perf_counter()
                c.execute(INSERT, (ids,))
                times.append((time.perf_counter() - t) * 1e6)
            c.execute("ROLLBACK")
            return statistics.median(times)

        # a document of --large chunks (written straight into rag.chunks, copying one
        # chunk's embedding: the delete's cost does not depend on how they were made)
        c.execute("SELECT rag.ingest('# Large\n\nplaceholder words.', source => 'large.md')")
        c.execute("""INSERT INTO rag.chunks (tenant, document_id, ord, content, tokens, content_hash, model, embedding)
                     SELECT 'acme', d.id, g + 100, 'word ' || g, 2, sha256(('large' || g)::bytea), x.model, x.embedding
                     FROM rag.documents AS d, (SELECT model, embedding FROM rag.chunks LIMIT 1) AS x,
                          generate_series(1, %s) AS g
                     WHERE d.source = 'large.md'""", (args.large,))
        result["large_delete_ms"] = {}
        for on in (False, True):
            c.execute("SELECT rag.configure('forget_answers', %s)", ("on" if on else "off",))
            times = []
            for _ in range(3):
                c.execute("BEGIN")
                t = time.perf_counter()
                c.execute("DELETE FROM rag.documents WHERE source = 'large.md'")
                times.append((time.perf_counter() - t) * 1000)
                c.execute("ROLLBACK")
            key = "on" if on else "off"
            result["large_delete_ms"][key] = round(statistics.median(times), 1)
            print(f"  forget_answers {key:3}: delete of a {args.large + 1:,}-chunk document: median "
                  f"{result['large_delete_ms'][key]} ms (3 runs)", flush=True)

        result["insert_us"] = {"with_index": [], "without": []}
        for rnd in range(2):
            w, wo = inserts(False), inserts(True)
            result["insert_us"]["with_index"].append(round(w, 1))
            result["insert_us"]["without"].append(round(wo, 1))
            print(f"  round {rnd + 1}: an answer written: {w:.0f} us with the index, {wo:.0f} us without "
                  f"(median of {args.inserts:,})", flush=True)
        c.execute("BEGIN")
        c.execute("DROP INDEX rag.answers_retrieved")
        t = time.perf_counter()
        c.execute("CREATE INDEX answers_retrieved ON rag.answers USING gin (retrieved_chunk_ids)")
        result["index_build_s"] = round(time.perf_counter() - t, 2)
        c.execute("ROLLBACK")
        print(f"  the index's build on {total:,} answers: {result['index_build_s']} s", flush=True)
    ok = result["answers_removed_off"] == 0 and result["answers_removed_on"] == args.asks
    print("answers removed as expected" if ok else "UNEXPECTED: answers removed " + json.dumps(result))
    out = Path(args.out) / f"forget-answers-{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
