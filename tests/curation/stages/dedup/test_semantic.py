"""semantic_dedup_v1: the pair/cluster logic on known vectors, and the real bundled MiniLM end to end
(in process, resumed, on Ray, re-thresholded by ``curate semdedup-sweep``, planned by ``curate plan``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import ConfigError
from curation.stages.dedup import semantic
from curation.stages.dedup.semantic import (
    EMB,
    RESULT_SCHEMA,
    SCORE,
    SRC,
    SemanticDedup,
    SemanticDedupConfig,
    assign_clusters,
    choose_keepers,
    resolve_cluster,
    similar_components,
)
from curation.stages.frame import LocalFrame
from curation.stats import query
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import content, run_pipeline


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    # The machine's cores are shared: two threads per process on busy cores was up to 30x slower.
    import torch

    torch.set_num_threads(1)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def basis(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors in ``dim`` dimensions (pairwise cosines far below 0.9)."""
    return unit(np.random.default_rng(seed).normal(size=(n, dim)))


def toward(a: np.ndarray, b: np.ndarray, cos: float) -> np.ndarray:
    """The unit vector at exactly cosine ``cos`` from unit ``a``, in the plane of ``a`` and ``b``."""
    ortho = unit(b - (a @ b) * a)
    return cos * a + np.sqrt(1 - cos * cos) * ortho


# -- the pair and cluster logic, on known vectors ----------------------------------------------------------


def test_components_link_pairs_at_the_threshold_in_any_block_size() -> None:
    b = basis(8)
    x = b.copy()
    x[3] = b[1]  # an exact copy
    x[5] = toward(b[1], b[6], 0.97)  # cos 0.97 to row 1
    x[6] = toward(x[5], b[7], 0.97)  # a chain: 0.97 to row 5, less to row 1
    for block in (1, 2, 3, 64):
        label, linked = similar_components(x, 0.96, block)
        assert label.tolist() == [0, 1, 2, 1, 4, 1, 1, 7], block
        assert linked == 4  # (1,3), (1,5), (3,5), (5,6)
    label, _ = similar_components(x, 0.98, 2)  # above both chain links: only the copy stays linked
    assert label.tolist() == [0, 1, 2, 1, 4, 5, 6, 7]


def test_a_large_group_of_copies_is_linked_in_bounded_blocks() -> None:
    x = np.repeat(basis(1), 300, axis=0)  # 300 identical vectors: 44,850 links, blocks of 16 rows
    label, linked = similar_components(x, 0.99, 16)
    assert (label == 0).all() and linked == 300 * 299 // 2


def test_keeper_rules_closest_farthest_score_and_ties() -> None:
    label = np.array([0, 0, 0, 3, 3])
    centroid_cos = np.array([0.5, 0.9, 0.7, 0.8, 0.8])
    assert choose_keepers(label, centroid_cos, None, "closest").tolist() == [1, 1, 1, 3, 3]
    assert choose_keepers(label, centroid_cos, None, "farthest").tolist() == [0, 0, 0, 3, 3]  # tie: input order
    score = np.array([0.1, np.nan, 0.3, 2.0, 2.0])
    # Highest score first (NaN last), then the centroid rule, then input order.
    assert choose_keepers(label, centroid_cos, score, "closest").tolist() == [2, 2, 2, 3, 3]
    score = np.array([0.3, 0.3, 0.3, np.nan, np.nan])
    assert choose_keepers(label, centroid_cos, score, "closest").tolist() == [1, 1, 1, 3, 3]


def test_resolve_cluster_reports_cosine_to_the_keeper_and_group_size() -> None:
    b = basis(4)
    x = np.stack([b[0], toward(b[0], b[1], 0.99), toward(b[0], b[2], 0.95), b[3]])
    keeper, cos, sizes, linked = resolve_cluster(x, b[0], None, eps=0.02)
    assert keeper.tolist() == [0, 0, 2, 3] and sizes.tolist() == [2, 2, 1, 1] and linked == 1
    assert cos[1] == pytest.approx(0.99, abs=1e-9) and cos[0] == pytest.approx(1.0)
    keeper, _, sizes, _ = resolve_cluster(x, b[0], None, eps=0.06)
    assert keeper.tolist() == [0, 0, 0, 3] and sizes.tolist() == [3, 3, 3, 1]


