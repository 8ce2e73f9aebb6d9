"""The lexical leg's index: block-encoded posting lists and exact BM25 top-k over them
(stages index -> search of the data path). Plain Python and numpy; pg.py reads and
writes the blocks.

A lexeme's postings live in rows of rag.posting_blocks, each a block of up to 8,192
postings: three byte strings of big-endian integers (chunk ids int8, term frequencies
int2, chunk lengths int4, as Postgres' int8send/int2send/int4send write them) and the
block's largest term frequency and smallest chunk length. Those two bound the BM25
weight of any posting in the block, for any k1, b and corpus statistics:

    w(tf, len) = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))

grows with tf and falls with len, so w(max_tf, min_len) is an upper bound.

Every writing statement appends one *fresh* block per lexeme (its postings); `merge`
rewrites a lexeme's blocks, best postings first (by the weight at the default k1/b), in
blocks of 128, 256, ... 8,192 postings, so the best few hundred are read in one small
block. A chunk's deletion leaves its postings in place (a *ghost*: writers never wait on
each other's blocks); the statistics drop it at once, queries skip it, and the next merge
of each of its lexemes drops it.

`top_k` is exact BM25 top-k with block-max pruning: it reads blocks in order of their
bound, keeps every chunk's partial score (lower bound) and the most its unread lexemes
could add (upper bound), stops when no unread chunk can enter the top k, and scores the
remaining doubtful candidates exactly from their tsvector (one query).
"""
from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import interrupts
from .errors import RagError

K1, B = 0.9, 0.4          # the defaults, by which merged blocks are ordered
FIRST_BLOCK = 128         # merged blocks: 128, 256, ... postings, then BLOCK_MAX each
BLOCK_MAX = 8192
FIRST_ROUND = 4096        # postings read in a query's first round; doubles per round
EPS = 1e-9                # float slack when comparing sums of weights


class CorruptBlock(RagError):
    sqlstate = "XX001"   # data_corrupted


class BlocksMoved(RagError):
    """A block of the query's plan was merged away by a transaction that committed since
    (the search reads it in a later statement): plan again."""
    sqlstate = "40001"   # serialization_failure: retry


def weight(tf, length, idf, k1: float, b: float, avglen: float):
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avglen))


# -- encoding ----------------------------------------------------------------------------

def check_sizes(ids: bytes, tfs: bytes, lens: bytes, n: int, where: str = "") -> None:
    """A block whose byte strings do not hold n postings raises CorruptBlock (e.g. a row
    written by hand)."""
    if n < 0 or len(ids) != 8 * n or len(tfs) != 2 * n or len(lens) != 4 * n:
        raise CorruptBlock(f"rag: posting block {where} is corrupt: {n} postings, "
                           f"{len(ids)}/{len(tfs)}/{len(lens)} bytes of ids/tfs/lens",
                           hint="rebuild the lexical index: SELECT rag.rebuild_lexical_index()")


def decode(ids: bytes, tfs: bytes, lens: bytes, n: int, where: str = ""):
    """(chunk ids int64, tf float64, len float64) of one block (or of blocks joined)."""
    check_sizes(ids, tfs, lens, n, where)
    return (np.frombuffer(ids, dtype=">i8").astype(np.int64),
            np.frombuffer(tfs, dtype=">i2").astype(np.float64),
            np.frombuffer(lens, dtype=">i4").astype(np.float64))


@dataclass
class Block:
    first_id: int
    n: int
    max_tf: int
    min_len: int
    ids: bytes
    tfs: bytes
    lens: bytes


def block_sizes(total: int) -> list[int]:
    """Merged block sizes for `total` postings: 128, 256, ... 8,192, 8,192, ..."""
    out, size = [], FIRST_BLOCK
    while total > 0:
        out.append(min(size, total))
        total -= out[-1]
        size = min(size * 2, BLOCK_MAX)
    return out


