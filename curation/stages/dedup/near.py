"""Near-duplicate removal with MinHash LSH, as a global stage that runs on any ``Frame``.

Steps, with what each holds per document (B bands, K permutations):

1. **Keys** (shard pass, per batch): word n-gram shingles -> K MinHash values -> B band keys.
   Written to the task's work file: ``8 B`` bytes of band keys + 8 bytes of length per document,
   and with ``verify`` the signature (``4 K`` bytes) and the shingle hashes (4 bytes per word).
2. **Candidates** (shuffle 1, grouped by band key): every document becomes B rows
   ``(band_key, node)`` (16 bytes each); documents with an equal band key form a candidate group.
   Unverified, each member links to the group's smallest node (a star: k-1 edges for k members,
   not k^2 pairs). Verified (``verify.py``): the members get their signatures (a join by node),
   pairs with a decisive estimate are accepted or rejected, and the uncertain ones meet both
   shingle sets (two joins by node) and are kept if their exact Jaccard is >= the threshold.
3. **Components** (a few shuffles of the edge list, 16 bytes per edge): ``components.py``.
   Edges exist only for documents with a candidate, so this is proportional to duplicates.
4. **Keeper** (two shuffles): component labels are joined with each document's id and length
   (by node), then grouped by component; the keeper is chosen by ``keep`` (``longest``: most
   characters, ties by input order; ``first``: input order). Every member becomes a result row
   with ``dup_cluster`` (the keeper's id) and ``dup_of`` (the keeper's id, null for the keeper).

Nodes are ``(task << 32) | row`` (int64), so input order is node order. No step gathers data in
one process; a group holds at most one candidate bucket's rows or one component's members.

Transitivity is the standard one (as datatrove, text-dedup): A~B and B~C put A, B, C in one
cluster even when J(A, C) is below the threshold. What must hold is that every link is a real
one: with ``verify`` (the default) a candidate pair whose signature estimate is not decisive is
checked by the exact Jaccard of its shingle sets (``verify.py``), because a single pair just below
the threshold joins two whole clusters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.registry import register_stage
from curation.stages.base import StageResult, split
from curation.stages.dedup.base import GlobalStage, row_positions
from curation.stages.dedup.components import connected_components, edges
from curation.stages.dedup.frame import Frame
from curation.stages.dedup.minhash import (
    band_keys, candidate_probability, optimal_bands, shingle_hashes, shingle_sets, signatures,
)
from curation.stages.dedup.verify import (
    SHINGLES, agreement_bounds, carry_shingles, exact_edges, group_pairs, pair_rows, scored, shingle_rows, sure_edges,
)

log = logging.getLogger(__name__)

RESULT_SCHEMA = pa.schema(
    [
        pa.field("_task", pa.int32(), nullable=False),
        pa.field("_row", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("dup_of", pa.string()),  # null for the cluster's keeper
        pa.field("dup_cluster", pa.string(), nullable=False),
        pa.field("dup_cluster_size", pa.int64(), nullable=False),
    ]
)

_NODE_INFO = pa.schema(
    [
        pa.field("node", pa.int64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),  # -1 on rows that carry id and length
        pa.field("id", pa.string()),
        pa.field("len", pa.int64(), nullable=False),
    ]
)


@dataclass(kw_only=True)
class NearDedupConfig:
    """MinHash LSH near-duplicate removal.

    Args:
        threshold: Target Jaccard similarity of word n-gram sets; bands x rows are chosen for it.
        num_perm: MinHash permutations (signature length).
        ngram: Words per shingle (text is lowercased, accents stripped, digits mapped to 0).
        bands, rows: Set both to override the choice from ``threshold``.
        verify: Keep a candidate pair only if its Jaccard is >= ``threshold``: decided by the
            signature estimate when it is ``verify_sigmas`` standard deviations away from the
            threshold, else by the exact Jaccard of the two shingle sets. Lets the bands favour
            recall without merging clusters through pairs below the threshold; costs one shuffle
            of the signatures and two of the shingle hashes (4 bytes per word).
        verify_sigmas: Width of the uncertain band, in standard deviations of the estimate
            (sqrt(J(1-J)/num_perm): 0.035 at J=0.8 with 128 permutations).
        max_group: Band groups larger than this (after merging identical signatures) are
            verified against their smallest member only, bounding the pairwise work.
        keep: Which member of a cluster stays: ``longest`` (ties by input order) or ``first``.
        mode: ``drop`` removes the other members; ``mark`` keeps every document and only sets
            ``dup_kept`` false on them.
        seed: Seed of the hash functions (same seed, same signatures).
        num_buckets: Parallelism of the shuffles.
    """

    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    bands: int | None = None
    rows: int | None = None
    verify: bool = True
    verify_sigmas: float = 4.0
    max_group: int = 1000
    keep: str = "longest"
    mode: str = "drop"
    seed: int = 42
    num_buckets: int = 64

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.verify_sigmas < 0:
            raise ValueError(f"verify_sigmas must be >= 0, got {self.verify_sigmas}")
        if self.num_perm < 2 or self.ngram < 1 or self.num_buckets < 1:
            raise ValueError("num_perm >= 2, ngram >= 1 and num_buckets >= 1 are required")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if self.keep not in ("longest", "first"):
            raise ValueError(f"keep: {self.keep!r} is not one of ['longest', 'first']")
        if self.mode not in ("drop", "mark"):
            raise ValueError(f"mode: {self.mode!r} is not one of ['drop', 'mark']")


@register_stage("near_dedup_v1")
class NearDedup(GlobalStage):
    """Clusters documents whose MinHash bands collide and keeps one per cluster."""

    Config = NearDedupConfig
    reason = "near_duplicate"
    result_schema = RESULT_SCHEMA

    def __init__(self, config: NearDedupConfig | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.num_buckets = c.num_buckets
        if c.bands is not None and c.rows is not None:
            self.bands, self.rows = c.bands, c.rows
        elif c.verify:
            # Verification removes false positives (at the cost of comparing signatures), so the
            # bands favour recall: e.g. 16 x 8 at 0.8, P(candidate | J=0.8) = 0.95.
            self.bands, self.rows = optimal_bands(c.threshold, c.num_perm, fp_weight=0.05, fn_weight=0.95)
        else:
            self.bands, self.rows = optimal_bands(c.threshold, c.num_perm)

    def s_curve(self) -> dict[float, float]:
        """P(candidate) at a few Jaccard values, for the log and the run stats."""
        return {j: round(candidate_probability(j, self.bands, self.rows), 4) for j in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)}

    def describe(self) -> str:
        curve = ", ".join(f"J={j}: {p:.3f}" for j, p in self.s_curve().items())
        lo, hi = self._bounds()
        k = self.config.num_perm
        verify = (f"verified: estimated J >= {hi / k:.3f} accepted, < {lo / k:.3f} rejected, exact Jaccard between"
                  if self.config.verify else "unverified")
        return (f"near_dedup: {self.bands} bands x {self.rows} rows of {self.config.num_perm} permutations, "
                f"{self.config.ngram}-gram words, threshold {self.config.threshold}, {verify}; "
                f"P(candidate): {curve}")

    # -- shard pass ---------------------------------------------------------------------------

    def key_columns(self) -> dict[str, pa.DataType]:
        cols = {"_nd_bands": pa.list_(pa.uint64()), "_nd_len": pa.int64()}
        if self.config.verify:
            cols["_nd_sig"] = pa.list_(pa.uint32(), self._sig_width())
            cols["_nd_sh"] = SHINGLES
        return cols

    def add_keys(self, batch: pa.Table) -> pa.Table:
        c = self.config
        texts = batch.column("text").combine_chunks()
        sh = shingle_hashes(texts, c.ngram)
        sig = signatures(sh, c.num_perm, c.seed)
        keys = band_keys(sig, self.bands, self.rows, c.seed)
        has = np.diff(sh.offsets) > 0
        offsets = np.arange(0, (len(batch) + 1) * self.bands, self.bands, dtype=np.int32)
        bands = pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys.reshape(-1), pa.uint64()),
                                         mask=pa.array(~has))  # no words: no bands, never a candidate
        batch = batch.append_column("_nd_bands", bands).append_column("_nd_len", batch.column("n_chars"))
        if c.verify:
            set_offsets, set_values, set_hash = shingle_sets(sh)
            # The signature travels with a 64-bit hash of the shingle set (two more uint32), so that
            # only documents with equal sets (not merely equal signatures) share a vertex in a group.
            wide = np.concatenate([sig, set_hash.view(np.uint32).reshape(-1, 2)], axis=1)
            sigs = pa.FixedSizeListArray.from_arrays(pa.array(wide.reshape(-1), pa.uint32()), self._sig_width())
            shingles = pa.ListArray.from_arrays(pa.array(set_offsets.astype(np.int32)), pa.array(set_values, pa.uint32()))
            batch = batch.append_column("_nd_sig", sigs).append_column("_nd_sh", shingles)
        return batch

    # -- global step --------------------------------------------------------------------------

    def run_global(self, keys: Frame) -> Frame:
        log.info(self.describe())
        members = keys.map(_explode)
        if self.config.verify:
            grouped = members.group("key", _candidate_members)
            with_sig = grouped.map(self._as_join_rows).union(keys.map(self._sig_rows)).group("node", _attach_sig)
            pairs = with_sig.group("key", self._scored_pairs).materialize()
            docs = keys.map(_shingle_rows)
            carried = pairs.map(pair_rows).union(docs).group("node", carry_shingles)
            checked = carried.union(docs).group("node", exact_edges(self.config.threshold))
            candidates = pairs.map(sure_edges).union(checked)
        else:
            candidates = members.group("key", _star_edges)
        stars = connected_components(candidates)
        info = keys.map(self._node_info)
        labels = stars.map(_label_rows)
        joined = info.union(labels).group("node", _attach_label)
        return joined.group("label", self._choose_keepers)

    # Verification: candidate memberships get their document's signature (a join by node), then
    # each band group links the members whose signatures agree, as a spanning forest.

    def _sig_width(self) -> int:
        return self.config.num_perm + 2  # signature, then the shingle set's hash

    def _join_schema(self) -> pa.Schema:
        return pa.schema([pa.field("key", pa.int64()), pa.field("node", pa.int64()),
                          pa.field("sig", pa.list_(pa.uint32(), self._sig_width()))])

    def _as_join_rows(self, t: pa.Table) -> pa.Table:
        return pa.table({"key": t.column("key"), "node": t.column("node"),
                         "sig": pa.nulls(len(t), pa.list_(pa.uint32(), self._sig_width()))}, schema=self._join_schema())

    def _sig_rows(self, t: pa.Table) -> pa.Table:
        has = t.column("_nd_bands").is_valid()
        t = t.filter(has)
        return pa.table({"key": pa.nulls(len(t), pa.int64()), "node": pa.array(_node(t), pa.int64()),
                         "sig": t.column("_nd_sig")}, schema=self._join_schema())

    def _scored_pairs(self, t: pa.Table) -> pa.Table:
        """Per band group: accepted pairs (a spanning forest) and uncertain pairs to check exactly."""
        k = self.config.num_perm
        key, node = t.column("key").to_numpy(), t.column("node").to_numpy()
        sig = t.column("sig").combine_chunks().flatten().to_numpy().reshape(-1, self._sig_width())
        order = np.lexsort((node, key))
        key, node, sig = key[order], node[order], sig[order]
        first = np.r_[True, key[1:] != key[:-1]]
        starts = np.flatnonzero(first)
        sizes = np.diff(np.r_[starts, len(key)])
        lo, hi = self._bounds()
        # Pairs (most groups) in one vectorised comparison; larger groups one by one.
        pair_starts = starts[sizes == 2]
        agree = (sig[pair_starts, :k] == sig[pair_starts + 1, :k]).sum(axis=1)
        ok = agree >= lo
        out_a, out_b, out_s = [node[pair_starts + 1][ok]], [node[pair_starts][ok]], [agree[ok] >= hi]
        for s, e in zip(starts[sizes > 2], starts[sizes > 2] + sizes[sizes > 2]):
            a, b, sure = group_pairs(node[s:e], sig[s:e], k, lo, hi, self.config.max_group)
            out_a.append(a)
            out_b.append(b)
            out_s.append(sure)
        return scored(np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s))

    def _bounds(self) -> tuple[int, int]:
        return agreement_bounds(self.config.threshold, self.config.num_perm, self.config.verify_sigmas)

    def _node_info(self, t: pa.Table) -> pa.Table:
        length = t.column("_nd_len") if self.config.keep == "longest" else pa.array(np.zeros(len(t), np.int64))
        return pa.table({"node": pa.array(_node(t), pa.int64()), "label": pa.array(np.full(len(t), -1, np.int64)),
                         "id": t.column("id"), "len": length}, schema=_NODE_INFO)

    def _choose_keepers(self, t: pa.Table) -> pa.Table:
        node, label, length = (t.column(n).to_numpy() for n in ("node", "label", "len"))
        ids = np.array(t.column("id").to_pylist(), dtype=object)
        # Order members of each cluster by preference: longest first, then input order.
        order = np.lexsort((node, -length, label))
        node, label, ids = node[order], label[order], ids[order]
        starts = np.flatnonzero(np.r_[True, label[1:] != label[:-1]])
        run_of = np.cumsum(np.r_[True, label[1:] != label[:-1]]) - 1
        sizes = np.diff(np.r_[starts, len(label)])
        keeper_ids = ids[starts][run_of]
        is_keeper = np.zeros(len(node), dtype=bool)
        is_keeper[starts] = True
        return pa.table(
            {
                "_task": pa.array(node >> 32, pa.int32()),
                "_row": pa.array(node & 0xFFFFFFFF, pa.int64()),
                "id": pa.array(ids, pa.string()),
                "dup_of": pa.array(np.where(is_keeper, None, keeper_ids), pa.string()),
                "dup_cluster": pa.array(keeper_ids, pa.string()),
                "dup_cluster_size": pa.array(sizes[run_of], pa.int64()),
            },
            schema=RESULT_SCHEMA,
        )

    # -- applying pass ------------------------------------------------------------------------

    def output_columns(self) -> dict[str, pa.DataType]:
        return {"dup_cluster": pa.string(), "dup_cluster_size": pa.int64(), "dup_kept": pa.bool_()}

    def apply(self, batch: pa.Table, marks: pa.Table) -> StageResult:
        n = len(batch)
        pos = row_positions(batch, marks)
        found = pos >= 0
        # A document in no cluster is its own cluster of one, and kept.
        cluster = np.array(batch.column("id").to_pylist(), dtype=object)
        size = np.ones(n, dtype=np.int64)
        dup_of: list[str | None] = [None] * n
        if found.any():
            hit = pa.array(pos[found], pa.int64())
            cluster[found] = marks.column("dup_cluster").take(hit).to_pylist()
            size[found] = marks.column("dup_cluster_size").take(hit).to_numpy()
            for i, d in zip(np.flatnonzero(found), marks.column("dup_of").take(hit).to_pylist()):
                dup_of[i] = d
        kept = np.array([d is None for d in dup_of], dtype=bool)
        batch = (batch.append_column("dup_cluster", pa.array(cluster, pa.string()))
                 .append_column("dup_cluster_size", pa.array(size, pa.int64()))
                 .append_column("dup_kept", pa.array(kept)))
        if self.config.mode == "mark":
            return split(batch, np.ones(n, dtype=bool), [None] * n)
        details = [None if k else {"dup_of": d, "dup_cluster_size": int(c)} for k, d, c in zip(kept, dup_of, size)]
        return split(batch, kept, [None if k else self.reason for k in kept], details)


def _node(t: pa.Table) -> np.ndarray:
    return (t.column("_task").to_numpy().astype(np.int64) << 32) | t.column("_row").to_numpy().astype(np.int64)


def _explode(t: pa.Table) -> pa.Table:
    """One ``(key, node)`` row per band of every document that has bands."""
    bands = t.column("_nd_bands").combine_chunks()
    counts = bands.value_lengths().fill_null(0).to_numpy()
    node = np.repeat(_node(t), counts)
    return pa.table({"key": pa.array(bands.flatten().to_numpy().view(np.int64), pa.int64()),
                     "node": pa.array(node, pa.int64())})


def _star_edges(t: pa.Table) -> pa.Table:
    """Within each set of rows with an equal band key, link every member to the smallest node."""
    key, node = t.column("key").to_numpy(), t.column("node").to_numpy()
    order = np.lexsort((node, key))
    key, node = key[order], node[order]
    first = np.r_[True, key[1:] != key[:-1]]
    head = node[np.maximum.accumulate(np.where(first, np.arange(len(key)), 0))]
    sel = ~first & (node != head)
    return edges(node[sel], head[sel])


def _candidate_members(t: pa.Table) -> pa.Table:
    """The ``(key, node)`` rows of band keys shared by at least two documents."""
    key, node = t.column("key").to_numpy(), t.column("node").to_numpy()
    order = np.argsort(key, kind="stable")
    key, node = key[order], node[order]
    first = np.r_[True, key[1:] != key[:-1]]
    run = np.cumsum(first) - 1
    sizes = np.bincount(run)
    sel = sizes[run] >= 2
    return pa.table({"key": pa.array(key[sel], pa.int64()), "node": pa.array(node[sel], pa.int64())})


def _attach_sig(t: pa.Table) -> pa.Table:
    """Membership rows of each node with that node's signature (from its signature row)."""
    key = t.column("key")
    is_sig = key.is_null().to_numpy(zero_copy_only=False)
    node = t.column("node").to_numpy()
    sig_idx = np.flatnonzero(is_sig)
    mem_idx = np.flatnonzero(~is_sig)
    order = np.argsort(node[sig_idx], kind="stable")
    at = np.searchsorted(node[sig_idx][order], node[mem_idx])
    at = np.minimum(at, max(0, len(order) - 1))
    ok = (len(order) > 0) & (node[sig_idx][order][at] == node[mem_idx]) if len(mem_idx) else np.zeros(0, bool)
    if not np.all(ok):
        raise RuntimeError("near_dedup: a candidate node has no signature row")
    take_sig = pa.array(sig_idx[order][at], pa.int64())
    return pa.table({"key": key.take(pa.array(mem_idx, pa.int64())), "node": pa.array(node[mem_idx], pa.int64()),
                     "sig": t.column("sig").take(take_sig)}, schema=t.schema)


