"""Load BEIR-layout eval sets into the `rag` extension, run them, report.

A set is a directory with corpus.jsonl ({"_id", "title", "text"}), queries.jsonl
({"_id", "text"}) and qrels.tsv (query-id, corpus-id, score; header line), and for a QA set
answers.jsonl ({"query-id", "corpus-id", "answer_text", "answer_start"}, the covid-qa
layout). Its documents go into the tenant 'eval:<name>' (so its BM25 statistics are its
own), with source = the corpus id; queries, judgments and answers go into
rag.eval_queries / rag.eval_qrels / rag.eval_answers.
"""
from __future__ import annotations

import csv
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import psycopg

BATCH = 64
MODES = ("vector", "lexical", "hybrid")

INSERT = """
INSERT INTO rag.documents AS d (source, title, metadata, content)
SELECT s, nullif(t, ''), jsonb_build_object('eval_set', %s::text, 'format', 'text'), c
FROM unnest(%s::text[], %s::text[], %s::text[]) AS x (s, t, c)
ON CONFLICT ON CONSTRAINT documents_tenant_source_key DO UPDATE
    SET content = excluded.content, title = excluded.title, metadata = excluded.metadata
    WHERE d.content_hash IS DISTINCT FROM excluded.content_hash
"""


def find_eval_dir() -> Path:
    """$RAGPG_EVAL_DIR, else ../shared/eval beside the repository, else /work/shared/eval."""
    env = os.environ.get("RAGPG_EVAL_DIR")
    repo = Path(__file__).resolve().parents[2]
    for cand in ([Path(env)] if env else []) + [repo.parent / "shared" / "eval", Path("/work/shared/eval")]:
        if (cand / "med" / "corpus.jsonl").is_file():
            return cand
    raise SystemExit("ragpg eval: no eval data found; set RAGPG_EVAL_DIR to the folder holding med/, cisi/, cranfield/")


def read_set(path: Path):
    docs = []
    for line in (path / "corpus.jsonl").open(encoding="utf-8"):
        d = json.loads(line)
        title, text = (d.get("title") or "").strip(), (d.get("text") or "").strip()
        content = text if not title or text.startswith(title.rstrip(" .")) else f"{title}\n\n{text}"
        if content.strip():
            docs.append((str(d["_id"]), title, content))
    queries = [(str(q["_id"]), q["text"]) for q in map(json.loads, (path / "queries.jsonl").open(encoding="utf-8"))]
    with (path / "qrels.tsv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    qrels = [(q, d, int(s)) for q, d, s in rows[1:] if int(s) > 0]
    answers = []
    if (path / "answers.jsonl").is_file():
        for a in map(json.loads, (path / "answers.jsonl").open(encoding="utf-8")):
            if a["answer_text"].strip():
                answers.append((str(a["query-id"]), str(a["corpus-id"]), a["answer_text"], a.get("answer_start")))
    return docs, queries, qrels, answers


def load(dsn: str, path: Path, name: str | None = None, jobs: int = 2, quiet: bool = False) -> dict:
    name = name or path.name
    tenant = f"eval:{name}"
    docs, queries, qrels, answers = read_set(path)
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('rag.tenant', %s, false)", (tenant,))
        conn.execute("""INSERT INTO rag.eval_sets (name, tenant, source) VALUES (%s, %s, %s)
                        ON CONFLICT (tenant, name) DO UPDATE SET source = excluded.source""", (name, tenant, str(path)))
        have = conn.execute("SELECT count(*) FROM rag.documents WHERE tenant = %s", (tenant,)).fetchone()[0]
    done = [0]
    lock = threading.Lock()
    local = threading.local()
    conns: list[psycopg.Connection] = []

    def work(batch):
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(dsn, autocommit=True)
            local.conn.execute("SELECT set_config('rag.tenant', %s, false)", (tenant,))
            conns.append(local.conn)
        local.conn.execute(INSERT, (name, [d[0] for d in batch], [d[1] for d in batch], [d[2] for d in batch]))
        with lock:
            done[0] += len(batch)
            if not quiet:
                el = time.perf_counter() - t0
                print(f"\r{name}: {done[0]}/{len(docs)} documents, {done[0] / el:.1f} docs/s", end="", flush=True)

    if have != len(docs):
        batches = [docs[i:i + BATCH] for i in range(0, len(docs), BATCH)]
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(work, batches))
        if not quiet:
            print()
    for c in conns:
        c.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('rag.tenant', %s, false)", (tenant,))
        with conn.transaction():
            conn.execute("DELETE FROM rag.eval_queries WHERE tenant = %s AND set_name = %s", (tenant, name))
            with conn.cursor() as cur:
                with cur.copy("COPY rag.eval_queries (tenant, set_name, query_id, query) FROM STDIN") as cp:
                    for qid, text in queries:
                        cp.write_row((tenant, name, qid, text))
                with cur.copy("COPY rag.eval_qrels (tenant, set_name, query_id, doc_source, grade) FROM STDIN") as cp:
                    for qid, did, grade in qrels:
                        cp.write_row((tenant, name, qid, did, grade))
                with cur.copy("COPY rag.eval_answers (tenant, set_name, query_id, doc_source, answer, answer_start) "
                              "FROM STDIN") as cp:
                    for qid, did, text, start in answers:
                        cp.write_row((tenant, name, qid, did, text, start))
            n_docs, n_chunks = conn.execute(
                "SELECT (SELECT count(*) FROM rag.documents WHERE tenant = %s),"
                " (SELECT count(*) FROM rag.chunks WHERE tenant = %s)", (tenant, tenant)).fetchone()
            conn.execute("UPDATE rag.eval_sets SET documents = %s, loaded_at = now() WHERE tenant = %s AND name = %s",
                         (n_docs, tenant, name))
    return {"set": name, "documents": n_docs, "chunks": n_chunks, "queries": len(queries),
            "judgments": len(qrels), "answers": len(answers), "seconds": round(time.perf_counter() - t0, 1)}


