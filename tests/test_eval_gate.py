"""CI quality gate: the four shared collections, three modes, against recorded scores.

The collections (../shared/eval: cranfield, cisi, med, BEIR layout; covid-qa-dev, long
articles with answer spans) are loaded into their own tenants of a dedicated database with
the real loader, evaluated with rag.evaluate, and compared with tests/eval_baseline.json.
See that file for the tolerance and why.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))
from ragpg_cli.evaluation import MODES, evaluate, evaluate_answers, find_eval_dir, load  # noqa: E402

BASELINE = json.loads((Path(__file__).with_name("eval_baseline.json")).read_text())
SETS = sorted(BASELINE["sets"])


@pytest.fixture(scope="module")
def eval_results(server_url):
    from pgtest import with_db

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS eval_gate")
        conn.execute("CREATE DATABASE eval_gate TEMPLATE rag_template")
    dsn = with_db(server_url, "eval_gate")
    eval_dir = find_eval_dir()
    loaded = {s: load(dsn, eval_dir / s, jobs=2, quiet=True) for s in SETS}
    results = evaluate(dsn, SETS, MODES, k=100)
    by = {(r["set"], r["mode"]): r for r in results}
    answers = {a["set"]: a for a in evaluate_answers(dsn, SETS, questions=BASELINE["answers"]["covid-qa-dev"]["questions"])}
    print("\n" + json.dumps({"loaded": loaded, "results": results, "answers": answers}, indent=1, default=str))
    return loaded, by, answers


@pytest.mark.parametrize("name", SETS)
def test_sets_load_completely(eval_results, name):
    loaded, _, _ = eval_results
    path = find_eval_dir() / name
    stats = json.loads((path / "stats.json").read_text())
    if "docs" in stats:   # the BEIR sets' stats
        assert loaded[name]["documents"] == stats["docs"] - stats.get("docs_with_empty_text", 0) or \
            loaded[name]["documents"] == stats["docs"]
        assert loaded[name]["queries"] == stats["queries_with_judgments"]
        assert loaded[name]["judgments"] == stats["qrels_positive"]
    else:                 # covid-qa-dev's: line counts of its files
        lines = {f: stats[f]["lines"] for f in stats}
        assert loaded[name]["documents"] == lines["corpus.jsonl"]
        assert loaded[name]["queries"] == lines["queries.jsonl"]
        assert loaded[name]["judgments"] == lines["qrels.tsv"] - 1
        assert loaded[name]["answers"] == lines["answers.jsonl"]


@pytest.mark.parametrize("name,mode", [(s, m) for s in SETS for m in MODES])
def test_no_regression_against_the_recorded_baseline(eval_results, name, mode):
    _, by, _ = eval_results
    got, want = by[(name, mode)], BASELINE["sets"][name][mode]
    tol = BASELINE["tolerance"]
    for metric in want:
        assert got[metric] >= want[metric] - tol[metric], (name, mode, metric, got[metric], want[metric])


@pytest.mark.parametrize("name", SETS)
def test_bm25_matches_plain_bm25_and_hybrid_beats_both_legs(eval_results, name):
    _, by, _ = eval_results
    if name in BASELINE["plain_bm25_ndcg_10"]:
        published = BASELINE["plain_bm25_ndcg_10"][name]  # ../shared/eval/README.md
        assert by[(name, "lexical")]["ndcg_10"] >= published - 0.01
    metric = BASELINE["headline"][name]   # covid-qa-dev: answer spans in the top 5
    best_leg = max(by[(name, "vector")][metric], by[(name, "lexical")][metric])
    assert by[(name, "hybrid")][metric] >= best_leg - BASELINE["hybrid_slack"][name]


def test_sets_without_answers_have_no_success_scores(eval_results):
    _, by, _ = eval_results
    for (name, mode), r in by.items():
        assert (r["success_5"] is None) == (name != "covid-qa-dev"), (name, mode)


def test_answers_no_regression_against_the_recorded_baseline(eval_results):
    """The extractive answers on covid-qa-dev's first 200 questions: as much of the gold
    answers, citations into the right article, and no longer."""
    _, _, answers = eval_results
    want, tol = BASELINE["answers"]["covid-qa-dev"], BASELINE["answers"]["tolerance"]
    got = answers["covid-qa-dev"]
    assert got["questions"] == want["questions"] and set(answers) == {"covid-qa-dev"}
    for metric in ("gold_share", "half_share", "exact_share", "citations_right"):
        assert got[metric] >= want[metric] - tol, (metric, got[metric], want[metric])
    assert got["mean_words"] <= want["mean_words"] + BASELINE["answers"]["words_slack"], got["mean_words"]
    assert got["refusals"] <= 0.05