def test_assignment_ties_go_to_the_lower_cluster() -> None:
    c = np.eye(3)
    x = unit(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 1.0]]))
    assert assign_clusters(x, c).tolist() == [0, 1, 2]


def keys_table(x: np.ndarray, tasks: list[int], score: list[float] | None = None) -> pa.Table:
    rows: list[int] = []
    seen: dict[int, int] = {}
    for t in tasks:
        rows.append(seen.get(t, 0))
        seen[t] = rows[-1] + 1
    emb = pa.ListArray.from_arrays(pa.array(np.arange(len(x) + 1, dtype=np.int32) * x.shape[1]),
                                   pa.array(x.astype(np.float32).reshape(-1)))
    return pa.table({"id": [f"d{i}" for i in range(len(x))], "_task": pa.array(tasks, pa.int32()),
                     "_row": pa.array(rows, pa.int64()), EMB: emb,
                     SCORE: pa.array(score if score is not None else [np.nan] * len(x), pa.float64()),
                     SRC: pa.array([f"in{t}.jsonl" for t in tasks], pa.string())})


def planted(seed: int = 1) -> tuple[np.ndarray, list[int]]:
    """60 vectors: 12 topics x (1 original + 2 copies at cosine 0.995 and 0.97) + 24 singletons."""
    rng = np.random.default_rng(seed + 1000)  # not basis's stream: a direction parallel to a topic has no plane
    topics = basis(12, dim=32, seed=seed)
    rows = []
    for t in topics:
        rows += [t, toward(t, rng.normal(size=32), 0.995), toward(t, rng.normal(size=32), 0.97)]
    rows += list(basis(24, dim=32, seed=seed + 100))
    x = np.stack(rows).astype(np.float32)
    return x, [i % 3 for i in range(len(x))]


def resolved(stage: SemanticDedup, keys: pa.Table, buckets: int) -> list[tuple[Any, ...]]:
    res = stage.run_global(LocalFrame(keys, num_buckets=buckets)).collect()
    return sorted(zip(*[res.column(c).to_pylist() for c in RESULT_SCHEMA.names]))