def evaluate(dsn: str, sets: list[str], modes=MODES, k: int = 100, params: dict | None = None) -> list[dict]:
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in sets:
            for mode in modes:
                run = conn.execute("SELECT rag.evaluate(%s, %s, %s, %s)",
                                   (s, mode, k, json.dumps(params or {}))).fetchone()[0]
                row = conn.execute("""SELECT run_id, set_name, mode, queries, ndcg_10, recall_10, recall_100,
                                             mrr_10, success_1, success_5, success_10, seconds
                                      FROM rag.eval_runs WHERE run_id = %s""", (run,)).fetchone()
                keys = ("run_id", "set", "mode", "queries", "ndcg_10", "recall_10", "recall_100", "mrr_10",
                        "success_1", "success_5", "success_10", "seconds")
                out.append({k_: (float(v) if hasattr(v, "as_tuple") else v) for k_, v in zip(keys, row)})
    return out


ANSWER_KEYS = ("run_id", "set", "model", "questions", "gold_share", "half_share", "exact_share", "citations_right",
               "refusals", "mean_words", "p50_ms", "p95_ms", "seconds")


def evaluate_answers(dsn: str, sets: list[str], model: str | None = None, k: int = 8,
                     questions: int | None = None) -> list[dict]:
    """rag.evaluate_answers on each set that has gold answers."""
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in sets:
            if not conn.execute("SELECT EXISTS (SELECT 1 FROM rag.eval_answers WHERE set_name = %s)", (s,)).fetchone()[0]:
                continue
            run = conn.execute("SELECT rag.evaluate_answers(%s, %s, %s, '{}', %s)", (s, model, k, questions)).fetchone()[0]
            row = conn.execute("""SELECT run_id, set_name, model, questions, gold_share, half_share, exact_share,
                                         citations_right, refusals, mean_words, p50_ms, p95_ms, seconds
                                  FROM rag.eval_answer_runs WHERE run_id = %s""", (run,)).fetchone()
            out.append({k_: (float(v) if hasattr(v, "as_tuple") else v) for k_, v in zip(ANSWER_KEYS, row)})
    return out


