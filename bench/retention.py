"""The ledger's retention: how fast rag.purge_ledger removes old rows, how long one batch
(one transaction) lasts, and that the totals people read stay the same.

    .venv/bin/python bench/retention.py --dsn "$(bash scripts/localdb.sh dsn)" [--usage 1000000]

Makes its own database (<dbname>_retention): --usage rows of rag.usage over the last 400
days for 50 tenants (a few models and operations, priced), and --answers rows of
rag.answers with questions and answers of realistic length; then, with a 90-day retention,
drives the purge batch by batch as CALL rag.purge_ledger() does (rag._purge_ledger_batch,
--batch rows a transaction, each committed) and times each, then calls rag.purge_ledger()
once more (nothing left to remove: the cost of looking at every row). Checks that
rag.usage_daily's totals are the same before and after. Writes
bench/results/retention-<date>.json.
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
from common import drop_database, fresh_database  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--usage", type=int, default=1_000_000)
    ap.add_argument("--answers", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    dsn = fresh_database(args.dsn, "retention")
    result: dict = {"usage_rows": args.usage, "answer_rows": args.answers, "batch_rows": args.batch}
    with psycopg.connect(dsn, autocommit=True) as c:
        print(f"filling {args.usage:,} usage rows and {args.answers:,} answers over 400 days ...", flush=True)
        t0 = time.perf_counter()
        # in id order the rows get older to newer, as a ledger does
        c.execute("""
            INSERT INTO rag.usage (tenant, at, model, provider, operation, calls, input_tokens, output_tokens, cost)
            SELECT 't' || (i %% 50), now() - make_interval(secs => (%s - i) * (400 * 86400.0 / %s)),
                   (ARRAY['gpt-x', 'emb-x', 'all-MiniLM-L6-v2'])[1 + i %% 3], 'openai',
                   (ARRAY['ask', 'index', 'query'])[1 + i %% 3], 1 + i %% 4, 100 + i %% 900, i %% 200,
                   ((i %% 97) / 10000.0)::numeric
            FROM generate_series(1, %s) AS i""", (args.usage, args.usage, args.usage))
        c.execute("""
            INSERT INTO rag.answers (tenant, at, question, answer, model, mode, latency_ms)
            SELECT 't' || (i %% 50), now() - make_interval(secs => (%s - i) * (400 * 86400.0 / %s)),
                   'How long do refunds take for order ' || i || '?',
                   repeat('Refunds take five business days once the parcel is back. ', 8) || '[1]',
                   'extractive', 'extractive', 40 + i %% 300
            FROM generate_series(1, %s) AS i""", (args.answers, args.answers, args.answers))
        c.execute("VACUUM ANALYZE rag.usage, rag.answers")
        result["fill_s"] = round(time.perf_counter() - t0, 1)
        size = "SELECT pg_total_relation_size('rag.usage') + pg_total_relation_size('rag.answers')"
        result["ledger_mb_before"] = round(c.execute(size).fetchone()[0] / 2**20, 1)
        totals = "SELECT sum(calls), sum(input_tokens), sum(output_tokens), sum(cost), count(*) FROM rag.usage_daily"
        before = c.execute(totals).fetchone()

        c.execute("SELECT rag.configure('usage_retention', '90 days'), rag.configure('answer_retention', '90 days')")
        cut = c.execute("SELECT answers, usage FROM rag._ledger_cutoffs(%s)", (args.batch,)).fetchone()
        for ledger, cutoff in (("answers", cut[0]), ("usage", cut[1])):
            times, removed, after, t_all = [], 0, 0, time.perf_counter()
            while True:
                t0 = time.perf_counter()
                last, n = c.execute("SELECT * FROM rag._purge_ledger_batch(%s, %s, %s, %s)",
                                    (ledger, after, cutoff, args.batch)).fetchone()
                if last is None:
                    break
                times.append((time.perf_counter() - t0) * 1000)
                removed, after = removed + n, last
                if len(times) % 20 == 0:
                    print(f"  {ledger}: {len(times)} batches, {removed:,} removed", flush=True)
            total = time.perf_counter() - t_all
            result[ledger] = {"removed": removed, "batches": len(times), "seconds": round(total, 1),
                              "rows_looked_at_per_s": round(len(times) * args.batch / total),
                              "batch_ms_p50": round(statistics.median(times), 1), "batch_ms_max": round(max(times), 1)}
            print(f"{ledger}: {result[ledger]}", flush=True)
        after_totals = c.execute(totals).fetchone()
        result["usage_daily_totals_same"] = before == after_totals
        result["history_rows"] = c.execute("SELECT count(*) FROM rag.usage_history").fetchone()[0]
        t0 = time.perf_counter()
        again = c.execute("CALL rag.purge_ledger()").fetchone()
        result["second_call"] = {"removed": list(again), "seconds": round(time.perf_counter() - t0, 2)}
        print(json.dumps(result, indent=1))
    drop_database(args.dsn, "retention")
    out = Path(args.out) / f"retention-{datetime.date.today()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if result["usage_daily_totals_same"] else 1


if __name__ == "__main__":
    sys.exit(main())
