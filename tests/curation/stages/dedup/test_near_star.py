"""near_dedup_v1 ``clustering: star`` (every drop verified against the document kept for it) and the
``via`` of ``components`` drops: a hand-built chain, a brute-force reference under hypothesis (one
run and incremental ``against`` runs), bucket and row-order invariance, Ray against in process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.pipeline import PipelineConfig
from curation.stages.dedup.evaluate import oracle_stars
from curation.stages.dedup.near import NearDedup, NearDedupConfig
from curation.stages.dedup.pair_check import agreement_bounds, exact_jaccard
from curation.stages.frame import LocalFrame
from curation.stats import query
from tests.conftest import pipeline_dict
from tests.curation.stages.dedup.reference import Doc, hashed, similar
from tests.curation.stages.dedup.test_incremental import snapshot_runs, verdicts
from tests.curation.stages.dedup.test_near import keyed
from tests.curation.stages.filters.helpers import batch_of

THRESHOLD = 0.8
Verdicts = dict[str, tuple[str, str | None]]


def _word(k: int) -> str:
    """Letters only (near-dedup maps digits to 0)."""
    out = ""
    while True:
        k, r = divmod(k, 26)
        out += chr(97 + r)
        if k == 0:
            return out


def _edit(rng: np.random.Generator, words: list[str], positions: list[int]) -> list[str]:
    words = list(words)
    for p in positions:
        words[p] = _word(int(rng.integers(20_000, 40_000)))
    return words


def chains(seed: int, n_chains: int = 3) -> list[tuple[str, str]]:
    """(id, text): ``n_chains`` chains of 2-6 documents of 150 words, each an edit of 1-4 words of the
    one before (Jaccard with the previous about 0.95 down to 0.77: both sides of 0.8), with an exact
    copy now and then, plus two unrelated texts. Ends of a long chain are far apart: components put a
    whole chain in one cluster, stars split it."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str]] = []
    for c in range(n_chains):
        words = [_word(int(k)) for k in rng.integers(0, 20_000, 150)]
        for i in range(int(rng.integers(2, 7))):
            out.append((f"c{c}-{i}", " ".join(words)))
            if rng.random() < 0.2:
                out.append((f"c{c}-{i}-copy", " ".join(words)))
            words = _edit(rng, words, [int(p) for p in rng.choice(150, int(rng.integers(1, 5)), replace=False)])
    out += [(f"u{i}", " ".join(_word(int(k)) for k in rng.integers(0, 20_000, 120))) for i in range(2)]
    return out


# -- brute-force reference -------------------------------------------------------------------------

def covers(centre: Doc, doc: Doc, stage: NearDedup) -> float | None:
    """The star rule's predicate: an LSH candidate pair (a shared band key) whose estimate is not
    decisively below the threshold and whose exact Jaccard reaches it; the Jaccard, or None."""
    c = stage.config
    lo, _ = agreement_bounds(c.threshold, c.num_perm, c.verify_sigmas)
    if not (centre.bands & doc.bands) or int((centre.sig == doc.sig).sum()) < lo:
        return None
    j = exact_jaccard(centre.sh, doc.sh)
    return j if j >= c.threshold else None


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        x = parent[x]
    return x


