"""near_dedup_v1 on exact tiny inputs, independence from order and buckets, accuracy vs exact Jaccard."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from curation.stages.dedup.evaluate import cluster_accuracy, jaccard_pairs, oracle_clusters
from curation.stages.frame import LocalFrame
from curation.stages.dedup.near import NearDedup, NearDedupConfig
from tests.conftest import PROSE, SAMPLE
from tests.curation.stages.filters.helpers import batch_of


def keyed(stage: NearDedup, texts: list[str], ids: list[str] | None = None, tasks: list[int] | None = None) -> pa.Table:
    b = batch_of(texts)
    if ids:
        b = b.set_column(0, "id", pa.array(ids))
    n = len(texts)
    b = b.append_column("_task", pa.array(tasks or [0] * n, pa.int32())).append_column("_row", pa.array(range(n), pa.int64()))
    return stage.add_keys(b).select(["id", "_task", "_row", *stage.key_columns()])


def resolve(stage: NearDedup, keys: pa.Table, buckets: int = 16) -> dict[str, tuple[str | None, str, int]]:
    t = stage.run_global(LocalFrame(keys, num_buckets=buckets)).table
    return {r["id"]: (r["dup_of"], r["dup_cluster"], r["dup_cluster_size"]) for r in t.to_pylist()}


def edit(text: str, every: int) -> str:
    words = text.split()
    return " ".join("CHANGED" if i % every == 0 else w for i, w in enumerate(words))


def test_clusters_near_copies_and_keeps_the_longest() -> None:
    long_copy = PROSE[0] + " An extra closing sentence makes this copy the longest one."
    texts = [PROSE[0], PROSE[1], long_copy, PROSE[0].upper(), "", "tiny", "tiny"]
    stage = NearDedup(NearDedupConfig(threshold=0.7))
    got = resolve(stage, keyed(stage, texts))
    # d0, d2 (longest) and d3 (case-only change) are one cluster kept as d2; "" is never a
    # candidate; the two "tiny" texts (one shingle each, equal) form a cluster kept as d5.
    assert got == {"d0": ("d2", "d2", 3), "d2": (None, "d2", 3), "d3": ("d2", "d2", 3),
                   "d5": (None, "d5", 2), "d6": ("d5", "d5", 2)}


def test_keep_first_and_threshold_separates_edited_copies() -> None:
    texts = [PROSE[1], edit(PROSE[1], 40), edit(PROSE[1], 4)]  # ~J 0.8 and ~J 0.2 with d0
    stage = NearDedup(NearDedupConfig(threshold=0.6, keep="first"))
    got = resolve(stage, keyed(stage, texts))
    assert got == {"d0": (None, "d0", 2), "d1": ("d0", "d0", 2)}


def test_result_independent_of_row_order_tasks_and_buckets() -> None:
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{c}{d}" for c in "abcdefghij" for d in "klmnopqrst"])
    unique = [" ".join(rng.choice(vocab, 60)) for _ in range(10)]  # random word salads: no near copies
    base = [PROSE[i % 3] if i % 4 else edit(PROSE[i % 3], 30 + i) for i in range(30)] + unique
    # one source loses most of its documents here: the audit is tested in test_near_audit.py
    stage = NearDedup(NearDedupConfig(threshold=0.7, max_source_removal_fraction=None))
    keys = keyed(stage, base, tasks=[i // 8 for i in range(40)])
    expected = resolve(stage, keys, buckets=1)
    assert len(expected) == 30
    for buckets in (2, 7, 64):
        assert resolve(stage, keys.take(pa.array(rng.permutation(40))), buckets) == expected


def test_unverified_mode_and_config_errors() -> None:
    stage = NearDedup(NearDedupConfig(verify=False, bands=14, rows=8, num_perm=112, max_source_removal_fraction=None))
    assert "_nd_sh" not in stage.key_columns()
    got = resolve(stage, keyed(stage, [PROSE[2], PROSE[2] + " Yes.", PROSE[0]]))
    assert got == {"d0": ("d1", "d1", 2), "d1": (None, "d1", 2)}
    assert "14 bands x 8 rows" in stage.describe() and "J=0.8: 0.92" in stage.describe()
    for bad in ({"threshold": 1.5}, {"bands": 3}, {"bands": 20, "rows": 10}, {"keep": "best"}, {"mode": "x"},
                {"max_source_removal_fraction": 1.5}, {"on_mass_removal": "ignore"}):
        with pytest.raises(ValueError):
            NearDedupConfig(**bad)


def test_apply_marks_and_drops() -> None:
    stage = NearDedup(NearDedupConfig(threshold=0.7, mode="mark"))
    texts = [PROSE[0], PROSE[0] + " More.", PROSE[1]]
    b = batch_of(texts).append_column("_task", pa.array([0, 0, 0], pa.int32())).append_column("_row", pa.array([0, 1, 2], pa.int64()))
    marks = stage.run_global(LocalFrame(stage.add_keys(b).select(["id", "_task", "_row", *stage.key_columns()]))).table
    res = stage.apply(b, marks.drop_columns(["_task"]))
    assert res.kept.select(["id", "dup_cluster", "dup_cluster_size", "dup_kept"]).to_pylist() == [
        {"id": "d0", "dup_cluster": "d1", "dup_cluster_size": 2, "dup_kept": False},
        {"id": "d1", "dup_cluster": "d1", "dup_cluster_size": 2, "dup_kept": True},
        {"id": "d2", "dup_cluster": "d2", "dup_cluster_size": 1, "dup_kept": True},
    ]
    drop = NearDedup(NearDedupConfig(threshold=0.7)).apply(b, marks.drop_columns(["_task"]))
    assert drop.kept.column("id").to_pylist() == ["d1", "d2"]
    details = json.loads(drop.details[0])
    assert drop.reasons == ["near_duplicate"] and details.pop("jaccard") > 0.7
    assert details == {"dup_of": "d1", "dup_cluster_size": 2, "via": "direct"}


def test_accuracy_against_exact_jaccard_on_the_sample_corpus() -> None:
    texts = []
    for f in sorted(SAMPLE.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    i, j, jac = jaccard_pairs(texts, 5)
    for threshold in (0.7, 0.8, 0.9):
        truth = oracle_clusters(len(texts), i, j, jac, threshold)
        stage = NearDedup(NearDedupConfig(threshold=threshold, keep="first"))
        keys = keyed(stage, texts, ids=[str(k) for k in range(len(texts))])
        found = np.arange(len(texts))
        for r in stage.run_global(LocalFrame(keys)).table.to_pylist():
            found[r["_row"]] = int(r["dup_cluster"])
        acc = cluster_accuracy(truth, found)
        assert acc.pairs_true > 2000  # the sample really holds near-duplicate clusters
        assert acc.precision >= 0.95 and acc.recall >= 0.95, (threshold, acc)


def chain_corpus() -> list[str]:
    """A -> B -> C -> D by successive word replacements: J(A,B) = J(B,C) = 0.817 (links),
    J(A,C) = 0.701 (a chain, not a link), J(C,D) = 0.777: just under 0.8, yet its 128-permutation
    estimate is 0.820 and it shares a band, so an estimate-only check links it."""
    words = (PROSE[0] + " " + PROSE[1]).split()
    docs = [words]
    for tag, positions in (("b", [21, 52, 60, 166]), ("c", [18, 66, 120, 164]), ("d", [10, 40, 55, 111, 174])):
        nxt = list(docs[-1])
        for p in positions:
            nxt[p] = f"{tag}{p}"
        docs.append(nxt)
    return [" ".join(d) for d in docs]


def test_chain_links_are_exact_pairs_not_estimates() -> None:
    texts = chain_corpus()
    i, j, jac = jaccard_pairs(texts, 5)
    exact = {(int(a), int(b)): round(float(x), 3) for a, b, x in zip(i, j, jac)}
    assert exact[(0, 1)] >= 0.8 and exact[(1, 2)] >= 0.8 and exact[(0, 2)] < 0.8 and 0.75 < exact[(2, 3)] < 0.8
    stage = NearDedup(NearDedupConfig(threshold=0.8, keep="first"))
    got = resolve(stage, keyed(stage, texts))
    # A, B, C are one cluster through the chain (connected components, as the oracle); D is alone.
    assert got == {"d0": (None, "d0", 3), "d1": ("d0", "d0", 3), "d2": ("d0", "d0", 3)}
    truth = oracle_clusters(4, i, j, jac, 0.8)
    assert truth[0] == truth[1] == truth[2] != truth[3]


def test_exact_checks_per_band_group_are_bounded() -> None:
    from curation.stages.dedup.pair_check import FORESTS, agreement_bounds, group_pairs

    rng = np.random.default_rng(1)
    m, k = 200, 128
    base = rng.integers(0, 2**32, k, dtype=np.uint64).astype(np.uint32)
    sig = np.tile(base, (m, 1))
    for r in range(m):  # every pair agrees on ~0.8 of the positions: all uncertain at 0.8
        sig[r, rng.choice(k, 14, replace=False)] = rng.integers(0, 2**32, 14, dtype=np.uint64).astype(np.uint32)
    wide = np.concatenate([sig, np.arange(2 * m, dtype=np.uint32).reshape(m, 2)], axis=1)
    lo, hi = agreement_bounds(0.8, k, 4.0)
    assert (lo, hi) == (85, 121)
    a, b, sure = group_pairs(np.arange(m, dtype=np.int64), wide, k, lo, hi, max_group=1000)
    assert (~sure).sum() <= FORESTS * (m - 1) < m * (m - 1) // 2
    assert len(set(zip(a[~sure].tolist(), b[~sure].tolist()))) == (~sure).sum()  # no pair twice


@pytest.mark.parametrize("texts", [[], [PROSE[0]], [PROSE[0], PROSE[1]]], ids=["none", "one", "two-unrelated"])
def test_no_or_single_documents_resolve_to_nothing(texts: list[str]) -> None:
    """Nothing to cluster is an empty result, not an IndexError (the planner times the stage on tiny inputs)."""
    stage = NearDedup(NearDedupConfig(threshold=0.8))
    assert resolve(stage, keyed(stage, texts)) == {}


def test_joins_take_only_the_documents_they_can_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signature, shingle and keeper joins take only candidate / uncertain / clustered documents
    (node sets gathered in the driver), with the same result as joining every document."""
    import curation.stages.dedup.near as near

    rng = np.random.default_rng(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = np.array([a + b + c for a in letters for b in letters for c in letters[:5]])  # no digits: they map to 0
    unique = [" ".join(rng.choice(vocab, 80)) for _ in range(60)]  # no two alike
    texts = unique + [edit(PROSE[0], 25), PROSE[0], edit(PROSE[0], 9), PROSE[1], PROSE[1] + " the end."]
    stage = NearDedup(NearDedupConfig(threshold=0.7, max_source_removal_fraction=None))
    keys = keyed(stage, texts, tasks=[i // 10 for i in range(len(texts))])
    seen: list[tuple[str, int]] = []
    real_init = near.OnlyNodes.__init__

    def spy(self: near.OnlyNodes, nodes: np.ndarray | None, fn: object) -> None:
        seen.append((getattr(fn, "__name__", ""), -1 if nodes is None else len(nodes)))
        real_init(self, nodes, fn)  # type: ignore[arg-type]

    monkeypatch.setattr(near.OnlyNodes, "__init__", spy)
    narrowed = resolve(stage, keys)
    # 5 near-copy documents among 65: the joins see at most those (the unique pages share no band)
    assert seen and all(0 <= n <= 5 for _, n in seen), seen
    assert {name for name, _ in seen} == {"_sig_rows", "_shingle_rows", "_node_info"}
    monkeypatch.setattr(near, "FILTER_MAX_NODES", 0)  # too many to gather: every document joins
    seen.clear()
    assert resolve(stage, keys) == narrowed and all(n == -1 for _, n in seen)
    assert narrowed == {"d64": (None, "d64", 2), "d63": ("d64", "d64", 2)}  # the edited copies fall below 0.7