def merge(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], avglen: float,
          dead: np.ndarray | None = None) -> list[Block]:
    """One lexeme's postings (from any number of blocks), without the chunks in `dead`,
    as merged blocks, best first by their weight at the default k1/b."""
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    tfs = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    lens = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    if dead is not None and len(dead):
        keep = ~np.isin(ids, dead)
        ids, tfs, lens = ids[keep], tfs[keep], lens[keep]
    if len(ids):
        # a chunk once (its highest tf): blocks written by hand with an id repeated made
        # merged blocks with the same first id, and every later merge of the lexeme, in
        # any writer's ingest, failed with 23505 (hostile review 46b)
        by_id = np.lexsort((-tfs, ids))
        ids, tfs, lens = ids[by_id], tfs[by_id], lens[by_id]
        first = np.ones(len(ids), bool)
        first[1:] = ids[1:] != ids[:-1]
        ids, tfs, lens = ids[first], tfs[first], lens[first]
    order = np.lexsort((ids, -weight(tfs, lens, 1.0, K1, B, max(avglen, 1.0))))
    ids, tfs, lens = ids[order], tfs[order], lens[order]
    out, at = [], 0
    for size in block_sizes(len(ids)):
        s = slice(at, at + size)
        out.append(Block(int(ids[s].min()), size, int(tfs[s].max()), int(lens[s].min()),
                         ids[s].astype(">i8").tobytes(), tfs[s].astype(">i2").tobytes(),
                         lens[s].astype(">i4").tobytes()))
        at += size
    return out


# -- search ------------------------------------------------------------------------------

@dataclass
class Term:
    lexeme: str
    idf: float
    # (first_id, n, max_tf, min_len) of each of its blocks
    blocks: list[tuple[int, int, int, int]] = field(default_factory=list)


ReadBlocks = Callable[[list[tuple[str, int]]], list[tuple[str, int, bytes, bytes, bytes, int]]]
# chunk ids -> (the ids that exist, tf of each query lexeme in each: rows of an array)
ExactTf = Callable[[list[int]], tuple[np.ndarray, np.ndarray]]


@dataclass
class Stats:
    """What a query cost: for the benchmark's profile and the tests."""
    rounds: int = 0
    blocks_read: int = 0
    postings_read: int = 0
    postings_total: int = 0
    exact_lookups: int = 0