def star_reference(docs: list[Doc], snapshots: int, keep: str) -> Verdicts:
    """id -> (kept | reason, dup_of) over snapshots run in order, each against the earlier ones' kept
    documents: components of the verified-candidate graph (``reference.similar``, at least one end
    new), then per component, corpus documents first (earlier snapshot, then shard order) and new ones
    by ``keep``, each new document dropped for the earliest centre that covers it, else a centre."""
    stage = NearDedup(NearDedupConfig(threshold=THRESHOLD, keep=keep, clustering="star"))  # type: ignore[arg-type]
    hashed(docs, stage)
    out: Verdicts = {}
    corpus: list[Doc] = []
    for s in range(snapshots):
        new = sorted((d for d in docs if d.snapshot == s), key=lambda d: d.order)
        nodes = corpus + new
        parent = list(range(len(nodes)))
        for j in range(len(corpus), len(nodes)):
            for i in range(j):
                if similar(nodes[i], nodes[j], stage):
                    ri, rj = _find(parent, i), _find(parent, j)
                    parent[max(ri, rj)] = min(ri, rj)
        comps: dict[int, list[int]] = {}
        for i in range(len(nodes)):
            comps.setdefault(_find(parent, i), []).append(i)
        kept: list[Doc] = []
        for members in comps.values():
            olds = [nodes[i] for i in sorted(members) if i < len(corpus)]
            news = [nodes[i] for i in members if i >= len(corpus)]
            news.sort(key=(lambda d: (-len(d.text), d.order)) if keep == "longest" else (lambda d: d.order))
            centres = list(olds)
            for d in news:
                c = next((c for c in centres if covers(c, d, stage) is not None), None)
                if c is None:
                    centres.append(d)
                    kept.append(d)
                    out[d.id] = ("kept", None)
                else:
                    out[d.id] = ("duplicate_of_corpus" if any(c is o for o in olds) else "near_duplicate", c.id)
        corpus += sorted(kept, key=lambda d: d.order)
    return out


# -- in process, on the global step alone ----------------------------------------------------------

def resolve(stage: NearDedup, keys: pa.Table, buckets: int) -> dict[str, tuple[str | None, str, int, float | None,
                                                                              str | None]]:
    """id -> (dup_of, dup_cluster, dup_cluster_size, jaccard, via) of the global step's rows."""
    t = stage.run_global(LocalFrame(keys, num_buckets=buckets)).table
    return {r["id"]: (r["dup_of"], r["dup_cluster"], r["dup_cluster_size"], r["jaccard"],
                      None if r["dup_of"] is None else stage.via(r["jaccard"])) for r in t.to_pylist()}


def decisions(stage: NearDedup, texts: list[str], ids: list[str]) -> tuple[list[str], list[dict[str, object]]]:
    """Kept ids and drop details of a drop-mode pass over one batch."""
    n = len(texts)
    marks = stage.run_global(LocalFrame(keyed(stage, texts, ids=ids))).table.drop_columns(["_task"])
    batch = _with_text(texts, ids).append_column("_task", pa.array([0] * n, pa.int32())).append_column(
        "_row", pa.array(range(n), pa.int64()))
    res = stage.apply(batch, marks)
    return res.kept.column("id").to_pylist(), [json.loads(d) for d in res.details]


def test_a_chain_components_drops_through_it_and_star_keeps_its_far_end() -> None:
    rng = np.random.default_rng(5)
    a = [_word(int(k)) for k in rng.integers(0, 20_000, 200)]
    b = _edit(rng, a, [20, 80, 140])  # 15 of 196 shingles differ from A's: J ~ 0.86
    c = _edit(rng, b, [50, 110, 170])  # as far from B, twice as far from A: J(A, C) ~ 0.73
    texts = [" ".join(w) for w in (a, b, c)]
    sets = [np.array(s.as_py(), np.uint32) for s in NearDedup(NearDedupConfig()).add_keys(_with_text(texts))["_nd_sh"]]
    j_ab, j_bc, j_ac = exact_jaccard(sets[0], sets[1]), exact_jaccard(sets[1], sets[2]), exact_jaccard(sets[0], sets[2])
    assert j_ab >= THRESHOLD and j_bc >= THRESHOLD and j_ac < THRESHOLD, (j_ab, j_bc, j_ac)
    comp = NearDedup(NearDedupConfig(threshold=THRESHOLD, keep="first", max_source_removal_fraction=None))
    got = resolve(comp, keyed(comp, texts, ids=["A", "B", "C"]), 4)
    assert {i: (d, c, n, v) for i, (d, c, n, _, v) in got.items()} == {
        "A": (None, "A", 3, None), "B": ("A", "A", 3, "direct"), "C": ("A", "A", 3, "chain")}
    assert got["C"][3] < THRESHOLD <= got["B"][3]  # the estimates the via is read from
    star = NearDedup(NearDedupConfig(threshold=THRESHOLD, keep="first", clustering="star",
                                    max_source_removal_fraction=None))
    got = resolve(star, keyed(star, texts, ids=["A", "B", "C"]), 4)
    assert got == {"A": (None, "A", 2, None, None), "B": ("A", "A", 2, j_ab, "direct"), "C": (None, "C", 1, None, None)}
    # the decisions a drop-mode run writes
    assert decisions(star, texts, ["A", "B", "C"]) == (
        ["A", "C"], [{"dup_of": "A", "dup_cluster_size": 2, "jaccard": round(j_ab, 4), "via": "direct"}])
    kept, details = decisions(comp, texts, ["A", "B", "C"])
    assert kept == ["A"] and [(d["dup_of"], d["via"]) for d in details] == [("A", "direct"), ("A", "chain")]