def test_result_independent_of_row_order_and_buckets() -> None:
    x, tasks = planted()
    stage = SemanticDedup(SemanticDedupConfig(eps=0.02, n_clusters=6))
    keys = keys_table(x, tasks)
    expected = resolved(stage, keys, 4)
    # At eps 0.02 only each topic's original and its 0.995 copy link (the 0.97 copy is below 0.98 to the
    # original, and at most 0.995 * 0.97 + 0.1 * 0.24 < 0.99 to the other copy): one removal per topic whose
    # pair k-means kept together, never across topics.
    topic = {f"d{i}": i // 3 for i in range(36)}
    assert 10 <= len(expected) <= 12 and len({topic[r[2]] for r in expected}) == len(expected)
    assert all(topic[r[2]] == topic[r[3]] and r[2] != f"d{3 * topic[r[2]] + 2}" for r in expected)
    rng = np.random.default_rng(0)
    for buckets in (1, 7):
        assert resolved(stage, keys.take(pa.array(rng.permutation(len(x)))), buckets) == expected
    loose = resolved(SemanticDedup(SemanticDedupConfig(eps=0.05, n_clusters=6)), keys, 4)
    assert len(loose) > len(expected)  # the 0.97 copies join too


def test_a_source_losing_more_than_the_allowed_share_fails_or_warns() -> None:
    """The mass-removal audit (as near-dedup's): per source, the share of its documents the stage removes."""
    from curation.stages.dedup.audit import MassRemovalError

    b = basis(3)
    x = np.stack([b[0], b[0], b[0], b[1], b[2], b[2]])  # in0: three copies; in1: two texts; in2: a copy of in1's d4
    keys = keys_table(x, [0, 0, 0, 1, 1, 2])
    with pytest.raises(MassRemovalError, match=r"source 'in0.jsonl' loses 2 of 3 documents \(66.7%\), e.g. d1 -> d0"):
        SemanticDedup(SemanticDedupConfig(eps=0.01, n_clusters=1, max_source_removal_fraction=0.5)).run_global(
            LocalFrame(keys))
    warn = SemanticDedup(SemanticDedupConfig(eps=0.01, n_clusters=1, max_source_removal_fraction=0.5,
                                             on_mass_removal="warn"))
    res = warn.run_global(LocalFrame(keys)).collect()
    # Largest share first: in2's one document is a copy (100%), in0 loses two of three; in1 loses nothing.
    assert len(res) == 3 and [(w["source"], w["removed"], w["docs_in"]) for w in warn.warnings] == [
        ("in2.jsonl", 1, 1), ("in0.jsonl", 2, 3)]
    quiet = SemanticDedup(SemanticDedupConfig(eps=0.01, n_clusters=1, max_source_removal_fraction=None))
    assert len(quiet.run_global(LocalFrame(keys)).collect()) == 3 and quiet.warnings == []


def test_keep_by_score_keeps_the_highest() -> None:
    b = basis(3)
    x = np.stack([b[0], b[0], toward(b[0], b[1], 0.999), b[2]])
    keys = keys_table(x, [0, 0, 1, 1], score=[0.2, 0.9, 0.5, 0.1])
    stage = SemanticDedup(SemanticDedupConfig(eps=0.01, n_clusters=1, keep_by="quality"))
    res = stage.run_global(LocalFrame(keys)).collect()
    assert sorted(zip(res.column("id").to_pylist(), res.column("dup_of").to_pylist())) == [("d0", "d1"), ("d2", "d1")]


def test_config_errors() -> None:
    for bad in ({"eps": 0.0}, {"eps": 1.0}, {"chunks": 0}, {"n_clusters": 0}, {"fit_sample": 10},
                {"keep": "longest"}, {"keep_by": " "}, {"max_tokens": 2}):
        with pytest.raises(ValueError):
            SemanticDedupConfig(**bad)
    stage = SemanticDedup(SemanticDedupConfig(device="cuda", num_gpus=0.5))
    assert stage.cuda_demand() == "device: cuda" and stage.resources() == {"num_gpus": 0.5}


# -- the real model, end to end ----------------------------------------------------------------------

CAT = "The cat sat on the mat and looked out of the window at the birds in the garden."
DOCS = {
    # MiniLM cosines (measured): web-2 ~ CAT 0.996, web-3 ~ CAT 0.906, news-2 ~ news-1 0.983; the rest < 0.2.
    "web": [("web-1", CAT),
            ("web-2", "The cat sat on the mat and looked out the window at the birds in the garden."),
            ("web-3", "A cat was sitting on a mat, watching the birds in the garden through the window."),
            ("web-4", "To install the package, run pip install followed by the name of the package."),
            ("web-5", "Bake the bread at 220 degrees for thirty minutes until the crust is golden brown.")],
    "news": [("news-1", "Stock markets fell sharply on Monday as investors worried about rising interest rates."),
             ("news-2", "On Monday, stock markets fell sharply as investors worried about rising interest rates."),
             ("news-3", "Bond yields climbed on Tuesday after the central bank signalled further rate increases."),
             ("news-4", "The committee will meet next Thursday to review the annual budget proposal."),
             ("news-5", "Photosynthesis converts light energy into chemical energy stored in glucose."),
             ("news-6", CAT)],  # an exact copy of web-1
}


def corpus(root: Path) -> Path:
    d = root / "in"
    for dom, docs in DOCS.items():
        write_jsonl(d / f"{dom}.jsonl", [{"id": i, "text": t, "domain": dom} for i, t in docs])
    return d


def semantic_run(inputs: Path, out: Path, kind: str = "local", **stage: Any) -> dict[str, Any]:
    data = pipeline_dict([str(inputs / "*.jsonl")], out, kind=kind,
                         stages=[{"stage": "semantic_dedup_v1", "eps": 0.02, "num_buckets": 4, **stage}])
    if kind == "ray":
        data["executor"]["global_in_driver_mb"] = 0  # the Ray Data shuffle, not the driver's in-process resolve
    return data


def dropped(run: Path) -> list[tuple[str, str, str, int]]:
    rows = query(run, "SELECT id, reason, details FROM decisions ORDER BY id")[1]
    return [(i, r, json.loads(d)["dup_of"], json.loads(d)["group_size"]) for i, r, d in rows]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("semantic")
    run_pipeline(semantic_run(corpus(root), root / "local"))
    return root / "local"


def test_minilm_end_to_end_drops_paraphrases_with_details(local_run: Path) -> None:
    got = dropped(local_run)
    # At eps 0.02 (cosine >= 0.98): CAT, its exact copy and its light edit form a group of 3, the two
    # orderings of the news sentence a group of 2; the looser paraphrase (0.906) stays. The keeper of each is
    # the member closest to its cluster's centroid: the light edit web-2 (the paraphrase web-3, in the same
    # cluster, pulls the centroid its way) and news-2.
    assert got == [("news-1", "semantic_duplicate", "news-2", 2), ("news-6", "semantic_duplicate", "web-2", 3),
                   ("web-1", "semantic_duplicate", "web-2", 3)]
    rows = query(local_run, "SELECT id, details FROM decisions WHERE id IN ('news-6', 'web-1') ORDER BY id")[1]
    (copy, orig) = [json.loads(d) for _, d in rows]
    assert set(copy) == {"dup_of", "cosine", "cluster", "group_size"} and copy["cluster"] == orig["cluster"]
    assert copy["cosine"] == orig["cosine"] and 0.99 < copy["cosine"] < 0.999  # identical texts: the same vector
    m = json.loads((local_run / "manifest.json").read_text())
    assert m["totals"]["docs_out"] == 8
    stage = next(s for s in m["stages"] if s["name"] == "semantic_dedup_v1")
    assert stage["dropped"] == {"semantic_duplicate": 3}
    # The embeddings are in the run: one Parquet file per task, 384 float32 per document.
    work = sorted((local_run / "_work" / "seg0").glob("*.parquet"))
    assert len(work) == 2
    emb = semantic.vectors(pq.read_table(work[0], columns=[EMB]).column(EMB))
    assert emb.shape[1] == 384 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_stats_show_the_reason_and_the_removals_per_source(local_run: Path) -> None:
    from typer.testing import CliRunner

    from curation.cli import app
    from curation.stats import summary

    s = summary(str(local_run))
    chars = query(local_run, "SELECT sum(n_chars) FROM decisions")[1][0][0]
    assert ("semantic_dedup_v1", "semantic_duplicate", 3, chars) in s["reasons"]
    cos = {i: json.loads(d)["cosine"] for i, d in query(local_run, "SELECT id, details FROM decisions")[1]}
    # news.jsonl: news-1 and news-6 of 6; web.jsonl: web-1 of 5 (the audit's source is the input file)
    assert s["semantic_dup_sources"] == [("news.jsonl", 6, 2, 0.3333, round(min(cos["news-1"], cos["news-6"]), 4)),
                                         ("web.jsonl", 5, 1, 0.2, round(cos["web-1"], 4))]
    assert s["near_dup_sources"] == []
    shown = CliRunner().invoke(app, ["stats", str(local_run)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "Semantic-dup removals per source" in shown.output
    assert "min cosine" in shown.output and "Near-dup removals" not in shown.output


def test_the_service_shows_the_drops_and_the_group(local_run: Path) -> None:
    from curation.query_sandbox import Limits
    from curation.service.views import document, drops

    limits = Limits(timeout_s=30.0, memory_limit="512MB")
    page = drops(local_run, limits, "semantic_dedup_v1", "semantic_duplicate", None, None, 0, 10)
    assert page["total"] == 3 and {s["id"] for s in page["samples"]} == {"news-1", "news-6", "web-1"}
    assert all(s["details"]["dup_of"] in ("news-2", "web-2") for s in page["samples"])
    doc = document(local_run, limits, "web-1")  # a dropped member's page names the keeper and the group
    assert doc["outcome"] == "dropped" and doc["semantic"]["kept_member"] == "web-2"
    assert {m["id"] for m in doc["semantic"]["dropped_members"]} == {"news-6", "web-1"}
    keeper = document(local_run, limits, "web-2")  # and the kept one's page its group (tests/curation/service)
    assert keeper["outcome"] == "kept" and keeper["semantic"]["group_size"] == 3


def test_resume_reuses_the_stored_embeddings(local_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = semantic_run(corpus(tmp_path), tmp_path / "run")
    run = Path(data["output"]["dir"])
    run_pipeline(data)
    # Undo what followed the embedding pass (as a crash would): the global step, the final pass, the manifest.
    (run / "manifest.json").unlink()
    for f in [run / "_markers" / "global-stage0.json", *(run / "_markers" / "seg1").glob("*.json")]:
        f.unlink()

    def no_embedding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a resumed run embedded again")

    monkeypatch.setattr(semantic, "embed_texts", no_embedding)
    res = run_pipeline(data)
    assert res.tasks_run == 2 and content(run) == content(local_run) and dropped(run) == dropped(local_run)


@pytest.mark.ray
def test_ray_matches_in_process(ray_cluster: None, local_run: Path, tmp_path: Path) -> None:
    inputs = Path(json.loads((local_run / "run.json").read_text())["full_config"]["input"]["paths"][0]).parent
    run_pipeline(semantic_run(inputs, tmp_path / "ray", kind="ray"))
    assert content(tmp_path / "ray") == content(local_run)
    assert query(tmp_path / "ray", "SELECT id, details FROM decisions ORDER BY id") == \
        query(local_run, "SELECT id, details FROM decisions ORDER BY id")


def test_sweep_counts_per_domain_from_stored_embeddings(local_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from curation.cli import app

    monkeypatch.setattr(semantic, "embed_texts", lambda *a, **k: (_ for _ in ()).throw(AssertionError("embedded")))
    res = semantic.sweep(local_run, [0.01, 0.02, 0.05, 0.1])
    assert res["docs"] == 11 and res["domains"] == {"news": 6, "web": 5}
    assert [(r["eps"], r["removed"], r["by_domain"]) for r in res["eps"]] == [
        (0.01, 2, {"news": 1, "web": 1}),  # cosine >= 0.99: the copy and the light edit of CAT
        (0.02, 3, {"news": 2, "web": 1}),  # the run's own eps: exactly the run's removals
        (0.05, 3, {"news": 2, "web": 1}),
        (0.1, 4, {"news": 2, "web": 2}),  # cosine >= 0.9: the loose paraphrase of CAT too
    ]
    out = CliRunner().invoke(app, ["semdedup-sweep", str(local_run), "--eps", "0.01,0.1", "--json"])
    assert out.exit_code == 0, out.output
    assert [r["removed"] for r in json.loads(out.output)["eps"]] == [2, 4]
    out = CliRunner().invoke(app, ["semdedup-sweep", str(local_run), "--eps", "0.02"])
    assert out.exit_code == 0 and "news" in out.output and "3" in out.output, out.output
    bad = CliRunner().invoke(app, ["semdedup-sweep", str(local_run), "--eps", "2"])
    assert bad.exit_code == 2 and "eps must be in (0, 1)" in bad.output


def test_keep_by_names_a_missing_column(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="keep_by column 'quality' is not a column"):
        run_pipeline(semantic_run(corpus(tmp_path), tmp_path / "out", keep_by="quality"))


def test_chunks_average_windows_and_the_first_window_is_the_head() -> None:
    emb = semantic.Embedder(max_tokens=16)
    long = CAT + " " + DOCS["news"][0][1] + " " + DOCS["news"][2][1]
    texts = [long, "The cat sat on the mat."]  # 61 and 7 tokens: 5 windows of 14 (+2 special), and 1
    head = emb.embed(texts)
    one = semantic.embed_texts(emb, texts, chunks=1)
    three = semantic.embed_texts(emb, texts, chunks=3)
    assert np.allclose(head, one)
    assert np.allclose(three[1], head[1], atol=1e-5)  # a text shorter than a window: its one window is its head
    assert np.allclose(np.linalg.norm(three, axis=1), 1.0, atol=1e-5) and float(three[0] @ head[0]) < 0.95


def test_a_local_encoder_directory_embeds_as_the_bundled_name() -> None:
    from curation.scoring.embed import BUNDLED, resolve_model

    texts = [CAT, DOCS["news"][0][1]]
    local = SemanticDedup(SemanticDedupConfig(model=resolve_model(BUNDLED)))  # a plain directory path
    assert local.embedder.path == local.config.model != BUNDLED and local.embedder.max_tokens == 256
    bundled = SemanticDedup(SemanticDedupConfig())
    assert np.allclose(semantic.embed_texts(local.embedder, texts), semantic.embed_texts(bundled.embedder, texts),
                       atol=1e-6)


def test_plan_predicts_the_stage(tmp_path: Path) -> None:
    from curation.pipeline import PipelineConfig
    from curation.planner import Cluster, extrapolate, measure

    cfg = PipelineConfig.from_mapping(semantic_run(corpus(tmp_path), tmp_path / "out"))
    m = measure(cfg, 1.0, tmp_path / "work")
    (g,) = m.globals
    assert g.stage == "semantic_dedup_v1" and g.docs_in == 11 and g.full_seconds is not None
    assert "semantic_dedup_v1" in m.passes[0].stage_seconds  # the embedding, timed as the stage's share
    pred = extrapolate(m, Cluster(cpus=2))
    assert any(s["step"] == "global semantic_dedup_v1" for s in pred.steps) and pred.kept_docs == 8
    stage = SemanticDedup(SemanticDedupConfig(n_clusters=None))
    stage.report.update(docs=1000, n_clusters=32, fit_docs=1000, fit_iterations=10, fit_seconds=1.0,
                        assign_seconds=1.0, pair_seconds=1.0, pairs_compared=1000 * 1000 // 2 // 32,
                        pair_fixed_seconds=0.01, pair_seconds_per_pair=1e-5)
    # 100x the documents, k 32 -> 316: fit 1 s / 10 steps x min(50, 10 sqrt(50)) steps x (50,000 x 316) / (1,000 x 32)
    # (the sample is capped at 50,000); assignment 1 s x 100 x 316 / 32; pairs 0.01 s x 316 clusters + 1e-5 s x
    # 1e10 / 2 / 316 pairs; the rest (4 - 3 s) x 100.
    expected = 0.1 * 50 * 50_000 * 316 / 32_000 + 100 * 316 / 32 + (0.01 * 316 + 1e-5 * 1e10 / 2 / 316) + 100
    assert stage.global_seconds_at(4.0, 100_000) == pytest.approx(expected, rel=1e-3)
    t = [(10, 0.02 + 45 * 1e-4), (20, 0.02 + 190 * 1e-4), (40, 0.02 + 780 * 1e-4)]
    assert semantic.pair_cost(t) == pytest.approx((0.02, 1e-4), rel=1e-3) and semantic.pair_cost(t[:1]) == (None, None)


# -- the CUDA path: placement is checked on CPU, the embedding itself where a GPU is ----------------------


def test_the_embedding_pass_asks_for_the_stages_gpus_and_cuda_needs_them(tmp_path: Path) -> None:
    from curation.executors.plan import make_plan
    from curation.pipeline import PipelineConfig

    inputs = corpus(tmp_path)
    data = semantic_run(inputs, tmp_path / "out", kind="ray", num_gpus=0.5)
    plan = make_plan(PipelineConfig.from_mapping(data))
    # The keying pass (seg 0) runs add_keys, where the model embeds: its tasks ask for the GPU share.
    assert plan.segments[0].task_resources() == {"num_gpus": 0.5} and plan.segments[1].task_resources() == {}
    data = semantic_run(inputs, tmp_path / "out", kind="ray", device="cuda")
    with pytest.raises(ConfigError, match=r"stages\[0\] \(semantic_dedup_v1\): device: cuda needs a GPU"):
        make_plan(PipelineConfig.from_mapping(data))


@pytest.mark.gpu
def test_cuda_fp16_embeddings_match_cpu_float32() -> None:
    texts = [t for docs in DOCS.values() for _, t in docs]
    cpu = semantic.embed_texts(semantic.Embedder(device="cpu"), texts)
    gpu_emb = semantic.Embedder(device="auto")
    import torch

    assert gpu_emb.load()[2] == "cuda" and next(gpu_emb.load()[1].parameters()).dtype == torch.float16
    gpu = semantic.embed_texts(gpu_emb, texts)
    assert np.abs((cpu * gpu).sum(1) - 1).max() < 1e-3  # fp16 on CUDA: the same directions