def answer_table(results: list[dict]) -> str:
    head = (f"{'set':<13} {'model':<11} {'questions':>9} {'gold':>6} {'half':>6} {'exact':>6} {'cites ok':>8} "
            f"{'refused':>7} {'words':>6} {'p50 ms':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['set']:<13} {r['model']:<11} {r['questions']:>9} {r['gold_share']:>6.3f} {r['half_share']:>6.3f} "
                     f"{r['exact_share']:>6.3f} {r['citations_right']:>8.3f} {r['refusals']:>7.3f} "
                     f"{r['mean_words']:>6.1f} {r['p50_ms']:>7.0f}")
    return "\n".join(lines)


def table(results: list[dict]) -> str:
    head = (f"{'set':<13} {'mode':<8} {'queries':>7} {'nDCG@10':>8} {'R@10':>6} {'R@100':>6} {'MRR@10':>7} "
            f"{'S@1':>6} {'S@5':>6} {'S@10':>6} {'sec':>6}")
    lines = [head, "-" * len(head)]
    for r in results:
        succ = " ".join(f"{r[k]:>6.3f}" if r.get(k) is not None else f"{'-':>6}"
                        for k in ("success_1", "success_5", "success_10"))
        lines.append(f"{r['set']:<13} {r['mode']:<8} {r['queries']:>7} {r['ndcg_10']:>8.3f} {r['recall_10']:>6.3f} "
                     f"{r['recall_100']:>6.3f} {r['mrr_10']:>7.3f} {succ} {r['seconds']:>6.1f}")
    return "\n".join(lines)


def plot(results: list[dict], png: Path, answers: list[dict] | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({r["set"] for r in results})
    modes = [m for m in MODES if any(r["mode"] == m for r in results)]
    if answers:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [7, 4]})
        names = ["gold_share", "half_share", "exact_share", "citations_right"]
        labels = ["gold words\nin answer", "answers with\n>= half", "answers with\nall of it", "citations into\nright doc"]
        w = 0.8 / len(answers)
        for i, a in enumerate(answers):
            bars = ax2.bar([x + i * w for x in range(len(names))], [a[n] for n in names], w,
                           label=f"{a['set']}, {a['model']} ({a['mean_words']:.0f} words)")
            ax2.bar_label(bars, fmt="%.2f", fontsize=7)
        ax2.set_xticks([x + w * (len(answers) - 1) / 2 for x in range(len(names))], labels, fontsize=8)
        ax2.set_ylim(0, 1)
        ax2.set_title("rag.ask answers (rag.evaluate_answers)")
        ax2.legend(fontsize=7)
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(modes)
    # each set's headline metric: success@5 for QA sets (answer spans), else nDCG@10
    metric = {s: "success_5" if any(r["set"] == s and r.get("success_5") is not None for r in results)
              else "ndcg_10" for s in sets}
    for i, m in enumerate(modes):
        vals = [next((r[metric[s]] for r in results if r["set"] == s and r["mode"] == m), 0) for s in sets]
        bars = ax.bar([x + i * width for x in range(len(sets))], vals, width, label=m)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(sets))],
                  [f"{s}\n({'success@5' if metric[s] == 'success_5' else 'nDCG@10'})" for s in sets])
    ax.set_ylabel("score")
    ax.set_title("rag.search retrieval quality (BEIR-layout eval sets)")
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)


def run_all(dsn: str, eval_dir: Path | None, sets: list[str] | None, out_dir: Path) -> int:
    eval_dir = eval_dir or find_eval_dir()
    sets = sets or sorted(p.name for p in eval_dir.iterdir() if (p / "corpus.jsonl").is_file())
    for s in sets:
        print(json.dumps(load(dsn, eval_dir / s)))
    results = evaluate(dsn, sets)
    print(table(results))
    answers = evaluate_answers(dsn, sets)
    if answers:
        print(answer_table(answers))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"eval-{stamp}.json").write_text(json.dumps({"retrieval": results, "answers": answers}, indent=2,
                                                           default=str) + "\n")
    try:
        plot(results, out_dir / f"eval-{stamp}.png", answers)
        print(f"wrote {out_dir / f'eval-{stamp}.json'} and .png")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
    return 0
