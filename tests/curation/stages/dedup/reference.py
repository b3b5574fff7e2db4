"""A brute-force reference for incremental dedup: "the earlier snapshot wins", over every pair of documents.

The rule (``docs/methods.md``, "Growing a corpus"): snapshots S1, S2, ... are curated in order; K_i is
what snapshot i keeps. For snapshot i, with K_<i the documents every earlier snapshot kept:

1. exact: a document whose normalised-text hash some document of K_<i has is dropped
   (``duplicate_of_corpus``, naming the earliest such corpus document: earliest snapshot, then its
   first in shard order); of the rest, the first of each hash (input order) stays;
2. near: the graph on (survivors of S_i) + K_<i, with an edge between two documents, at least one of
   them new, that share a band key and pass verification (estimate >= hi agreeing permutations, or
   lo <= estimate < hi and exact Jaccard of the shingle hashes >= threshold). A component holding a
   corpus document drops all its new documents (``duplicate_of_corpus``, naming its earliest corpus
   document); any other keeps one document (``keep``) and drops the rest (``near_duplicate``).

It is computed here pair by pair, independently of the stage's band joins, index files, components
and keeper choice; only the hashing functions are shared (they define what "similar" means).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curation.stages.dedup.exact import text_hashes
from curation.stages.dedup.minhash import minhash_columns
from curation.stages.dedup.near import NearDedup, NearDedupConfig
from curation.stages.dedup.pair_check import agreement_bounds


@dataclass
class Doc:
    id: str
    text: str
    snapshot: int
    order: int  # input order within the snapshot
    hash: int = 0
    bands: set[int] = field(default_factory=set)
    sig: np.ndarray | None = None
    sh: np.ndarray | None = None


def hashed(docs: list[Doc], stage: NearDedup, normalize: str = "whitespace") -> list[Doc]:
    c = stage.config
    texts = pa.array([d.text for d in docs], pa.string())
    bands, sig, sh = minhash_columns(texts, c.num_perm, c.ngram, c.seed, stage.bands, stage.rows, True)
    hashes = text_hashes([d.text for d in docs], normalize)
    sigs = sig.flatten().to_numpy().reshape(len(docs), -1)[:, : c.num_perm]
    for i, d in enumerate(docs):
        d.hash = int(hashes[i])
        d.bands = set(bands[i].as_py() or [])
        d.sig = sigs[i]
        d.sh = np.array(sh[i].as_py(), np.uint32)
    return docs


def similar(a: Doc, b: Doc, stage: NearDedup) -> bool:
    """The verified-candidate predicate of ``near_dedup_v1`` for one pair."""
    if not (a.bands & b.bands):
        return False
    c = stage.config
    lo, hi = agreement_bounds(c.threshold, c.num_perm, c.verify_sigmas)
    agree = int((a.sig == b.sig).sum())
    if agree >= hi:
        return True
    if agree < lo:
        return False
    inter = len(np.intersect1d(a.sh, b.sh))
    return inter / (len(a.sh) + len(b.sh) - inter) >= c.threshold


def earlier_snapshot_wins(docs: list[Doc], snapshots: int, keep: str = "longest",
                          threshold: float = 0.8) -> dict[str, tuple[str, str | None]]:
    """id -> (verdict, dup_of) for every document: ``kept``, ``exact_duplicate``, ``near_duplicate`` or
    ``duplicate_of_corpus`` (exact or near), under the rule of the module docstring."""
    stage = NearDedup(NearDedupConfig(threshold=threshold, keep=keep))  # type: ignore[arg-type]
    hashed(docs, stage)
    out: dict[str, tuple[str, str | None]] = {}
    corpus: list[Doc] = []  # K_<i in (snapshot, shard order): the precedence order of corpus documents
    for s in range(snapshots):
        new = sorted((d for d in docs if d.snapshot == s), key=lambda d: d.order)
        # exact
        first_corpus: dict[int, Doc] = {}
        for d in corpus:
            first_corpus.setdefault(d.hash, d)
        survivors, seen = [], {}
        for d in new:
            if d.hash in first_corpus:
                out[d.id] = ("duplicate_of_corpus", first_corpus[d.hash].id)
            elif d.hash in seen:
                out[d.id] = ("exact_duplicate", seen[d.hash].id)
            else:
                seen[d.hash] = d
                survivors.append(d)
        # near: union-find over corpus + survivors, edges with at least one new end
        nodes = corpus + survivors
        parent = list(range(len(nodes)))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for j in range(len(corpus), len(nodes)):
            for i in range(j):
                if similar(nodes[i], nodes[j], stage):
                    ri, rj = find(i), find(j)
                    parent[max(ri, rj)] = min(ri, rj)
        comps: dict[int, list[int]] = {}
        for i in range(len(nodes)):
            comps.setdefault(find(i), []).append(i)
        kept: list[Doc] = []
        for members in comps.values():
            olds = [i for i in members if i < len(corpus)]
            news = [nodes[i] for i in members if i >= len(corpus)]
            if olds:
                for d in news:
                    out[d.id] = ("duplicate_of_corpus", nodes[min(olds)].id)
                continue
            if keep == "longest":
                best = min(news, key=lambda d: (-len(d.text), d.order))
            else:
                best = min(news, key=lambda d: d.order)
            for d in news:
                out[d.id] = ("kept", None) if d is best else ("near_duplicate", best.id)
            kept.append(best)
        corpus += sorted(kept, key=lambda d: d.order)  # this snapshot's shard order is its input order
    return out
