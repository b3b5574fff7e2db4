"""Near-duplicate removal with MinHash LSH, as a global stage that runs on any ``Frame``.

Steps, with what each holds per document (B bands, K permutations):

1. **Keys** (shard pass, per batch): word n-gram shingles -> K MinHash values -> B band keys.
   Written to the task's work file: ``8 B`` bytes of band keys + 8 bytes of length per document,
   the signature with the shingle set's hash (``4 (K + 2)`` bytes; unverified too, for each
   removal's Jaccard), the audit's source name, and with ``verify`` the shingle hashes (4 bytes
   per word).
2. **Candidates** (shuffle 1, grouped by band key): every document becomes B rows
   ``(band_key, node)`` (16 bytes each); documents with an equal band key form a candidate group.
   Unverified, each member links to the group's smallest node (a star: k-1 edges for k members,
   not k^2 pairs). Verified (``verify.py``): the members get their signatures (a join by node),
   pairs with a decisive estimate are accepted or rejected, and the uncertain ones meet both
   shingle sets (two joins by node) and are kept if their exact Jaccard is >= the threshold.
3. **Components** (a few shuffles of the edge list, 16 bytes per edge): ``components.py``.
   Edges exist only for documents with a candidate, so this is proportional to duplicates.
4. **Keeper** (two shuffles): component labels are joined with each document's id, length,
   source and signature (by node), then grouped by component; the keeper is chosen by ``keep``
   (``longest``: most characters, ties by input order; ``first``: input order). Every member
   becomes a result row with ``dup_cluster`` (the keeper's id), ``dup_of`` (the keeper's id, null
   for the keeper) and ``jaccard``: the signature estimate of its Jaccard to the keeper (which,
   through transitivity, may be below the threshold; ``via`` says ``chain`` then, else ``direct``).
   The signatures ride along in this join, the only place where a member meets its keeper:
   ``4 (K + 2)`` more bytes per document in its first shuffle and per clustered document in the
   second. With ``clustering: star`` the members' shingle sets ride along too (4 bytes per word, as
   in the exact-check joins), and each component is cut into stars (``verify.star_centres``): in
   the same preference order, a member is dropped for the earliest centre that is an LSH candidate
   of it (a shared band, recomputed from the signatures) with exact Jaccard >= the threshold, else
   it becomes a centre and stays. Work per component is the candidate pairs between members and
   centres (one ``K``-wide comparison each) plus about one exact check per dropped member.
5. **Audit** (drop mode, ``max_source_removal_fraction`` set): per source (the ``source`` column,
   the input file; ``domain`` where it is empty), documents in and removed; a source losing a
   larger share fails the run (``MassRemovalError``) or, with ``on_mass_removal: warn``, is
   logged and recorded in the manifest's ``warnings``. Costs one pass over the keys and one over
   the result rows, each aggregated per block before anything reaches the driver.

Nodes are ``(task << 32) | row`` (int64), so input order is node order. No step gathers
documents in one process; a group holds at most one candidate bucket's rows or one component's
members. The driver gathers only node numbers (8 bytes per candidate document, bounded by
``FILTER_MAX_NODES``), so that the joins of steps 2 and 4 shuffle the documents they can match
instead of every document (``wanted_nodes``).

**Earlier runs** (``against``, ``corpus.py``): the band join of step 2 also reads the matching band
rows of each earlier run's index, whose documents (nodes below every new one) then take part in
verification and clustering like new ones, with their signatures and shingles read from the index;
pairs of two corpus documents are never formed (those runs are final). A cluster holding a corpus
document is kept as that document: its new members are dropped as ``duplicate_of_corpus``. Star
clusters put corpus documents first and make each a centre (with its shingle set read from the
index): a new member is dropped as ``duplicate_of_corpus`` only for a corpus document it is itself
close to, and stays (or is a centre for later new ones) otherwise.

Transitivity is the standard one (as datatrove, text-dedup; ``clustering: components``, the
default): A~B and B~C put A, B, C in one cluster even when J(A, C) is below the threshold. What
must hold is that every link is a real one: with ``verify`` (the default) a candidate pair whose
signature estimate is not decisive is checked by the exact Jaccard of its shingle sets
(``verify.py``), because a single pair just below the threshold joins two whole clusters.
``clustering: star`` drops only what is close to the document kept for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.config import check_choices
from curation.registry import register_stage
from curation.stages.base import StageResult, split
from curation.stages.dedup.audit import audit_source, count_by, enforce, over_limit, sum_by_source
from curation.stages.dedup.base import CORPUS_REASON
from curation.stages.dedup.components import connected_components, edges, run_starts
from curation.stages.dedup.corpus import (
    CORPUS_LEN, IB, Corpus, JoinBands, WantedDocs, WithBucket, corpus_docs, corpus_report, report_rows,
)
from curation.stages.dedup.exact import check_against, corpus_artifacts
from curation.stages.dedup.minhash import candidate_probability, minhash_columns, optimal_bands
from curation.stages.dedup.pair_check import (
    SHINGLES, agreement_bounds, carry_shingles, exact_edges, group_pairs, pair_rows, scored, shingle_rows,
    star_centres, sure_edges,
)
from curation.stages.frame import Frame, TableFn
from curation.stages.global_stage import GlobalStage, row_positions

log = logging.getLogger(__name__)

RESULT_SCHEMA = pa.schema(
    [
        pa.field("_task", pa.int32(), nullable=False),
        pa.field("_row", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("dup_of", pa.string()),  # null for the cluster's keeper
        pa.field("dup_cluster", pa.string(), nullable=False),
        pa.field("dup_cluster_size", pa.int64(), nullable=False),
        pa.field("jaccard", pa.float64()),  # estimated Jaccard to the keeper; null for the keeper
        pa.field("source", pa.string()),  # the audit's source (``source``, else ``domain``)
        pa.field("dup_run", pa.string()),  # the earlier run whose document is the keeper; null within the run
    ]
)

#: How many (removed, kept, jaccard) examples a mass-removal error or warning names per source.
EXAMPLES = 3


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
        max_source_removal_fraction: In ``drop`` mode, the largest share of one source's documents
            (those reaching this stage) that may be removed; ``null`` turns the check off. A source
            is the ``source`` column (the input file, relative to its glob root), or ``domain``
            where ``source`` is empty. Guards against a templated source vanishing silently.
        on_mass_removal: ``fail`` (the run stops with an error naming each source, its share and
            three example pairs; no manifest is written) or ``warn`` (logged, and recorded in the
            manifest's ``warnings``).
        seed: Seed of the hash functions (same seed, same signatures).
        num_buckets: Parallelism of the shuffles.
        against: Finished runs (folders or URLs) whose kept documents count as the corpus: a new
            document in a cluster with one of them is dropped as ``duplicate_of_corpus``. Read
            through their dedup indexes, which must be hashed with this stage's ``num_perm``,
            ``ngram``, ``seed`` and bands x rows (and hold shingle sets when ``verify``). List them
            oldest first: a cluster with documents of several is named after the earliest-listed.
        clustering: ``components`` keeps one document per connected component of verified pairs
            (a dropped document may be linked to its keeper only through a chain: its decision says
            ``via: chain`` when its estimated Jaccard to the keeper is below ``threshold``, else
            ``direct``). ``star`` splits each component into stars: in ``keep`` order (earlier
            runs' documents first), a document is dropped for the earliest centre it is an LSH
            candidate of with exact Jaccard >= ``threshold``, and otherwise becomes a centre and
            stays; every drop is ``via: direct`` with its exact Jaccard. Needs ``verify``; costs
            the members' shingle sets in the keeper join (``verify.star_centres``).
    """

    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    bands: int | None = None
    rows: int | None = None
    verify: bool = True
    verify_sigmas: float = 4.0
    max_group: int = 1000
    keep: Literal["longest", "first"] = "longest"
    mode: Literal["drop", "mark"] = "drop"
    max_source_removal_fraction: float | None = 0.5
    on_mass_removal: Literal["fail", "warn"] = "fail"
    seed: int = 42
    num_buckets: int = 64
    against: list[str] = field(default_factory=list)
    clustering: Literal["components", "star"] = "components"

    #: Left out of the fingerprint at these values (see ``ExactDedupConfig``): runs made before a key
    #: existed keep their fingerprints.
    FINGERPRINT_DEFAULTS: ClassVar[dict[str, Any]] = {"against": [], "clustering": "components"}

    def __post_init__(self) -> None:
        check_choices(self)
        check_against(self.against)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.clustering == "star" and not self.verify:
            raise ValueError("clustering: star needs verify: true (it checks each drop on the shingle sets)")
        if self.verify_sigmas < 0:
            raise ValueError(f"verify_sigmas must be >= 0, got {self.verify_sigmas}")
        if self.num_perm < 2 or self.ngram < 1 or self.num_buckets < 1:
            raise ValueError("num_perm >= 2, ngram >= 1 and num_buckets >= 1 are required")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        frac = self.max_source_removal_fraction
        if frac is not None and not 0.0 <= frac <= 1.0:
            raise ValueError(f"max_source_removal_fraction must be in [0, 1] or null, got {frac}")


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

    artifact_keys = ("against.*",)

    def index_needs(self) -> dict[str, Any]:
        """What an earlier run's index must have been hashed with for this stage to read it."""
        c = self.config
        return {"num_perm": c.num_perm, "ngram": c.ngram, "seed": c.seed, "bands": self.bands, "rows": self.rows,
                "shingles": c.verify}

    @property
    def corpus(self) -> Corpus | None:
        """The earlier runs' indexes (opened and checked on first use, in the driver), or None."""
        if not self.config.against:
            return None
        if "_corpus" not in self.__dict__:
            self.__dict__["_corpus"] = Corpus.open(self.config.against, self.index_needs(), self.name,
                                                   self.config.num_perm)
        return self.__dict__["_corpus"]

    @property
    def corpus_reads(self) -> dict[str, int]:
        """The index kinds a join against earlier runs reads, and how many times each at most: band
        keys once; signatures for two joins (members, then keepers), a second read when they
        exceed the index cache; shingle sets when uncertain pairs are verified."""
        reads = {"bands": 1, "docs": 2}
        if self.config.verify:
            reads["shingles"] = 1
        return reads

    def artifacts(self) -> dict[str, str]:
        """As ``ExactDedup.artifacts``: the earlier runs' manifests, checked before the first pass."""
        _ = self.corpus
        return corpus_artifacts(self.config.against)

    def s_curve(self) -> dict[float, float]:
        """P(candidate) at a few Jaccard values, for the log and the run stats."""
        return {j: round(candidate_probability(j, self.bands, self.rows), 4) for j in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)}

    def describe(self) -> str:
        curve = ", ".join(f"J={j}: {p:.3f}" for j, p in self.s_curve().items())
        lo, hi = self._bounds()
        k = self.config.num_perm
        verify = (f"verified: estimated J >= {hi / k:.3f} accepted, < {lo / k:.3f} rejected, exact Jaccard between"
                  if self.config.verify else "unverified")
        against = f"; against {len(self.config.against)} earlier run(s)" if self.config.against else ""
        star = "; star clusters (each drop exact Jaccard >= threshold with its kept document)" \
            if self._star else ""
        return (f"near_dedup: {self.bands} bands x {self.rows} rows of {self.config.num_perm} permutations, "
                f"{self.config.ngram}-gram words, threshold {self.config.threshold}, {verify}; "
                f"P(candidate): {curve}{against}{star}")

    # -- shard pass ---------------------------------------------------------------------------

    def key_columns(self) -> dict[str, pa.DataType]:
        # The signature is kept unverified too: the keeper join estimates each removal's Jaccard.
        cols = {"_nd_bands": pa.list_(pa.uint64()), "_nd_len": pa.int64(), "_nd_src": pa.string(),
                "_nd_sig": pa.list_(pa.uint32(), self._sig_width())}
        if self.config.verify:
            cols["_nd_sh"] = SHINGLES
        return cols

    def add_keys(self, batch: pa.Table) -> pa.Table:
        c = self.config
        bands, sigs, sets = minhash_columns(batch.column("text").combine_chunks(), c.num_perm, c.ngram, c.seed,
                                            self.bands, self.rows, c.verify)
        batch = (batch.append_column("_nd_bands", bands).append_column("_nd_len", batch.column("n_chars"))
                 .append_column("_nd_src", audit_source(batch)).append_column("_nd_sig", sigs))
        if sets is not None:
            batch = batch.append_column("_nd_sh", sets)
        return batch

    # -- global step --------------------------------------------------------------------------

    def run_global(self, keys: Frame) -> Frame:
        log.info(self.describe())
        corpus = self.corpus
        members = keys.map(_explode)

        def by_band(fn: TableFn) -> Frame:
            """``fn`` per group of equal band keys; with a corpus, the groups get its matching band rows."""
            if corpus is None:
                return members.group("key", fn)
            return members.map(WithBucket("key")).group(IB, JoinBands(corpus, fn))

        if self.config.verify:
            grouped = by_band(_candidate_members).materialize()
            # Each join by node below takes only the documents it can match (see wanted_nodes).
            sig_rows = keys.map(OnlyNodes(wanted_nodes(grouped, _member_nodes), self._sig_rows))
            if corpus is not None:
                sig_rows = sig_rows.union(corpus_docs(grouped, corpus, _member_nodes, "docs", self._corpus_sig_rows))
            with_sig = grouped.map(self._as_join_rows).union(sig_rows).group("node", _attach_sig)
            pairs = with_sig.group("key", self._scored_pairs).materialize()
            docs = keys.map(OnlyNodes(wanted_nodes(pairs, _uncertain_nodes), _shingle_rows))
            if corpus is not None:  # read twice below: materialised so the index is read once
                docs = docs.union(corpus_docs(pairs, corpus, _uncertain_nodes, "shingles", _corpus_shingle_rows)).materialize()
            carried = pairs.map(pair_rows).union(docs).group("node", carry_shingles)
            checked = carried.union(docs).group("node", exact_edges(self.config.threshold))
            candidates = pairs.map(sure_edges).union(checked)
        else:
            candidates = by_band(_star_edges)
        stars = connected_components(candidates)
        info = keys.map(OnlyNodes(wanted_nodes(stars, _edge_nodes), self._node_info))
        if corpus is not None and self._star:  # the corpus documents' shingle sets too, for the exact checks
            info = info.union(stars.map(WantedDocs(corpus, _edge_nodes)).group(
                "_gk", _CorpusDocsAndShingles(corpus, self._corpus_info_rows)))
        elif corpus is not None:
            info = info.union(corpus_docs(stars, corpus, _edge_nodes, "docs", self._corpus_info_rows))
        labels = stars.map(self._label_rows)
        joined = info.union(labels).group("node", _attach_label)
        result = joined.group("label", self._choose_keepers)
        audit = self.config.max_source_removal_fraction is not None and self.config.mode == "drop"
        report = corpus is not None and self.config.mode == "drop"  # (mark mode removes nothing)
        if audit or report:
            result = result.materialize()  # read twice: by the audit or report, then by the executor's write
        if report:
            self.report.update(corpus_report(corpus.runs, keys.count(), result.map(report_rows).collect()))
        if audit:
            self._audit(keys, result)
        return result

    # Audit: a source losing more than max_source_removal_fraction of its documents.

    def _audit(self, keys: Frame, result: Frame) -> None:
        docs_in = sum_by_source(keys.map(_source_counts).collect())
        removed = sum_by_source(result.map(_removal_counts).collect())
        frac = self.config.max_source_removal_fraction
        assert frac is not None
        over = over_limit(docs_in, removed, frac)
        if not over:
            return
        examples = _examples(result.map(_first_removals).collect())
        by_run = _sum_by_run(result.map(_removal_runs).collect()) if self.config.against else {}
        findings = [{"source": s, "docs_in": docs_in[s], "removed": removed[s], "share": round(share, 4),
                     "examples": examples.get(s, []), **({"by_run": by_run[s]} if s in by_run else {})}
                    for share, s in over]
        lines = "; ".join(
            f"source {f['source']!r} loses {f['removed']} of {f['docs_in']} documents ({100 * f['share']:.1f}%)"
            + ("" if "by_run" not in f else " (" + ", ".join(f"{n} as duplicates of {r or 'this run'}"
                                                            for r, n in f["by_run"].items()) + ")")
            + ", e.g. " + ", ".join(f"{r} -> {k} (J~{j:.3f})" for r, k, j in f["examples"]) for f in findings)
        enforce(self, frac, findings, f"{self.name}: near-duplicate removal over max_source_removal_fraction={frac} "
                                      f"in {len(findings)} source(s): {lines}")

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

    def _corpus_sig_rows(self, t: pa.Table) -> pa.Table:
        """Signature rows of corpus documents (``CorpusDocs``), as ``_sig_rows`` makes them for new ones."""
        return pa.table({"key": pa.nulls(len(t), pa.int64()), "node": t.column("node"), "sig": t.column("sig")},
                        schema=self._join_schema())

    def _corpus_info_rows(self, t: pa.Table) -> pa.Table:
        """Info rows of corpus documents (as ``_node_info``), with a length that makes them keepers (and,
        for star clusters, their shingle sets)."""
        n = len(t)
        sh = {"sh": t.column("sh")} if self._star else {}
        return pa.table({"node": t.column("node"), "label": pa.array(np.full(n, -1, np.int64)), "id": t.column("id"),
                         "len": pa.array(np.full(n, CORPUS_LEN, np.int64)), "src": pa.nulls(n, pa.string()),
                         "sig": t.column("sig"), **sh}, schema=self._info_schema())

    def _scored_pairs(self, t: pa.Table) -> pa.Table:
        """Per band group: accepted pairs (a spanning forest) and uncertain pairs to check exactly.
        Two corpus documents (nodes < 0) are never paired: only a group's other pairs are scored."""
        k = self.config.num_perm
        key, node = t.column("key").to_numpy(), t.column("node").to_numpy()
        sig = t.column("sig").combine_chunks().flatten().to_numpy().reshape(-1, self._sig_width())
        order = np.lexsort((node, key))
        key, node, sig = key[order], node[order], sig[order]
        first = run_starts(key)
        starts = np.flatnonzero(first)
        sizes = np.diff(np.r_[starts, len(key)])
        lo, hi = self._bounds()
        # Pairs (most groups) in one vectorised comparison; larger groups one by one.
        pair_starts = starts[sizes == 2]
        agree = (sig[pair_starts, :k] == sig[pair_starts + 1, :k]).sum(axis=1)
        ok = agree >= lo
        # (a group of two always has a new document: corpus rows join only keys new documents have)
        out_a, out_b, out_s = [node[pair_starts + 1][ok]], [node[pair_starts][ok]], [agree[ok] >= hi]
        for s, e in zip(starts[sizes > 2], starts[sizes > 2] + sizes[sizes > 2]):
            a, b, sure = group_pairs(node[s:e], sig[s:e], k, lo, hi, self.config.max_group)
            out_a.append(a)
            out_b.append(b)
            out_s.append(sure)
        return scored(np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s))

    def _bounds(self) -> tuple[int, int]:
        return agreement_bounds(self.config.threshold, self.config.num_perm, self.config.verify_sigmas)

    @property
    def _star(self) -> bool:
        return self.config.clustering == "star"

    def _info_schema(self) -> pa.Schema:
        # Star clusters check pairs exactly in the keeper group: the members bring their shingle sets.
        sh = [pa.field("sh", SHINGLES)] if self._star else []
        return pa.schema([
            pa.field("node", pa.int64(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),  # -1 on rows that carry the document's data
            pa.field("id", pa.string()),
            pa.field("len", pa.int64(), nullable=False),
            pa.field("src", pa.string()),
            pa.field("sig", pa.list_(pa.uint32(), self._sig_width())),
            *sh,
        ])

    def _node_info(self, t: pa.Table) -> pa.Table:
        length = t.column("_nd_len") if self.config.keep == "longest" else pa.array(np.zeros(len(t), np.int64))
        sh = {"sh": t.column("_nd_sh")} if self._star else {}
        return pa.table({"node": pa.array(_node(t), pa.int64()), "label": pa.array(np.full(len(t), -1, np.int64)),
                         "id": t.column("id"), "len": length, "src": t.column("_nd_src"), "sig": t.column("_nd_sig"),
                         **sh}, schema=self._info_schema())

    def _label_rows(self, t: pa.Table) -> pa.Table:
        """From star edges ``(node, centre)``: a label row for every node and for every centre."""
        a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
        n = len(a) + len(b)
        sh = {"sh": pa.nulls(n, SHINGLES)} if self._star else {}
        return pa.table({"node": pa.array(np.concatenate([a, b]), pa.int64()),
                         "label": pa.array(np.concatenate([b, b]), pa.int64()),
                         "id": pa.nulls(n, pa.string()), "len": pa.array(np.full(n, -1, np.int64)),
                         "src": pa.nulls(n, pa.string()),
                         "sig": pa.nulls(n, pa.list_(pa.uint32(), self._sig_width())), **sh},
                        schema=self._info_schema())

    def _choose_keepers(self, t: pa.Table) -> pa.Table:
        """Per component (a group of label rows with their documents' data): who stays, and for whom
        each other member is dropped."""
        node, label, length = (t.column(n).to_numpy() for n in ("node", "label", "len"))
        ids = np.array(t.column("id").to_pylist(), dtype=object)
        k = self.config.num_perm
        sig = t.column("sig").combine_chunks().flatten().to_numpy().reshape(-1, self._sig_width())
        # Order members of each cluster by preference (the declared order star clusters are built in):
        # corpus documents (CORPUS_LEN) first, then longest first (``keep: longest``), then input order.
        order = np.lexsort((node, -length, label))
        node, label, ids, sig = node[order], label[order], ids[order], sig[order]
        src = t.column("src").take(pa.array(order, pa.int64()))
        first = run_starts(label)
        starts, run_of = np.flatnonzero(first), np.cumsum(first) - 1
        if self._star:  # jaccard: exact, >= threshold for every drop (its via is "direct", see apply)
            keeper, jaccard = self._star_keepers(t.column("sh").take(pa.array(order, pa.int64())), node, sig, starts)
        else:
            keeper = starts[run_of]  # (the component's first member, by index into the sorted arrays)
            jaccard = (sig[:, :k] == sig[keeper, :k]).sum(axis=1) / k
        is_keeper = keeper == np.arange(len(node))
        sizes = np.bincount(keeper, minlength=len(node))[keeper]
        keeper_ids = ids[keeper]
        # Corpus documents (< 0) only name the keeper of their cluster: they are no row of this run.
        new = node >= 0
        dup_run = self.corpus.run_names(node[keeper][new]) if self.corpus is not None else None
        sel = pa.array(new)
        return pa.table(
            {
                "_task": pa.array(node[new] >> 32, pa.int32()),
                "_row": pa.array(node[new] & 0xFFFFFFFF, pa.int64()),
                "id": pa.array(ids[new], pa.string()),
                "dup_of": pa.array(np.where(is_keeper, None, keeper_ids)[new], pa.string()),
                "dup_cluster": pa.array(keeper_ids[new], pa.string()),
                "dup_cluster_size": pa.array(sizes[new], pa.int64()),
                "jaccard": pa.array(jaccard[new], pa.float64(), mask=is_keeper[new]),
                "source": src.filter(sel),
                "dup_run": pa.array(dup_run, pa.string()) if dup_run is not None else pa.nulls(int(new.sum()),
                                                                                               pa.string()),
            },
            schema=RESULT_SCHEMA,
        )

    def _star_keepers(self, sh: pa.ChunkedArray, node: np.ndarray, sig: np.ndarray,
                      starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Star centres of each component (members sorted by component, then preference): per member,
        the index of its centre and the exact Jaccard to it (``verify.star_centres``)."""
        sh = sh.combine_chunks()
        if sh.null_count:
            raise RuntimeError("near_dedup: a clustered document has no shingle set (star clustering)")
        offsets = sh.offsets.to_numpy().astype(np.int64)
        values = sh.values.to_numpy()
        keeper = np.arange(len(node), dtype=np.int64)
        jaccard = np.full(len(node), np.nan)
        lo, _ = self._bounds()
        c = self.config
        for s, e in zip(starts.tolist(), np.r_[starts[1:], len(node)].tolist()):
            centre, jac, _ = star_centres(node[s:e], sig[s:e], offsets[s:e + 1], values, c.num_perm, self.bands,
                                          self.rows, c.seed, lo, c.threshold)
            keeper[s:e] = s + centre
            jaccard[s:e] = jac
        return keeper, jaccard

    # -- applying pass ------------------------------------------------------------------------

    def via(self, jaccard: float) -> str:
        """A drop is ``direct`` when its Jaccard to the document kept for it (the signature estimate
        with ``components``; the exact value with ``star``, always >= threshold) reaches the
        threshold, else ``chain``: in the cluster only through other members. Derived here from the
        ``jaccard`` result column and the threshold."""
        return "direct" if jaccard >= self.config.threshold else "chain"

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
        jaccard: list[float | None] = [None] * n
        dup_run: list[str | None] = [None] * n
        if found.any():
            hit = pa.array(pos[found], pa.int64())
            cluster[found] = marks.column("dup_cluster").take(hit).to_pylist()
            size[found] = marks.column("dup_cluster_size").take(hit).to_numpy()
            for i, d in zip(np.flatnonzero(found), marks.column("dup_of").take(hit).to_pylist()):
                dup_of[i] = d
            for i, j in zip(np.flatnonzero(found), marks.column("jaccard").take(hit).to_pylist()):
                jaccard[i] = j
            for i, r in zip(np.flatnonzero(found), marks.column("dup_run").take(hit).to_pylist()):
                dup_run[i] = r
        kept = np.array([d is None for d in dup_of], dtype=bool)
        batch = (batch.append_column("dup_cluster", pa.array(cluster, pa.string()))
                 .append_column("dup_cluster_size", pa.array(size, pa.int64()))
                 .append_column("dup_kept", pa.array(kept)))
        if self.config.mode == "mark":
            return split(batch, np.ones(n, dtype=bool), [None] * n)
        details = [None if k else {"dup_of": d, "dup_cluster_size": int(c),
                                   **({} if j is None else {"jaccard": round(j, 4), "via": self.via(j)}),
                                   **({} if r is None else {"run": r})}
                   for k, d, c, j, r in zip(kept, dup_of, size, jaccard, dup_run)]
        reasons = [None if k else self.reason if r is None else CORPUS_REASON for k, r in zip(kept, dup_run)]
        return split(batch, kept, reasons, details)


def _node(t: pa.Table) -> np.ndarray:
    return (t.column("_task").to_numpy().astype(np.int64) << 32) | t.column("_row").to_numpy().astype(np.int64)


#: Most node numbers (8 bytes each) the driver gathers to narrow a join (128 MB); above it the
#: join takes every document, as it would without the narrowing.
FILTER_MAX_NODES = 16_000_000


def wanted_nodes(frame: Frame, nodes_of: TableFn) -> np.ndarray | None:
    """The sorted distinct nodes that ``nodes_of`` finds in ``frame`` (a materialised, small frame:
    candidate memberships, scored pairs, component edges), or None when there are too many.

    Three joins by node would otherwise shuffle every document's row although only a few can
    match: signatures (``4 (K + 2)`` bytes) for candidate members, shingle sets (4 bytes per word)
    for the ends of uncertain pairs, and signature, id and source for clustered documents. At 1M
    documents of the scale benchmark that is ~2.5 GB through the shuffles for ~0.3 GB matched.
    Gathering the wanted nodes in the driver costs 8 bytes per candidate document, never more
    than ``FILTER_MAX_NODES`` of them; with each block made distinct first, a duplicate-heavy
    input still sends at most one row per node and block."""
    if frame.count() > 4 * FILTER_MAX_NODES:  # rows, before distinct: decide before gathering
        return None
    found = frame.map(nodes_of).collect()
    has = found.num_columns > 0 and found.num_rows > 0  # Ray gives a column-less table when empty
    nodes = np.unique(found.column("node").to_numpy()) if has else np.zeros(0, np.int64)
    return nodes if len(nodes) <= FILTER_MAX_NODES else None


def _distinct(*cols: np.ndarray) -> pa.Table:
    vals = np.unique(np.concatenate(cols)) if cols else np.zeros(0, np.int64)
    return pa.table({"node": pa.array(vals, pa.int64())})


def _member_nodes(t: pa.Table) -> pa.Table:
    return _distinct(t.column("node").to_numpy())


def _uncertain_nodes(t: pa.Table) -> pa.Table:
    t = t.filter(pc.invert(t.column("sure")))
    return _distinct(t.column("a").to_numpy(), t.column("b").to_numpy())


def _edge_nodes(t: pa.Table) -> pa.Table:
    return _distinct(t.column("a").to_numpy(), t.column("b").to_numpy())


class OnlyNodes:
    """``fn`` over the rows of a keys table whose node is in ``nodes`` (all rows when None)."""

    def __init__(self, nodes: np.ndarray | None, fn: TableFn) -> None:
        self.nodes, self.fn = nodes, fn

    def __call__(self, t: pa.Table) -> pa.Table:
        if self.nodes is not None:
            node = _node(t)
            at = np.minimum(np.searchsorted(self.nodes, node), max(len(self.nodes) - 1, 0))
            keep = (self.nodes[at] == node) if len(self.nodes) else np.zeros(len(node), bool)
            t = t.filter(pa.array(keep))
        return self.fn(t)


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
    first = run_starts(key)
    head = node[np.maximum.accumulate(np.where(first, np.arange(len(key)), 0))]
    sel = ~first & (node != head)
    return edges(node[sel], head[sel])


def _candidate_members(t: pa.Table) -> pa.Table:
    """The ``(key, node)`` rows of band keys shared by at least two documents."""
    key, node = t.column("key").to_numpy(), t.column("node").to_numpy()
    order = np.argsort(key, kind="stable")
    key, node = key[order], node[order]
    first = run_starts(key)
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


def _corpus_shingle_rows(t: pa.Table) -> pa.Table:
    """Shingle rows of corpus documents (``CorpusDocs``), as ``_shingle_rows`` makes them for new ones."""
    return shingle_rows(t.column("node").to_numpy(), t.column("sh"))


def _attach_label(t: pa.Table) -> pa.Table:
    """Per node with a label row: its id and length (from its info row) and its component label."""
    node, label = t.column("node").to_numpy(), t.column("label").to_numpy()
    is_info = label == -1  # (a label is a node, and corpus nodes are negative too: never -1)
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
    data = {c: t.column(c).take(take) for c in t.column_names if c not in ("node", "label")}  # (with star: sh)
    return pa.table({"node": pa.array(lab_nodes, pa.int64()), "label": pa.array(lab_values, pa.int64()), **data},
                    schema=t.schema)


class _CorpusDocsAndShingles:
    """Group (rows ``_gk, node`` of ``WantedDocs``): the wanted corpus documents' id and signature
    (``docs`` files) with their shingle sets (``shingles`` files, bucketed alike), passed to ``fn``
    as one table ``node, id, sig, sh``; star clusters check new documents against them exactly."""

    def __init__(self, corpus: Corpus, fn: TableFn) -> None:
        self.corpus, self.fn = corpus, fn

    def __call__(self, t: pa.Table) -> pa.Table:
        groups, nodes = (t.column("_gk").to_numpy(), t.column("node").to_numpy()) if t.num_rows else (
            np.zeros(0, np.int64), np.zeros(0, np.int64))
        docs = self.corpus.doc_rows(groups, nodes, "docs")
        sets = self.corpus.doc_rows(groups, nodes, "shingles")
        d_order = np.argsort(docs.column("node").to_numpy(), kind="stable")
        s_order = np.argsort(sets.column("node").to_numpy(), kind="stable")
        docs, sets = docs.take(pa.array(d_order, pa.int64())), sets.take(pa.array(s_order, pa.int64()))
        if not np.array_equal(docs.column("node").to_numpy(), sets.column("node").to_numpy()):
            raise RuntimeError("near_dedup: an earlier run's index has documents without shingle sets")
        return self.fn(docs.append_column("sh", sets.column("sh")))


def _source_counts(t: pa.Table) -> pa.Table:
    """Documents reaching the stage per source, for one block of keys."""
    return count_by(t.column("_nd_src"))


def _removal_counts(t: pa.Table) -> pa.Table:
    """Removed documents per source, for one block of resolved rows."""
    return count_by(t.filter(t.column("dup_of").is_valid()).column("source"))


def _removal_runs(t: pa.Table) -> pa.Table:
    """Removed documents per (source, earlier run or "" for this run) in one block of resolved rows."""
    t = t.filter(t.column("dup_of").is_valid())
    if len(t) == 0:
        return pa.table({"source": pa.array([], pa.string()), "run": pa.array([], pa.string()),
                         "n": pa.array([], pa.int64())})
    t = pa.table({"source": t.column("source"), "run": pc.fill_null(t.column("dup_run"), ""),
                  "n": pa.array(np.ones(len(t), np.int64))})
    agg = t.group_by(["source", "run"]).aggregate([("n", "sum")])
    return pa.table({"source": agg.column("source"), "run": agg.column("run"), "n": agg.column("n_sum")})


def _sum_by_run(t: pa.Table) -> dict[str, dict[str, int]]:
    """source -> {earlier run ("" for this run): removed}, over the blocks of ``_removal_runs``."""
    out: dict[str, dict[str, int]] = {}
    if t.num_columns == 0 or len(t) == 0:
        return out
    agg = t.group_by(["source", "run"]).aggregate([("n", "sum")])
    for s, r, n in zip(agg.column("source").to_pylist(), agg.column("run").to_pylist(), agg.column("n_sum").to_pylist()):
        out.setdefault(s, {})[r] = int(n)
    return {s: dict(sorted(v.items())) for s, v in out.items()}


def _first_removals(t: pa.Table) -> pa.Table:
    """Per source, the removed rows with the smallest ids in this block (candidate examples)."""
    t = t.filter(t.column("dup_of").is_valid()).select(["source", "id", "dup_of", "jaccard"])
    t = t.sort_by([("source", "ascending"), ("id", "ascending")])
    src = t.column("source").to_pylist()
    keep = [i for i in range(len(src)) if i < EXAMPLES or src[i - EXAMPLES] != src[i]]
    return t.take(pa.array(keep, pa.int64()))


def _examples(t: pa.Table) -> dict[str, list[tuple[str, str, float]]]:
    """``EXAMPLES`` (removed id, kept id, jaccard) per source, smallest removed ids first: the
    same whatever the block split."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    if t.num_columns == 0:
        return out
    for r in sorted(t.to_pylist(), key=lambda r: (r["source"], r["id"])):
        ex = out.setdefault(r["source"], [])
        if len(ex) < EXAMPLES:
            ex.append((r["id"], r["dup_of"], round(float(r["jaccard"]), 4)))
    return out