def top_k(terms: list[Term], k: int, k1: float, b: float, avglen: float,
          read: ReadBlocks, exact: ExactTf, ghosts: bool, stats: Stats | None = None):
    """Exact BM25 top k: (chunk ids, scores), best first, ties by chunk id.

    `read` returns the blocks asked for (lexeme, first_id, ids, tfs, lens, n); `exact`
    the tf of every query lexeme in the chunks asked for, and which of them exist;
    `ghosts`: whether the blocks may hold deleted chunks (then every answer is checked)."""
    stats = stats if stats is not None else Stats()
    avglen = max(avglen, 1.0)
    terms = [t for t in terms if t.blocks]
    if not terms or k < 1:
        return np.zeros(0, np.int64), np.zeros(0)
    index = {t.lexeme: i for i, t in enumerate(terms)}
    # each term's blocks by their bound, best first
    queues = []
    for t in terms:
        bl = sorted(((float(weight(mt, ml, t.idf, k1, b, avglen)), fid, n) for fid, n, mt, ml in t.blocks),
                    key=lambda x: -x[0])
        queues.append(bl)
        stats.postings_total += sum(x[2] for x in bl)
    pos = [0] * len(terms)
    idfs = np.array([t.idf for t in terms])

    def next_ub(i):
        return queues[i][pos[i]][0] if pos[i] < len(queues[i]) else 0.0

    got_ids, got_w, got_t, got_len = [], [], [], []
    dead = np.zeros(0, np.int64)
    budget = FIRST_ROUND
    widen = 1      # candidates: the k x widen best alive (doubled each time deleted ones were among them)
    uniq = None    # the postings read, by chunk: made again only after a round that read
    while True:
        # a round: the blocks with the highest bounds, until `budget` postings
        heap = [(-next_ub(i), i) for i in range(len(terms)) if pos[i] < len(queues[i])]
        heapq.heapify(heap)
        want, size = [], 0
        while heap and size < budget:
            _, i = heapq.heappop(heap)
            ub, fid, n = queues[i][pos[i]]
            want.append((terms[i].lexeme, fid))
            size += n
            pos[i] += 1
            if pos[i] < len(queues[i]):
                heapq.heappush(heap, (-next_ub(i), i))
        budget *= 2
        if want:
            uniq = None
            stats.rounds += 1
            rows = read(want)
            for lexeme, fid, ids, tfs, lens, n in rows:   # sizes first: one decode per round
                check_sizes(ids, tfs, lens, n, f"({lexeme!r}, {fid})")
            a, f, ln = decode(b"".join(r[2] for r in rows), b"".join(r[3] for r in rows),
                              b"".join(r[4] for r in rows), sum(r[5] for r in rows))
            t = np.repeat(np.array([index[r[0]] for r in rows], dtype=np.int32), [r[5] for r in rows])
            got_ids.append(a)
            got_w.append(weight(f, ln, idfs[t], k1, b, avglen))
            got_t.append(t)
            got_len.append(ln)
            stats.blocks_read += len(rows)
            stats.postings_read += len(a)
        left = np.array([next_ub(i) for i in range(len(terms))])
        done_reading = not left.any()
        threshold = float(left.sum())            # the most an unseen chunk can score
        if not got_ids:
            return np.zeros(0, np.int64), np.zeros(0)
        interrupts.check_interrupts()   # (a round of millions of postings takes a second)
        if uniq is None:
            # (once a round: when all is read, a pass per ~k deleted chunks had redone it,
            # quadratic in planted postings: 65 K took 27 s, review 56b)
            ids = np.concatenate(got_ids)
            uniq, inv = np.unique(ids, return_inverse=True)
            interrupts.check_interrupts()
            partial = np.bincount(inv, weights=np.concatenate(got_w), minlength=len(uniq))
            tidx = np.concatenate(got_t)
            # the most each chunk's unread lexemes could add: the next bound of each lexeme
            # it has not been seen in
            upper = partial + threshold - np.bincount(inv, weights=left[tidx], minlength=len(uniq))
        alive = ~np.isin(uniq, dead) if len(dead) else np.ones(len(uniq), bool)
        n_alive = int(alive.sum())
        if n_alive >= k:
            kth = float(np.partition(partial[alive], -k)[-k])
        else:
            kth = 0.0
        if not done_reading and (threshold > kth + EPS or n_alive < k):
            continue
        cut = kth
        if widen > 1 and n_alive:   # (deleted chunks were among the candidates: look at more at once)
            wide = min(k * widen, n_alive)
            cut = min(kth, float(np.partition(partial[alive], -wide)[-wide]))
        cand = alive & (upper >= cut - EPS)
        doubtful = cand & (upper > partial + EPS)
        if not done_reading and doubtful.sum() > max(8 * k, 256):
            continue                              # narrow them down by reading more
        c_ids = uniq[cand]
        score = partial[cand]
        if doubtful.any() or ghosts:
            stats.exact_lookups += 1
            lens_by_chunk = np.zeros(len(uniq))
            lens_by_chunk[inv] = np.concatenate(got_len)
            exist, tf = exact(c_ids.tolist())
            keep = np.isin(c_ids, exist)
            dead = np.concatenate([dead, c_ids[~keep]])
            if tf is not None and len(exist):
                # exact scores: every query lexeme's tf, from the chunks themselves
                order = np.searchsorted(c_ids, exist)
                idf = np.array([t.idf for t in terms])
                ln = lens_by_chunk[cand][order][:, None]
                w = weight(tf, ln, idf[None, :], k1, b, avglen)
                score = score.copy()
                score[order] = w.sum(axis=1)
            c_ids, score = c_ids[keep], score[keep]
            if not keep.all():
                widen *= 2
                # deleted chunks were among the candidates: their bounds no longer count
                rest = alive & ~cand
                outside = float(upper[rest].max()) if rest.any() else 0.0
                if len(score) < k or float(np.sort(score)[-k]) < max(threshold, outside) - EPS:
                    if not done_reading:
                        continue
                    if len(score) < k and (alive & ~cand).any():
                        continue                  # all read: the next best are exact already
        top = np.lexsort((c_ids, -score))[:k]
        return c_ids[top], score[top]