def _shingle_rows(t: pa.Table) -> pa.Table:
    """Each document with bands: its node and shingle hashes (the exact check's join rows)."""
    t = t.filter(t.column("_nd_bands").is_valid())
    return shingle_rows(_node(t), t.column("_nd_sh"))


def _label_rows(t: pa.Table) -> pa.Table:
    """From star edges ``(node, centre)``: a label row for every node and for every centre."""
    a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
    n = len(a) + len(b)
    return pa.table({"node": pa.array(np.concatenate([a, b]), pa.int64()),
                     "label": pa.array(np.concatenate([b, b]), pa.int64()),
                     "id": pa.nulls(n, pa.string()), "len": pa.array(np.full(n, -1, np.int64))}, schema=_NODE_INFO)


def _attach_label(t: pa.Table) -> pa.Table:
    """Per node with a label row: its id and length (from its info row) and its component label."""
    node, label = t.column("node").to_numpy(), t.column("label").to_numpy()
    is_info = label < 0
    lab_nodes, first = np.unique(node[~is_info], return_index=True)  # all label rows of a node agree
    lab_values = label[~is_info][first]
    info_idx = np.flatnonzero(is_info)
    info_nodes = node[info_idx]
    order = np.argsort(info_nodes, kind="stable")
    at = np.searchsorted(info_nodes[order], lab_nodes)
    ok = at < len(order)
    ok[ok] = info_nodes[order][at[ok]] == lab_nodes[ok]
    if not ok.all():
        raise RuntimeError("near_dedup: a clustered node has no document row (work files changed during the run?)")
    take = pa.array(info_idx[order][at], pa.int64())
    return pa.table({"node": pa.array(lab_nodes, pa.int64()), "label": pa.array(lab_values, pa.int64()),
                     "id": t.column("id").take(take), "len": t.column("len").take(take)}, schema=_NODE_INFO)
