"""ragpg.lexical: block-encoded postings and exact BM25 top-k with block-max pruning,
against BM25 computed exhaustively from the same postings (no database)."""
from __future__ import annotations

import numpy as np
import pytest

from ragpg import lexical


def corpus(n_chunks: int, vocab: int, seed: int):
    """Postings of a random corpus: term t is in a chunk with probability ~ 1/(t+1)
    (Zipf-like document frequencies), tf 1 + Poisson(0.7)."""
    rng = np.random.default_rng(seed)
    postings = {}
    lens = np.zeros(n_chunks + 1)
    for t in range(vocab):
        p = min(0.9, 2.0 / (t + 2))
        ids = np.nonzero(rng.random(n_chunks) < p)[0] + 1
        if not len(ids):
            continue
        tfs = 1 + rng.poisson(0.7, len(ids))
        postings[f"t{t}"] = (ids.astype(np.int64), tfs.astype(np.float64))
        np.add.at(lens, ids, tfs)
    lens = np.maximum(lens, 1)
    return {k: (ids, tfs, lens[ids]) for k, (ids, tfs) in postings.items()}, lens


def brute(postings, terms, k1, b, avglen, n_chunks, dead=()):
    score = {}
    for t in terms:
        ids, tfs, ln = postings[t]
        df = len(ids)
        idf = np.log(1 + (n_chunks - df + 0.5) / (df + 0.5))
        for i, tf, l_ in zip(ids.tolist(), tfs, ln):
            if i not in dead:
                score[i] = score.get(i, 0.0) + lexical.weight(tf, l_, idf, k1, b, avglen)
    return sorted(score.items(), key=lambda x: (-x[1], x[0]))