def _with_text(texts: list[str], ids: list[str] | None = None) -> pa.Table:
    b = batch_of(texts)
    return b.set_column(0, "id", pa.array(ids)) if ids else b


def _as_docs(corpus: list[tuple[str, str]]) -> list[Doc]:
    return [Doc(i, t, 0, k) for k, (i, t) in enumerate(corpus)]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), keep=st.sampled_from(["first", "longest"]), buckets=st.integers(1, 9),
       data=st.data())
def test_star_matches_the_reference_and_every_drop_is_verified(seed: int, keep: str, buckets: int,
                                                                data: st.DataObject) -> None:
    corpus = chains(seed)
    order = data.draw(st.permutations(range(len(corpus))))  # input order: a chain's middle may come first
    corpus = [corpus[k] for k in order]
    ids, texts = [i for i, _ in corpus], [t for _, t in corpus]
    common = {"threshold": THRESHOLD, "keep": keep, "max_source_removal_fraction": None}
    star = NearDedup(NearDedupConfig(**common, clustering="star"))  # type: ignore[arg-type]
    comp = NearDedup(NearDedupConfig(**common))  # type: ignore[arg-type]
    keys = keyed(star, texts, ids=ids, tasks=[k // 5 for k in range(len(ids))])
    got = resolve(star, keys, buckets)
    # any bucket count, any row order: the same decisions
    perm = pa.array(np.random.default_rng(seed).permutation(len(ids)))
    assert resolve(star, keys.take(perm), 64) == got == resolve(star, keys, 1)

    docs = {d.id: d for d in hashed(_as_docs(corpus), star)}
    want = star_reference(list(docs.values()), 1, keep)
    assert {i: ("kept", None) if i not in got or got[i][0] is None else ("near_duplicate", got[i][0])
            for i in ids} == want
    components = resolve(comp, keys, buckets)
    rank = {i: ((-len(docs[i].text), k) if keep == "longest" else k) for k, i in enumerate(ids)}
    for i, (dup_of, cluster, size, jac, via) in got.items():
        if dup_of is None:
            # no centre before it in its component covers it (the declared order: keep's)
            earlier = [c for c, r in got.items() if r[0] is None and rank[c] < rank[i]
                       and components[c][1] == components[i][1]]
            assert all(covers(docs[c], docs[i], star) is None for c in earlier), i
            assert cluster == i
        else:
            # dropped: exact Jaccard >= threshold with a kept centre, earlier in the declared order
            assert got[dup_of][0] is None and rank[dup_of] < rank[i] and via == "direct"
            assert jac == exact_jaccard(docs[i].sh, docs[dup_of].sh) >= THRESHOLD
            assert cluster == dup_of and size == sum(1 for r in got.values() if r[1] == dup_of)
    # stars only split components: what components keep, stars keep (a component's first member is a centre)
    assert {i for i, r in components.items() if r[0] is None} <= {i for i, r in got.items() if r[0] is None}


def test_config_star_needs_verify_and_the_default_keeps_old_fingerprints() -> None:
    with pytest.raises(ValueError, match="star needs verify"):
        NearDedupConfig(clustering="star", verify=False)
    with pytest.raises(ValueError):
        NearDedupConfig(clustering="greedy")  # type: ignore[arg-type]

    def fp(**stage: object) -> dict[str, object]:
        data = pipeline_dict(["x.jsonl"], Path("/tmp/out"), stages=[{"stage": "near_dedup_v1", **stage}])
        return PipelineConfig.from_mapping(data).fingerprint_data()["stages"][0]

    assert "clustering" not in fp() and fp() == fp(clustering="components")
    assert fp(clustering="star")["clustering"] == "star"


# -- through pipelines: incremental runs, Ray ------------------------------------------------------

STAR = [{"stage": "near_dedup_v1", "threshold": THRESHOLD, "num_buckets": 4, "keep": "longest",
         "clustering": "star", "max_source_removal_fraction": None}]


def _snapshots(seed: int, snapshots: int) -> list[tuple[str, str, int]]:
    corpus = chains(seed, n_chains=4)
    rng = np.random.default_rng(seed)
    return [(i, t, int(rng.integers(0, snapshots))) for i, t in corpus]


def _reference(docs: list[tuple[str, str, int]], snapshots: int) -> Verdicts:
    order: dict[int, int] = {}
    ref = []
    for i, t, s in docs:
        ref.append(Doc(i, t, s, order.setdefault(s, 0)))
        order[s] += 1
    return star_reference(ref, snapshots, "longest")


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_star_against_earlier_runs_matches_the_reference(tmp_path_factory: pytest.TempPathFactory,
                                                          seed: int) -> None:
    """Earlier runs' documents are always centres: a new document is dropped as ``duplicate_of_corpus``
    only with exact Jaccard >= threshold to the corpus document named."""
    docs = _snapshots(seed, 2)
    runs = snapshot_runs(tmp_path_factory.mktemp("star"), docs, 2, stages=STAR)
    assert verdicts(runs) == _reference(docs, 2)


@pytest.mark.ray
@pytest.mark.slow
def test_on_ray_star_clusters_equal_in_process(ray_cluster: None, tmp_path: Path) -> None:
    """Two snapshots (the second against the first), every global step as a Ray Data shuffle: the same
    decisions, details included, as in process."""
    docs = _snapshots(7, 2)
    want = _reference(docs, 2)
    assert any(v == "duplicate_of_corpus" for v, _ in want.values())
    assert any(v == "near_duplicate" for v, _ in want.values())
    ray_runs = snapshot_runs(tmp_path / "ray", docs, 2, kind="ray", stages=STAR, global_in_driver_mb=0)
    local_runs = snapshot_runs(tmp_path / "local", docs, 2, stages=STAR)
    assert verdicts(ray_runs) == want == verdicts(local_runs)

    def details(run: Path) -> list[tuple[str, dict[str, object]]]:
        rows = query(run, "SELECT id, details FROM decisions ORDER BY id")[1]
        # the earlier run a decision names is a folder of its own executor's tree
        return [(i, {**d, "run": Path(d["run"]).name} if "run" in d else d) for i, d in
                ((i, json.loads(x)) for i, x in rows)]

    for r, loc in zip(ray_runs, local_runs):
        assert details(r) == details(loc)


def test_the_benchmarks_star_oracle_follows_the_rule() -> None:
    """``evaluate.oracle_stars`` (the accuracy benchmark's truth for star): 0~1, 1~2, 0!~2, 3~2, 3~0."""
    i, j = np.array([0, 1, 2, 0, 0]), np.array([1, 2, 3, 3, 2])
    jac = np.array([0.9, 0.85, 0.9, 0.8, 0.5])
    # 1 joins 0; 2 is far from 0 (1 is no centre): a centre; 3 joins 0, the earliest centre close to it
    assert oracle_stars(5, i, j, jac, 0.8).tolist() == [0, 0, 2, 0, 4]
    assert oracle_stars(5, i, j, jac, 0.95).tolist() == [0, 1, 2, 3, 4]