PROXIMITY_WINDOW = 12     # positions: about a sentence's clause


def proximity(hits: list[int], idf: list[float], window: int = PROXIMITY_WINDOW) -> float:
    """How close together a chunk holds the query's lexemes: the largest IDF-weighted
    share of them that fall within `window` consecutive word positions (0..1). `hits`
    are the chunk's occurrences of query lexemes as `position * 65536 + lexeme index`
    (so that plain integer order is position order; tsvector positions are below
    16,384), `idf` each query lexeme's IDF. One pass over the occurrences in position
    order: linear in their number after the sort."""
    total = sum(idf)
    if not hits or total <= 0:
        return 0.0
    occ = sorted(hits)
    count = [0] * len(idf)
    cur = best = 0.0
    j = 0
    for h in occ:
        # occurrences `window` or more positions back leave the window
        edge = ((h >> 16) - window + 1) << 16
        while occ[j] < edge:
            out = occ[j] & 0xFFFF
            count[out] -= 1
            if count[out] == 0:
                cur -= idf[out]
            j += 1
        lx = h & 0xFFFF
        if count[lx] == 0:
            cur += idf[lx]
            if cur > best:
                best = cur
        count[lx] += 1
    return min(1.0, best / total)


def best_windows(owner: list[int], lengths: list[float], tf_rows: list[list[int]], idf, k1: float,
                 b: float) -> dict[int, float]:
    """Each owner's best window by BM25: window i belongs to chunk owner[i], has `lengths[i]`
    lexemes and `tf_rows[i]` occurrences of each query lexeme (IDF `idf`); a window is a
    document of its own, its length measured against the mean length of these windows."""
    if not owner:
        return {}
    ln = np.array(lengths, dtype=np.float64)
    avg = float(ln.mean()) or 1.0
    tf = np.array(tf_rows, dtype=np.float64).reshape(len(owner), len(idf))
    scores = weight(tf, ln[:, None], np.asarray(idf, dtype=np.float64)[None, :], k1, b, avg).sum(axis=1)
    best: dict[int, float] = {}
    for i, x in zip(owner, scores.tolist()):
        if x > best.get(i, -1.0):
            best[i] = x
    return best


MAX_WINDOW_SPANS = 12      # as chunking.MAX_WINDOWS: what rag.chunks.window_bounds may describe


def window_term_frequencies(hits: list[int], bounds: list[int], n: int) -> list[list[int]] | None:
    """Each window's term frequency of each of n query lexemes, from the chunk's
    occurrences as `proximity` takes them and the windows' `bounds` in its tsvector
    positions (rag.chunks.window_bounds: window i holds positions bounds[i] up to
    bounds[i + 1] - 1; a window without a word, e.g. of punctuation, holds none). None if
    the bounds do not describe 1-12 windows in order (written by hand): the caller then
    has no windows for the chunk."""
    if not (2 <= len(bounds) <= MAX_WINDOW_SPANS + 1) or any(b is None for b in bounds) \
            or any(x > y for x, y in zip(bounds, bounds[1:])):
        return None
    tf = [[0] * n for _ in range(len(bounds) - 1)]
    for h in hits:
        w = bisect.bisect_right(bounds, h >> 16) - 1
        if 0 <= w < len(tf):
            tf[w][h & 0xFFFF] += 1
    return tf


def term_frequencies(hits: list[int], n: int) -> list[int]:
    """Each query lexeme's term frequency in a chunk, from its occurrences as `proximity`
    takes them (`position * 65536 + lexeme index`): the same numbers as its tsvector's
    positions per lexeme, so a candidate whose positions are fetched is not filtered twice."""
    tf = [0] * n
    for h in hits:
        tf[h & 0xFFFF] += 1
    return tf