def as_blocks(postings, avglen, fresh_every: int, rng):
    """Each lexeme: merged blocks of most postings, plus some fresh (unsorted) blocks, as
    writing statements leave them."""
    store = {}
    for t, (ids, tfs, ln) in postings.items():
        cut = len(ids) - len(ids) // fresh_every if fresh_every else len(ids)
        merged = lexical.merge([(ids[:cut], tfs[:cut], ln[:cut])], avglen) if cut else []
        blocks = [(b.first_id, b.n, b.max_tf, b.min_len, b.ids, b.tfs, b.lens) for b in merged]
        rest = np.arange(cut, len(ids))
        for part in np.array_split(rest, max(1, len(rest) // 7)) if len(rest) else []:
            if len(part):
                blocks.append((int(ids[part].min()), len(part), int(tfs[part].max()), int(ln[part].min()),
                               ids[part].astype(">i8").tobytes(), tfs[part].astype(">i2").tobytes(),
                               ln[part].astype(">i4").tobytes()))
        store[t] = blocks
    return store


def search(postings, store, terms, k, k1, b, avglen, n_chunks, dead=frozenset(), first_round=None,
           monkeypatch=None):
    if first_round and monkeypatch:
        monkeypatch.setattr(lexical, "FIRST_ROUND", first_round)
    tl = []
    for t in terms:
        df = len(postings[t][0])
        term = lexical.Term(t, float(np.log(1 + (n_chunks - df + 0.5) / (df + 0.5))))
        term.blocks = [(fid, n, mt, ml) for fid, n, mt, ml, *_ in store[t]]
        tl.append(term)
    by_key = {(t, blk[0]): blk for t in terms for blk in store[t]}
    reads = []

    def read(want):
        reads.append(len(want))
        return [(t, fid, *by_key[(t, fid)][4:7], by_key[(t, fid)][1]) for t, fid in want]

    def exact(ids):
        live = np.array(sorted(i for i in ids if i not in dead), dtype=np.int64)
        tf = np.zeros((len(live), len(tl)))
        for j, t in enumerate(tl):
            pid, ptf, _ = postings[t.lexeme]
            pos = {i: f for i, f in zip(pid.tolist(), ptf.tolist())}
            tf[:, j] = [pos.get(i, 0.0) for i in live.tolist()]
        return live, tf

    stats = lexical.Stats()
    ids, scores = lexical.top_k(tl, k, k1, b, avglen, read, exact, bool(dead), stats)
    return list(zip(ids.tolist(), scores.tolist())), stats


def agree(got, want, k):
    """Same scores rank by rank, and the same chunks except among ties at the k-th score."""
    assert len(got) == min(k, len(want))
    for (gi, gs), (wi, ws) in zip(got, want):
        assert gs == pytest.approx(ws, rel=1e-9, abs=1e-12)
    kth = want[min(k, len(want)) - 1][1]
    assert {i for i, s in got if s > kth + 1e-9} == {i for i, s in want[:k] if s > kth + 1e-9}


@pytest.mark.parametrize("n_chunks,first_round", [(300, None), (5_000, 64), (30_000, 256), (30_000, None)])
@pytest.mark.parametrize("k1,b", [(0.9, 0.4), (1.2, 0.75)])
def test_top_k_is_exact_bm25(monkeypatch, n_chunks, first_round, k1, b):
    postings, lens = corpus(n_chunks, 60, seed=n_chunks)
    avglen = float(lens[1:].mean())
    store = as_blocks(postings, avglen, fresh_every=5, rng=None)
    rng = np.random.default_rng(1)
    for q in range(12):
        terms = sorted({f"t{int(x)}" for x in rng.integers(0, 60, size=rng.integers(1, 6))} & postings.keys())
        for k in (1, 10, 30):
            got, stats = search(postings, store, terms, k, k1, b, avglen, n_chunks,
                                first_round=first_round, monkeypatch=monkeypatch)
            agree(got, brute(postings, terms, k1, b, avglen, n_chunks), k)


def test_pruning_reads_a_fraction_of_the_postings(monkeypatch):
    """A query over common and rare lexemes at 30,000 chunks: the best blocks suffice."""
    postings, lens = corpus(30_000, 60, seed=7)
    avglen = float(lens[1:].mean())
    store = as_blocks(postings, avglen, fresh_every=0, rng=None)
    terms = ["t0", "t1", "t40"]
    got, stats = search(postings, store, terms, 10, 0.9, 0.4, avglen, 30_000, first_round=256,
                        monkeypatch=monkeypatch)
    agree(got, brute(postings, terms, 0.9, 0.4, avglen, 30_000), 10)
    assert stats.postings_read < stats.postings_total / 3, stats


def test_deleted_chunks_are_skipped(monkeypatch):
    postings, lens = corpus(5_000, 40, seed=3)
    avglen = float(lens[1:].mean())
    store = as_blocks(postings, avglen, fresh_every=4, rng=None)
    terms = ["t0", "t3", "t9"]
    want = brute(postings, terms, 0.9, 0.4, avglen, 5_000)
    dead = frozenset(i for i, _ in want[:15])   # the 15 best are gone
    for first_round in (64, 4096):
        got, stats = search(postings, store, terms, 10, 0.9, 0.4, avglen, 5_000, dead=dead,
                            first_round=first_round, monkeypatch=monkeypatch)
        agree(got, brute(postings, terms, 0.9, 0.4, avglen, 5_000, dead), 10)
        assert not dead & {i for i, _ in got}
    # everything deleted: nothing found, no error
    got, _ = search(postings, store, ["t30"], 5, 0.9, 0.4, avglen, 5_000,
                    dead=frozenset(postings["t30"][0].tolist()))
    assert got == []


def test_many_deleted_chunks_cost_a_few_lookups(monkeypatch):
    """Review 56b: postings a writer planted for chunks that do not exist, scoring above
    every real one, were looked up about k at a time, each pass redoing the postings'
    sort (65 K planted postings: 27 s, quadratic). Now the candidates double each time
    deleted ones were among them: a few lookups, the same answer."""
    rng = np.random.default_rng(11)
    ids = np.arange(1, 30_001, dtype=np.int64)
    lens = rng.integers(10, 2_000, len(ids)).astype(np.float64)
    postings = {"t0": (ids, rng.integers(1, 30, len(ids)).astype(np.float64), lens),   # (scores mostly distinct)
                "t1": (ids[:5], np.ones(5), lens[:5])}
    avglen = float(lens.mean())
    store = as_blocks(postings, avglen, fresh_every=0, rng=None)
    want = brute(postings, ["t0"], 0.9, 0.4, avglen, 30_000)
    dead = frozenset(i for i, _ in want[:5_000])   # the 5,000 best are gone
    calls = []
    unique = np.unique
    monkeypatch.setattr(lexical.np, "unique", lambda a, *more, **kw: calls.append(len(a)) or unique(a, *more, **kw))
    got, stats = search(postings, store, ["t0"], 10, 0.9, 0.4, avglen, 30_000, dead=dead)
    agree(got, brute(postings, ["t0"], 0.9, 0.4, avglen, 30_000, dead), 10)
    sorts = sum(n >= stats.postings_read for n in calls)   # (all the postings read: once a round)
    assert stats.exact_lookups <= 14 and sorts <= stats.rounds, (stats, sorts)


def test_merge_orders_best_first_in_growing_blocks_and_drops_the_dead():
    postings, lens = corpus(20_000, 3, seed=5)
    ids, tfs, ln = postings["t0"]
    dead = ids[::10]
    blocks = lexical.merge([(ids[:5000], tfs[:5000], ln[:5000]), (ids[5000:], tfs[5000:], ln[5000:])],
                           float(lens[1:].mean()), dead)
    assert [b.n for b in blocks] == lexical.block_sizes(len(ids) - len(dead))
    assert [b.n for b in blocks][:3] == [128, 256, 512] and max(b.n for b in blocks) <= lexical.BLOCK_MAX
    got = np.concatenate([lexical.decode(b.ids, b.tfs, b.lens, b.n)[0] for b in blocks])
    assert sorted(got.tolist()) == sorted(set(ids.tolist()) - set(dead.tolist()))
    # each block's bound is at least every weight in the next one (best first)
    w = [lexical.weight(*lexical.decode(b.ids, b.tfs, b.lens, b.n)[1:], 1.0, 0.9, 0.4, float(lens[1:].mean()))
         for b in blocks]
    assert all(w[i].min() >= w[i + 1].max() - 1e-12 for i in range(len(w) - 1))
    for b in blocks:
        _, tf, l_ = lexical.decode(b.ids, b.tfs, b.lens, b.n)
        assert (b.max_tf, b.min_len) == (tf.max(), l_.min()) and b.first_id == min(
            lexical.decode(b.ids, b.tfs, b.lens, b.n)[0])


def test_merge_keeps_a_chunk_once_so_first_ids_do_not_collide():
    """Blocks written by hand with one id repeated merged into blocks with the same first id
    (the table's key: 23505 for every later merge, in any writer's ingest: review 46b)."""
    ids = np.array([7] * 1000 + [3, 9], np.int64)
    tfs = np.array([1] * 999 + [5, 2, 2], np.float64)
    lens = np.array([10] * 1002, np.float64)
    blocks = lexical.merge([(ids, tfs, lens)], 10.0)
    got = np.concatenate([lexical.decode(b.ids, b.tfs, b.lens, b.n)[0] for b in blocks])
    assert sorted(got.tolist()) == [3, 7, 9]
    assert len({b.first_id for b in blocks}) == len(blocks)
    tf7 = [t for b in blocks for i, t in zip(*lexical.decode(b.ids, b.tfs, b.lens, b.n)[:2]) if i == 7]
    assert tf7 == [5]   # its highest tf


def test_a_corrupt_block_is_named():
    with pytest.raises(lexical.CorruptBlock) as exc:
        lexical.decode(b"\x00" * 8, b"\x00" * 2, b"\x00" * 3, 1, "('appl', 7)")
    assert exc.value.sqlstate == "XX001" and "('appl', 7)" in exc.value.message
