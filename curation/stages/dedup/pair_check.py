"""Verification of MinHash candidate pairs: a signature estimate where it is decisive, exact Jaccard
of the shingle sets where it is not.

Why: clusters are connected components, so one accepted pair below the threshold merges two whole
clusters (``|A| x |B|`` wrong pairs), and the estimate from ``K`` permutations has standard
deviation ``sqrt(J (1 - J) / K)`` (0.035 at J = 0.8, K = 128): accepting on the estimate alone
admits pairs just under the threshold about as often as it rejects pairs just above it. Here a
pair is

* accepted when its estimate is at least ``z`` standard deviations above the threshold,
* rejected when it is at least ``z`` below (or the pair never became a candidate),
* otherwise accepted only if the exact Jaccard of its two shingle sets is >= the threshold,

so edges agree with an exact-Jaccard oracle up to a ``z``-sigma tail (``z = 4``: ~3e-5 per pair).

Costs: per band group of ``m`` distinct signatures, ``O(m^2 K)`` signature comparisons while
``m <= max_group`` (then ``O(m K)``: every signature against the first only), and at most
``FORESTS * (m - 1)`` exact checks (edge-disjoint spanning forests of the uncertain pairs, best
estimate first); each exact check is ``O(L log L)`` for ``L`` shingles of the two documents
(a document's set is sorted once per join group). The shingle hashes (4 bytes per word) travel in two joins
by node: one row per document with bands, plus one per pair to check.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.dedup.components import edges
from curation.stages.dedup.minhash import band_keys

#: Edge-disjoint spanning forests of uncertain pairs checked per band group: bounds the exact
#: checks to ``FORESTS * (m - 1)`` for ``m`` distinct signatures instead of ``m^2 / 2``.
FORESTS = 8

SCORED_SCHEMA = pa.schema([pa.field("a", pa.int64(), nullable=False), pa.field("b", pa.int64(), nullable=False),
                           pa.field("sure", pa.bool_(), nullable=False)])
SHINGLES = pa.list_(pa.uint32())
CHECK_SCHEMA = pa.schema([pa.field("node", pa.int64(), nullable=False),
                          pa.field("other", pa.int64(), nullable=False),  # -1 on a document's shingle row
                          pa.field("sh", SHINGLES)])


def agreement_bounds(threshold: float, num_perm: int, sigmas: float) -> tuple[int, int]:
    """``(lo, hi)`` in agreeing permutations: below ``lo`` reject, at or above ``hi`` accept, in
    between check exactly."""
    sd = math.sqrt(threshold * (1.0 - threshold) / num_perm)
    lo = max(1, math.ceil((threshold - sigmas * sd) * num_perm - 1e-9))
    # Identical signatures are always accepted: P(all K agree | J < threshold) < threshold^K.
    hi = min(num_perm, math.ceil((threshold + sigmas * sd) * num_perm - 1e-9))
    return lo, hi


def scored(a: np.ndarray, b: np.ndarray, sure: np.ndarray) -> pa.Table:
    return pa.table({"a": pa.array(a, pa.int64()), "b": pa.array(b, pa.int64()), "sure": pa.array(sure, pa.bool_())},
                    schema=SCORED_SCHEMA)


def group_pairs(node: np.ndarray, sig: np.ndarray, k: int, lo: int, hi: int,
                max_group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(a, b, sure)`` among one band group's members (``node`` sorted; ``sig``: ``k``
    signature values then the shingle set's hash): a spanning forest of the accepted pairs
    (``sure``) and the uncertain pairs between its trees (to check)."""
    empty = np.zeros(0, np.int64)
    if len(node) < 2:
        return empty, empty, np.zeros(0, bool)
    # Equal shingle sets are one vertex (exact copies make the largest groups). Told apart by the
    # set hash (the last two columns): a 1-d unique, where np.unique(axis=0) over whole rows cost
    # half of this function (measured on the benchmark corpus). The result does not depend on the
    # vertex order, except where the capped branch below picks "the first" vertex.
    set_hash = np.ascontiguousarray(sig[:, k:k + 2]).view(np.uint64).reshape(-1)
    _, first, inverse = np.unique(set_hash, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not (sig[first][inverse] == sig).all():  # a 64-bit collision (never seen): whole rows then
        _, first, inverse = np.unique(sig, axis=0, return_index=True, return_inverse=True)
    elif len(first) > max_group:  # that vertex stays the lexicographically smallest row, as before
        rank = np.empty(len(first), np.int64)
        rank[np.lexsort(sig[first].T[::-1])] = np.arange(len(first))
        first = first[np.argsort(rank)]
        inverse = rank[inverse]
    uniq = sig[first, :k]
    inverse = inverse.reshape(-1)
    rep = node[first]  # the smallest node of each distinct signature (node is sorted)
    same = rep[inverse] != node
    a_list, b_list, s_list = [node[same]], [rep[inverse][same]], [np.ones(int(same.sum()), bool)]
    m = len(uniq)
    if m > 1:
        if m <= max_group:
            agree = (uniq[:, None, :] == uniq[None, :, :]).sum(axis=2) if m <= 64 else _agreements(uniq)
        else:  # bounded work: every distinct signature against the first one only
            agree = np.zeros((m, m), dtype=np.int32)
            agree[0] = agree[:, 0] = (uniq == uniq[0]).sum(axis=1)
        # Documents of earlier runs (nodes < 0, ``corpus.py``) meet only through new ones: two vertices
        # holding corpus documents alone are never paired (those runs are final).
        only_corpus = np.ones(m, dtype=bool)
        only_corpus[inverse[node >= 0]] = False
        if only_corpus.sum() > 1:
            agree[np.ix_(only_corpus, only_corpus)] = 0
        labels = _matrix_components(agree >= hi)
        root = np.zeros(m, dtype=np.int64)
        for lab in np.unique(labels):
            members = np.flatnonzero(labels == lab)
            root[members] = rep[members].min()
        sel = rep != root
        a_list.append(rep[sel])
        b_list.append(root[sel])
        s_list.append(np.ones(int(sel.sum()), bool))
        ca, cb = _uncertain_links(agree, labels, rep, lo, hi)
        a_list.append(ca)
        b_list.append(cb)
        s_list.append(np.zeros(len(ca), bool))
    return np.concatenate(a_list), np.concatenate(b_list), np.concatenate(s_list)


def _uncertain_links(agree: np.ndarray, labels: np.ndarray, rep: np.ndarray, lo: int,
                     hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Uncertain pairs to check: ``FORESTS`` edge-disjoint spanning forests (Kruskal, best estimate
    first, ties by node) over the trees of accepted pairs, so at most ``FORESTS * (m - 1)``.

    One forest would do if every chosen pair passed; the spares keep a tree linked when its best
    pair turns out to be just under the threshold."""
    i, j = np.nonzero(np.triu((agree >= lo) & (agree < hi), k=1))
    keep = labels[i] != labels[j]
    i, j = i[keep], j[keep]
    if len(i) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((np.maximum(rep[i], rep[j]), np.minimum(rep[i], rep[j]), -agree[i, j]))
    i, j = i[order].tolist(), j[order].tolist()
    chosen = np.zeros(len(i), dtype=bool)
    for _ in range(FORESTS):
        parent = labels.tolist()  # every accepted tree starts as one set (its label is its root)

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        added = 0
        for k in range(len(i)):
            if chosen[k]:
                continue
            ri, rj = find(i[k]), find(j[k])
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
                chosen[k] = True
                added += 1
        if added == 0:  # the next forest would start from the same state and add nothing either
            break
    sel = np.flatnonzero(chosen)
    a, b = rep[np.array(i)[sel]], rep[np.array(j)[sel]]
    return np.maximum(a, b), np.minimum(a, b)


def _agreements(uniq: np.ndarray) -> np.ndarray:
    """Pairwise count of equal signature positions, one row at a time (bounded memory)."""
    m = len(uniq)
    out = np.empty((m, m), dtype=np.int32)
    for i in range(m):
        out[i] = (uniq == uniq[i]).sum(axis=1)
    return out


def _matrix_components(adj: np.ndarray) -> np.ndarray:
    """Component label (smallest member index) per vertex of a small dense adjacency matrix."""
    m = len(adj)
    adj = adj | np.eye(m, dtype=bool)
    labels = np.arange(m)
    while True:  # min-label propagation; converges in at most diameter steps
        new = np.where(adj, labels[None, :], m).min(axis=1)
        if np.array_equal(new, labels):
            return labels
        labels = new


# -- exact check: pairs meet the shingles of ``a``, then those of ``b`` (two joins by node) ------

def shingle_rows(node: np.ndarray, sh: pa.Array) -> pa.Table:
    return pa.table({"node": pa.array(node, pa.int64()), "other": pa.array(np.full(len(node), -1, np.int64)),
                     "sh": sh}, schema=CHECK_SCHEMA)


def pair_rows(t: pa.Table) -> pa.Table:
    """The uncertain pairs of a scored table, as join rows keyed by ``a``."""
    t = t.filter(pc.invert(t.column("sure")))
    return pa.table({"node": t.column("a"), "other": t.column("b"), "sh": pa.nulls(len(t), SHINGLES)},
                    schema=CHECK_SCHEMA)


def sure_edges(t: pa.Table) -> pa.Table:
    t = t.filter(t.column("sure"))
    return edges(t.column("a").to_numpy(), t.column("b").to_numpy())


def _split(t: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pair rows (deduplicated) and, for each, the row index of its node's shingle row."""
    node, other = t.column("node").to_numpy(), t.column("other").to_numpy()
    # -1 marks a shingle row; any other value is a pair's other end (corpus nodes are negative too).
    doc = np.flatnonzero(other == -1)
    pairs = np.flatnonzero(other != -1)
    if len(pairs):
        order = np.lexsort((other[pairs], node[pairs]))
        pairs = pairs[order]
        uniq = np.r_[True, (node[pairs][1:] != node[pairs][:-1]) | (other[pairs][1:] != other[pairs][:-1])]
        pairs = pairs[uniq]
    doc = doc[np.argsort(node[doc], kind="stable")]
    at = np.searchsorted(node[doc], node[pairs])
    ok = at < len(doc)
    ok[ok] = node[doc][at[ok]] == node[pairs][ok]
    if not ok.all():
        raise RuntimeError("near_dedup: a pair to verify names a node that has no shingle row")
    return node[pairs], other[pairs], pairs, doc[at] if len(pairs) else np.zeros(0, np.int64)


def _shingle_set(sh: pa.ChunkedArray, row: int) -> np.ndarray:
    return sh[row].values.to_numpy()  # stored sorted and unique (``minhash.shingle_sets``)


def carry_shingles(t: pa.Table) -> pa.Table:
    """Join 1: each pair row ``(a, b)`` takes ``a``'s shingle set and is re-keyed by ``b``."""
    a, b, _, src = _split(t)
    sh = t.column("sh")
    return pa.table({"node": pa.array(b, pa.int64()), "other": pa.array(a, pa.int64()),
                     "sh": sh.take(pa.array(src, pa.int64()))}, schema=CHECK_SCHEMA)


def exact_edges(threshold: float) -> Callable[[pa.Table], pa.Table]:
    """Join 2: each pair row ``(b, a, shingles of a)`` meets ``b``'s shingles; keep exact J >= threshold."""
    return _ExactEdges(threshold)


def exact_jaccard(sa: np.ndarray, sb: np.ndarray) -> float:
    """|A & B| / |A | B| of two sorted, distinct shingle-hash arrays (the oracle's expression:
    benchmarks and tests compare with ``>= threshold`` on exactly this value)."""
    if len(sa) == 0 or len(sb) == 0:
        return 1.0 if len(sa) == len(sb) else 0.0
    at = np.minimum(np.searchsorted(sb, sa), len(sb) - 1)
    inter = int((sb[at] == sa).sum())
    return inter / (len(sa) + len(sb) - inter)


class _ExactEdges:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, t: pa.Table) -> pa.Table:
        b, a, rows, src = _split(t)
        sh = t.column("sh")
        keep = np.zeros(len(b), dtype=bool)
        last, sb = -1, np.zeros(0, np.uint32)
        for k in range(len(b)):
            if src[k] != last:  # pairs are sorted by b: each b's set is built once
                last, sb = src[k], _shingle_set(sh, int(src[k]))
            keep[k] = exact_jaccard(_shingle_set(sh, int(rows[k])), sb) >= self.threshold
        return edges(a[keep], b[keep])


# -- star clustering: each dropped document verified against the member kept for it ---------------

def star_centres(node: np.ndarray, sig: np.ndarray, offsets: np.ndarray, values: np.ndarray, k: int, bands: int,
                 rows: int, seed: int, lo: int, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy star cover of one component, its members given in the declared order (``node``:
    documents of earlier runs, nodes < 0, first; ``sig``: ``k`` signature values then the shingle
    set's 64-bit hash as two uint32; member ``i``'s sorted shingle set is
    ``values[offsets[i]:offsets[i + 1]]``).

    Member ``i`` is dropped for the earliest centre ``c`` before it that *covers* it: ``c`` and ``i``
    share a band key (an LSH candidate pair), their signatures agree in at least ``lo`` of ``k``
    places (a decisive estimate below the threshold rejects, as in verification) and their exact
    Jaccard is >= ``threshold``. A member no centre covers becomes a centre; an earlier run's document
    always does (two of them are never compared: those runs are final).

    Returns each member's centre (its own index for a centre), the exact Jaccard to it (NaN for a
    centre) and the number of exact checks made. Work: per member, the centres sharing one of its
    ``bands`` keys (a dict of band key -> centres), one ``k``-wide comparison each, and an exact check
    (``O(L log L)``) per centre passing the estimate until one covers it; members with the shingle set
    of an earlier new member reuse its answer (exact copies cost a dict lookup)."""
    m = len(node)
    centre = np.arange(m, dtype=np.int64)
    jac = np.full(m, np.nan)
    keys = band_keys(sig[:, :k], bands, rows, seed).tolist() if m else []
    set_hash = np.ascontiguousarray(sig[:, k:k + 2]).view(np.uint64).reshape(-1).tolist() if m else []
    by_key: dict[int, list[int]] = {}  # band key -> centres holding it, in order
    first_of_set: dict[int, int] = {}  # set hash -> first new member with that set
    checks = 0
    for i in range(m):
        sa = values[offsets[i]:offsets[i + 1]]
        if node[i] >= 0:
            j = first_of_set.setdefault(set_hash[i], i)
            if j != i and np.array_equal(sa, values[offsets[j]:offsets[j + 1]]):
                # An equal set has the same Jaccard with every centre: the centres before j did not
                # cover j, so they do not cover i; j (a centre) or j's centre does, and is the earliest.
                centre[i], jac[i] = (j, 1.0) if centre[j] == j else (centre[j], jac[j])
                continue
            cands = sorted({c for key in keys[i] for c in by_key.get(key, ())})
            if cands:
                c = np.array(cands, np.int64)
                agree = (sig[c, :k] == sig[i, :k]).sum(axis=1)
                for c_ in c[agree >= lo].tolist():
                    sb = values[offsets[c_]:offsets[c_ + 1]]
                    if min(len(sa), len(sb)) / max(len(sa), len(sb)) < threshold:
                        continue  # J <= |small| / |large| (rounded alike): cannot reach the threshold
                    checks += 1
                    jj = exact_jaccard(sa, sb)
                    if jj >= threshold:
                        centre[i], jac[i] = c_, jj
                        break
                if centre[i] != i:
                    continue
        for key in keys[i]:
            by_key.setdefault(key, []).append(i)
    return centre, jac, checks
