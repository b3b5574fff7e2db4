"""Exact-Jaccard oracle for near-dedup settings: all pairs, exact shingle sets, no sampling.

Used by ``benchmarks/dedup_accuracy.py`` and the tests; also handy to pick a threshold on a
sample of one's own corpus. All-pairs intersections come from one sparse product ``X @ X.T``
(documents x shingles), so a few thousand documents take seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from curation.stages.dedup.minhash import shingle_strings


def jaccard_pairs(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` sharing at least one shingle, with its exact Jaccard similarity."""
    sets = shingle_strings(pa.array(list(texts), pa.large_string()), ngram)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for sh in s:
            rows.append(i)
            cols.append(vocab.setdefault(sh, len(vocab)))
    x = sp.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(sets), max(1, len(vocab))))
    inter = sp.triu(x @ x.T, k=1).tocoo()
    sizes = np.array([len(s) for s in sets], dtype=np.int64)
    union = sizes[inter.row] + sizes[inter.col] - inter.data
    return inter.row.astype(np.int64), inter.col.astype(np.int64), inter.data / union


def oracle_clusters(n_docs: int, i: np.ndarray, j: np.ndarray, jac: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster label per document: connected components of pairs with Jaccard >= threshold."""
    sel = jac >= threshold
    g = sp.coo_matrix((np.ones(int(sel.sum())), (i[sel], j[sel])), shape=(n_docs, n_docs))
    return connected_components(g, directed=False)[1]


def oracle_stars(n_docs: int, i: np.ndarray, j: np.ndarray, jac: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster label per document under the star rule over all pairs, in input order: a document
    joins the earliest centre before it with Jaccard >= threshold, else it is a centre (its own
    label). ``near_dedup_v1`` with ``clustering: star, keep: first`` approximates it (it compares
    only LSH candidates within a component)."""
    sel = jac >= threshold
    lo, hi = np.minimum(i[sel], j[sel]), np.maximum(i[sel], j[sel])
    order = np.lexsort((lo, hi))  # by later document, then earlier
    lo, hi = lo[order], hi[order]
    starts = np.searchsorted(hi, np.arange(n_docs + 1))
    label = np.arange(n_docs)
    for b in range(n_docs):
        for a in lo[starts[b]:starts[b + 1]].tolist():
            if label[a] == a:  # a is a centre (a < b: decided already)
                label[b] = a
                break
    return label


def _same_cluster_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], len(labels)]):
        members = sorted(order[s:e].tolist())
        pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
    return pairs


@dataclass
class Accuracy:
    precision: float  # of same-cluster pairs the stage made, the share the oracle also makes
    recall: float  # of same-cluster pairs the oracle makes, the share the stage also makes
    pairs_true: int
    pairs_found: int
    removed_true: int  # documents the oracle would drop (cluster size - 1, summed)
    removed_found: int
    # document level, each cluster keeping its first member (input order): of the documents the
    # stage drops, the share the oracle also drops, and the converse
    removal_precision: float = 1.0
    removal_recall: float = 1.0


def _removed(labels: np.ndarray) -> np.ndarray:
    """Documents that are not the first (lowest index) of their cluster."""
    first = np.full(int(labels.max()) + 1 if len(labels) else 0, len(labels), dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(labels)))
    return first[labels] != np.arange(len(labels))


def cluster_accuracy(truth: np.ndarray, found: np.ndarray) -> Accuracy:
    """Pairwise precision and recall of clusterings given as one label per document."""
    t, f = _same_cluster_pairs(truth), _same_cluster_pairs(found)
    both = len(t & f)
    rt, rf = _removed(truth), _removed(found)
    hit = int((rt & rf).sum())
    return Accuracy(precision=both / len(f) if f else 1.0, recall=both / len(t) if t else 1.0,
                    pairs_true=len(t), pairs_found=len(f),
                    removed_true=len(truth) - len(np.unique(truth)), removed_found=len(found) - len(np.unique(found)),
                    removal_precision=hit / rf.sum() if rf.any() else 1.0,
                    removal_recall=hit / rt.sum() if rt.any() else 1.0)
