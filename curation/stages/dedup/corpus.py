"""Earlier runs as the corpus of a new run (``against:``): their dedup indexes, joined bucket by bucket.

A dedup stage with ``against: [RUN_A, RUN_B]`` drops a new document that duplicates a document one
of those runs *kept*, reading only their indexes (``curation.io.dedup_index``), never their shards.

**Nodes.** The global steps number documents with int64 nodes; a new document is ``(task << 32) |
row`` (>= 0). A corpus document is ``CORPUS_BASE + (rank << 40) + pos``: negative, ``rank`` its run's
place in ``against``, ``pos`` its place in that run's shards. So every corpus node is smaller than
every new one, and among corpus nodes the earlier-listed run, then the earlier position, is smaller.
Connected components are labelled by their smallest node, and keepers are chosen longest-first with
corpus documents put first: a cluster with a corpus document is kept as the corpus document of the
earliest-listed run (then its first in shard order), and every new member of it is dropped.

**Joins.** A group of the stage's own keys (one bucket of band keys, of exact hashes, or of wanted
corpus documents) reads, for each earlier run, only the bucket files of the buckets it holds, and
keeps only the rows whose key it holds. Groups are keyed by ``bucket_of(key, MAX_BUCKETS)``
(``IB``), which refines every index's buckets, so each file is read by one group (or by a few when
an index has fewer buckets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa

from curation.io.dedup_index import MAX_BUCKETS, CorpusIndex, DedupIndexError, open_index
from curation.stages.frame import TableFn, bucket_of

#: Smallest int64; corpus nodes count up from it (see the module docstring).
CORPUS_BASE = -(1 << 63)
POS_BITS = 40
#: Column holding ``bucket_of(key, MAX_BUCKETS)`` on rows grouped for a corpus join.
IB = "_ib"
#: The "length" corpus documents get when keepers are chosen: more than any document has, so that
#: a cluster's corpus document is always its keeper (``keep: longest`` and ``first`` alike).
CORPUS_LEN = 1 << 62


@dataclass(frozen=True)
class IndexParams:
    """What an index was hashed with: exact-dedup's ``normalize``; near-dedup's permutations,
    shingle width, seed and band layout; ``shingles``: whether it holds the shingle sets that
    verified near-dedup checks uncertain pairs with."""

    normalize: str = "whitespace"
    num_perm: int = 128
    ngram: int = 5
    seed: int = 42
    bands: int = 16
    rows: int = 8
    shingles: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> IndexParams:
        names = {f.name: f.type for f in fields(cls)}
        if set(data) != set(names):
            raise DedupIndexError(f"{where}: dedup_index.params has keys {sorted(data)}, expected {sorted(names)}")
        for k, v in data.items():
            want = str if k == "normalize" else bool if k == "shingles" else int
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise DedupIndexError(f"{where}: dedup_index.params.{k} = {v!r} is not a {want.__name__}")
        return cls(**data)


def mismatch(have: IndexParams, need: dict[str, Any]) -> str | None:
    """How ``have`` differs from what a stage needs (``need``: field -> value; ``shingles: True`` is
    met by an index that has them), or None."""
    diff = [f"{k}={getattr(have, k)!r} (this stage: {v!r})" for k, v in need.items()
            if getattr(have, k) != v and not (k == "shingles" and not v)]
    return ", ".join(diff) or None


class Corpus:
    """The earlier runs a stage deduplicates against, in ``against`` order (their rank)."""

    def __init__(self, indexes: list[CorpusIndex], num_perm: int) -> None:
        self.indexes = indexes
        self.runs = [ix.run for ix in indexes]
        self.sig_width = num_perm + 2

    @classmethod
    def open(cls, against: list[str], need: dict[str, Any], stage: str, num_perm: int = 128) -> Corpus:
        """Open every run's index and check it was hashed as ``need`` says; ``DedupIndexError``
        naming the run otherwise. Reads manifests only, no index file."""
        indexes = []
        for run in against:
            ix = open_index(run)
            params = IndexParams.from_json(ix.params, f"against: {run}")
            diff = mismatch(params, need)
            if diff:
                raise DedupIndexError(
                    f"against: {run}: its dedup index was hashed with other parameters than {stage} uses: {diff}. "
                    f"Use the same parameters, or rebuild that run's index for this pipeline with "
                    f"`curate index {run} --like PIPELINE.yaml --force` (it reads that run's shards once)")
            indexes.append(ix)
        return cls(indexes, num_perm)

    def read_cost(self, kinds: tuple[str, ...]) -> dict[str, Any]:
        """What joining every bucket of ``kinds`` reads: total bytes per kind over all runs, and the
        largest single file (a group holds one file per run at a time)."""
        sizes = {k: [b for ix in self.indexes for b in ix.kind_files(k).values()] for k in kinds}
        return {"bytes_by_kind": {k: sum(v) for k, v in sizes.items()},
                "largest_file": max((b for v in sizes.values() for b in v), default=0)}

    def read_seconds_per_byte(self, kinds: tuple[str, ...], budget_bytes: int = 64 << 20) -> float | None:
        """Seconds per byte to read, verify and parse index files from storage, timed on the largest
        files of ``kinds`` (up to ``budget_bytes``); None when the indexes hold no such file."""
        files = sorted(((b, i, k, bucket) for i, ix in enumerate(self.indexes) for k in kinds
                        for bucket, b in ix.kind_files(k).items()), reverse=True)
        done_b, done_s = 0, 0.0
        for b, i, k, bucket in files:
            if done_b and done_b + b > budget_bytes:
                break
            nb, sec = self.indexes[i].timed_read(k, bucket)
            done_b, done_s = done_b + nb, done_s + sec
        return done_s / done_b if done_b else None

    # -- nodes ---------------------------------------------------------------------------------

    @staticmethod
    def nodes(rank: int, pos: np.ndarray) -> np.ndarray:
        """Corpus nodes of positions ``pos`` of the run at ``rank``."""
        return (np.int64(CORPUS_BASE) + (np.int64(rank) << np.int64(POS_BITS)) + pos.astype(np.int64))

    @staticmethod
    def rank_pos(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rank, pos) of corpus nodes (all < 0)."""
        u = nodes.astype(np.int64).view(np.uint64) - np.uint64(1 << 63)
        return (u >> np.uint64(POS_BITS)).astype(np.int64), (u & np.uint64((1 << POS_BITS) - 1)).astype(np.int64)

    def run_names(self, nodes: np.ndarray) -> list[str | None]:
        """The run (as ``against`` names it) of each node; None for new documents."""
        out: list[str | None] = [None] * len(nodes)
        corpus = np.flatnonzero(nodes < 0)
        if len(corpus):
            rank, _ = self.rank_pos(nodes[corpus])
            for i, r in zip(corpus.tolist(), rank.tolist()):
                out[i] = self.runs[r]
        return out

    # -- reading index rows ----------------------------------------------------------------------

    def exact_rows(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """``(hash, node, id)`` of the corpus documents whose exact hash is one of ``hashes``."""
        wanted = np.unique(hashes.astype(np.uint64))
        ib = np.unique(bucket_of(wanted, MAX_BUCKETS))
        out_h, out_n, out_id = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)], [pa.array([], pa.string())]
        for rank, ix in enumerate(self.indexes):
            for b in np.unique(ib % ix.buckets).tolist():
                t = ix.read_sorted("exact", b, "hash", ["hash", "pos", "id"])
                if t is None:
                    continue
                idx = _matches(t.column("hash").to_numpy(), wanted)
                out_h.append(t.column("hash").to_numpy()[idx])
                out_n.append(self.nodes(rank, t.column("pos").to_numpy()[idx]))
                out_id.append(t.column("id").take(pa.array(idx, pa.int64())).combine_chunks())
        return np.concatenate(out_h), np.concatenate(out_n), pa.concat_arrays(out_id)

    def band_rows(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(key, node)`` of the corpus band rows whose key is one of ``keys`` (int64 band keys)."""
        wanted = np.unique(keys)
        ib = np.unique(bucket_of(wanted, MAX_BUCKETS))
        out_k, out_n = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for rank, ix in enumerate(self.indexes):
            for b in np.unique(ib % ix.buckets).tolist():
                t = ix.read_sorted("bands", b, "key", ["key", "pos"])
                if t is None:
                    continue
                idx = _matches(t.column("key").to_numpy(), wanted)
                out_k.append(t.column("key").to_numpy()[idx])
                out_n.append(self.nodes(rank, t.column("pos").to_numpy()[idx]))
        return np.concatenate(out_k), np.concatenate(out_n)

    def docs_schema(self, kind: str) -> pa.Schema:
        node = pa.field("node", pa.int64(), nullable=False)
        if kind == "shingles":
            return pa.schema([node, pa.field("sh", pa.list_(pa.uint32()))])
        return pa.schema([node, pa.field("id", pa.string()), pa.field("sig", pa.list_(pa.uint32(), self.sig_width))])

    def doc_rows(self, groups: np.ndarray, nodes: np.ndarray, kind: str) -> pa.Table:
        """``node, id, sig`` (``kind`` docs) or ``node, sh`` (shingles) of the corpus documents ``nodes``,
        whose buckets are ``groups`` (``rank * MAX_BUCKETS + bucket``, as ``WantedDocs`` computes them)."""
        cols = ["pos", "sh"] if kind == "shingles" else ["pos", "id", "sig"]
        schema = self.docs_schema(kind)
        parts = [schema.empty_table()]
        rank_of, pos_of = self.rank_pos(nodes) if len(nodes) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        for g in np.unique(groups).tolist():
            rank, b = divmod(int(g), MAX_BUCKETS)
            t = self.indexes[rank].read(kind, b, cols)
            if t is None:
                raise DedupIndexError(f"dedup index of {self.runs[rank]}: bucket {b} of {kind} is missing although "
                                      "its bands name documents in it")
            wanted = np.unique(pos_of[(rank_of == rank) & (groups == g)])
            t = t.take(pa.array(_matches(t.column("pos").to_numpy(), wanted), pa.int64()))  # written in pos order
            if len(t) != len(wanted):
                raise DedupIndexError(f"dedup index of {self.runs[rank]}: {kind} bucket {b} lacks documents its "
                                      "bands name")
            node = self.nodes(rank, t.column("pos").to_numpy())
            parts.append(pa.table({"node": pa.array(node, pa.int64()), **{c: t.column(c) for c in cols[1:]}},
                                  schema=schema))
        return pa.concat_tables(parts)


def _matches(sorted_values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the elements of ``sorted_values`` equal to one of ``wanted``: two binary
    searches per wanted value, so a small group pays for its own keys, not for the file's rows."""
    lo = np.searchsorted(sorted_values, wanted, side="left")
    hi = np.searchsorted(sorted_values, wanted, side="right")
    n = hi - lo
    if n.sum() == 0:
        return np.zeros(0, np.int64)
    starts = np.repeat(lo, n)
    offsets = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    return np.sort(starts + offsets)


# -- Frame functions (picklable: they run on Ray workers) -----------------------------------------

class WithBucket:
    """Map: add ``IB`` = ``bucket_of(column, MAX_BUCKETS)``, the key a corpus join groups by."""

    def __init__(self, column: str) -> None:
        self.column = column

    def __call__(self, t: pa.Table) -> pa.Table:
        return t.append_column(IB, pa.array(bucket_of(t.column(self.column).to_numpy(), MAX_BUCKETS), pa.int32()))


class JoinBands:
    """Group (rows ``key, node, IB``): add the corpus band rows matching the group's keys as
    ``(key, corpus node)``, then apply ``then`` (candidate members, or star edges)."""

    def __init__(self, corpus: Corpus, then: TableFn) -> None:
        self.corpus, self.then = corpus, then

    def __call__(self, t: pa.Table) -> pa.Table:
        t = t.drop_columns([IB])
        keys, nodes = self.corpus.band_rows(t.column("key").to_numpy())
        extra = pa.table({"key": pa.array(keys, pa.int64()), "node": pa.array(nodes, pa.int64())}, schema=t.schema)
        return self.then(pa.concat_tables([t, extra]))


class WantedDocs:
    """Map: the distinct corpus nodes ``nodes_of`` finds in a block, as ``(_gk, node)`` rows, ``_gk``
    naming the docs bucket file that holds each (``rank * MAX_BUCKETS + bucket``)."""

    def __init__(self, corpus: Corpus, nodes_of: TableFn) -> None:
        self.corpus, self.nodes_of = corpus, nodes_of

    def __call__(self, t: pa.Table) -> pa.Table:
        found = self.nodes_of(t)
        nodes = found.column("node").to_numpy() if found.num_rows else np.zeros(0, np.int64)
        nodes = nodes[nodes < 0]
        rank, pos = Corpus.rank_pos(nodes) if len(nodes) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        buckets = np.array([ix.buckets for ix in self.corpus.indexes], np.int64)
        gk = np.zeros(len(nodes), np.int64)
        for r in np.unique(rank).tolist():
            sel = rank == r
            gk[sel] = r * MAX_BUCKETS + bucket_of(pos[sel], int(buckets[r]))
        return pa.table({"_gk": pa.array(gk, pa.int64()), "node": pa.array(nodes, pa.int64())})


class CorpusDocs:
    """Group (rows ``_gk, node``): read the docs (or shingles) bucket files the group names, once each,
    and pass the wanted documents (``Corpus.doc_rows``) to ``fn``, which shapes them as its join's rows."""

    def __init__(self, corpus: Corpus, kind: str, fn: Callable[[pa.Table], pa.Table]) -> None:
        self.corpus, self.kind, self.fn = corpus, kind, fn

    def __call__(self, t: pa.Table) -> pa.Table:
        groups, nodes = (t.column("_gk").to_numpy(), t.column("node").to_numpy()) if t.num_rows else (
            np.zeros(0, np.int64), np.zeros(0, np.int64))
        return self.fn(self.corpus.doc_rows(groups, nodes, self.kind))


def corpus_docs(frame: Any, corpus: Corpus, nodes_of: TableFn, kind: str, fn: Callable[[pa.Table], pa.Table]) -> Any:
    """A frame of ``fn``'s rows for the corpus documents ``nodes_of`` finds in ``frame`` (a ``Frame``):
    their ``docs`` (id, signature) or ``shingles``."""
    return frame.map(WantedDocs(corpus, nodes_of)).group("_gk", CorpusDocs(corpus, kind, fn))


def removal_counts(dup_run: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Documents removed per earlier run in one block of resolved rows (``dup_run`` not null)."""
    vals = [v for v in (dup_run.to_pylist()) if v is not None]
    out: dict[str, int] = {}
    for v in vals:
        out[v] = out.get(v, 0) + 1
    return out


_REPORT = pa.schema([pa.field("run", pa.string()), pa.field("n", pa.int64())])


def report_rows(t: pa.Table) -> pa.Table:
    """Map: removals per earlier run in one block of resolved rows."""
    counts = removal_counts(t.column("dup_run")) if "dup_run" in t.column_names else {}
    return pa.table({"run": list(counts), "n": list(counts.values())}, schema=_REPORT)


def corpus_report(runs: list[str], docs_in: int, counts: pa.Table) -> dict[str, Any]:
    """The stage's ``report``: documents that reached it and, per earlier run (in ``against`` order),
    how many of them that run's kept documents removed and their share."""
    total: dict[str, int] = {}
    if counts.num_columns and len(counts):
        for r, n in zip(counts.column("run").to_pylist(), counts.column("n").to_pylist()):
            total[r] = total.get(r, 0) + int(n)
    return {"docs_in": docs_in, "against": [
        {"run": r, "removed": total.get(r, 0), "share": round(total.get(r, 0) / docs_in, 4) if docs_in else 0.0}
        for r in runs]}


def against_overrides(data: dict[str, Any], runs: list[str]) -> list[str]:
    """``curate run --against RUN``: dotted overrides adding ``runs`` to the ``against`` list of every
    dedup stage of the pipeline mapping ``data`` (overrides already applied)."""
    import json

    out = []
    for i, s in enumerate(data.get("stages") or []):
        if isinstance(s, dict) and s.get("stage") in ("exact_dedup_v1", "near_dedup_v1"):
            have = s.get("against") or []
            have = list(have) if isinstance(have, list) else [have]
            out.append(f"stages.{i}.against={json.dumps(have + [r for r in runs if r not in have])}")
    if not out:
        raise DedupIndexError("--against needs an exact_dedup_v1 or near_dedup_v1 stage in the pipeline")
    return out
