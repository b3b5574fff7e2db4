"""select_v1 ``lowest`` (perplexity selection) and random_score_v1 (the random-selection baseline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.stages.scoring.random_score import id_uniform
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline


def _docs(n: int) -> list[dict]:
    # lengths vary so that the character-weighted cut differs from a document count
    return [{"id": f"d{i}", "text": ("word " * (20 + 7 * (i % 5))).strip(), "domain": "x"} for i in range(n)]


def test_lowest_keeps_the_lowest_scores_and_reports_them_unsigned(tmp_path: Path) -> None:
    from curation.stats import query

    docs = _docs(30)
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    out = tmp_path / "run"
    score = {"stage": "random_score_v1", "name": "ppl", "seed": 7}  # a score column with known values
    stages = [score, {"stage": "select_v1", "column": "score_ppl", "top_fraction": 0.3, "lowest": True}]
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], out, stages=stages))
    _, kept = query(out, "SELECT id, score_ppl FROM docs")
    _, dropped = query(out, "SELECT id, CAST(json_extract_string(details, '$.score') AS DOUBLE), "
                            "CAST(json_extract_string(details, '$.threshold') AS DOUBLE) FROM decisions")
    thr = dropped[0][2]
    assert max(p for _, p in kept) <= thr < min(s for _, s, _ in dropped)
    chars = {d["id"]: len(d["text"]) for d in docs}
    share = sum(chars[i] for i, _ in kept) / sum(chars.values())
    assert 0.3 <= share < 0.3 + max(chars.values()) / sum(chars.values())
    # a fixed threshold keeps score <= threshold
    stages = [score, {"stage": "select_v1", "column": "score_ppl", "threshold": 0.4, "lowest": True}]
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run2", stages=stages))
    _, kept2 = query(tmp_path / "run2", "SELECT id FROM docs")
    u = id_uniform([d["id"] for d in docs], seed=7)
    assert {i for (i,) in kept2} == {d["id"] for d, v in zip(docs, u) if v <= 0.4} != set()


def test_random_selection_depends_on_ids_and_seed_not_on_batching(tmp_path: Path) -> None:
    from curation.stats import query

    write_jsonl(tmp_path / "in" / "a.jsonl", _docs(60))
    kept = []
    for batch, seed in ((4, 0), (25, 0), (4, 1)):
        data = pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / f"r{batch}-{seed}",
                             stages=[{"stage": "random_score_v1", "seed": seed},
                                     {"stage": "select_v1", "column": "score_random", "top_fraction": 0.5}])
        data["input"]["batch_size"] = batch
        run_pipeline(data)
        kept.append({i for (i,) in query(tmp_path / f"r{batch}-{seed}", "SELECT id FROM docs")[1]})
    assert kept[0] == kept[1] and kept[0] != kept[2]
    assert 20 <= len(kept[0]) <= 40


def test_id_uniform_is_uniform_enough() -> None:
    u = id_uniform([f"doc-{i}" for i in range(20000)], seed=3)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert u.mean() == pytest.approx(0.5, abs=0.01) and (u < 0.1).mean() == pytest.approx(0.1, abs=0.01)


def test_group_by_keeps_the_top_fraction_of_each_groups_characters(tmp_path: Path) -> None:
    from curation.stats import query

    # two groups of very different size: a pool-wide cut would follow the scores, a stratified one keeps 30%
    # of each group's characters, so the kept mix equals the pool's
    docs = [{**d, "id": f"a{i}", "domain": "big"} for i, d in enumerate(_docs(60))]
    docs += [{**d, "id": f"b{i}", "domain": "small"} for i, d in enumerate(_docs(15))]
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    out = tmp_path / "run"
    stages = [{"stage": "random_score_v1", "name": "r", "seed": 3},
              {"stage": "select_v1", "column": "score_r", "top_fraction": 0.3, "group_by": "domain"}]
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], out, stages=stages))
    _, kept = query(out, "SELECT id, domain, score_r FROM docs")
    _, dropped = query(out, "SELECT id, CAST(json_extract_string(details, '$.score') AS DOUBLE), "
                            "CAST(json_extract_string(details, '$.threshold') AS DOUBLE) FROM decisions")
    chars = {d["id"]: len(d["text"]) for d in docs}
    group = {d["id"]: d["domain"] for d in docs}
    u = dict(zip([d["id"] for d in docs], id_uniform([d["id"] for d in docs], seed=3)))
    for g in ("big", "small"):
        total = sum(c for i, c in chars.items() if group[i] == g)
        share = sum(chars[i] for i, _, _ in kept if group[i] == g) / total
        assert 0.3 <= share < 0.3 + max(chars.values()) / total, g
        # each group's own threshold: every kept score of the group is at or above it, every dropped one below
        thr = {t for i, _, t in dropped if group[i] == g}
        assert len(thr) == 1
        assert min(u[i] for i, _, _ in kept if group[i] == g) >= thr.pop() > max(s for i, s, _ in dropped if group[i] == g)
    with pytest.raises(ValueError, match="group_by needs top_fraction"):
        from curation.stages.scoring.select import SelectConfig
        SelectConfig(column="score_r", threshold=0.5, group_by="domain")


def test_nearest_boundary_keeps_each_group_nearer_its_share(tmp_path: Path) -> None:
    from curation.stats import query

    # a group whose top-scored document is 40% of it: a 30% share with `include` keeps at least that 40%;
    # `nearest` keeps the documents before it only when they end nearer 30%
    docs = [{"id": f"s{i}", "text": ("word " * n).strip(), "domain": "skewed"}
            for i, n in enumerate([400, 50, 50, 50, 50, 100, 100, 100, 100])]
    docs += [{**d, "id": f"e{i}", "domain": "even"} for i, d in enumerate(_docs(20))]
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    chars = {d["id"]: len(d["text"]) for d in docs}
    shares = {}
    for boundary in ("include", "nearest"):
        out = tmp_path / boundary
        stages = [{"stage": "random_score_v1", "name": "r", "seed": 3},
                  {"stage": "select_v1", "column": "score_r", "top_fraction": 0.3, "group_by": "domain",
                   "boundary": boundary}]
        run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], out, stages=stages))
        _, kept = query(out, "SELECT id, domain FROM docs")
        shares[boundary] = {g: sum(chars[i] for i, d in kept if d == g) / sum(c for i, c in chars.items()
                                                                                  if i[0] == g[0]) for g in ("skewed", "even")}
    for g in ("skewed", "even"):
        assert abs(shares["nearest"][g] - 0.3) <= abs(shares["include"][g] - 0.3) + 1e-12, (g, shares)
    assert shares["include"]["skewed"] != shares["nearest"]["skewed"], shares  # the seed makes the big one cross
    assert shares["nearest"]["skewed"] < shares["include"]["skewed"]


def test_group_by_is_left_out_of_the_fingerprint_when_unset() -> None:
    # runs made before group_by existed keep their fingerprint, so they resume
    from curation.pipeline import PipelineConfig

    base = pipeline_dict(["x.jsonl"], "out", stages=[{"stage": "random_score_v1"},
                                                     {"stage": "select_v1", "column": "score_random", "top_fraction": 0.3}])
    plain = PipelineConfig.from_mapping(base).fingerprint_data()["stages"][1]
    assert "group_by" not in plain and "boundary" not in plain and plain["top_fraction"] == 0.3
    grouped = {**base, "stages": [base["stages"][0], {**base["stages"][1], "group_by": "domain"}]}
    assert PipelineConfig.from_mapping(grouped).fingerprint_data()["stages"][1]["group_by"] == "domain"


def test_a_rare_group_the_sample_misses_gets_its_threshold_from_all_its_documents(tmp_path: Path) -> None:
    from curation.stats import query

    # one odd domain value among many documents, a 5% sample: it is missed, and must still keep its top share
    docs = [{**d, "id": f"a{i}", "domain": "big"} for i, d in enumerate(_docs(400))]
    docs += [{"id": f"odd{i}", "text": ("odd words here " * (10 + i)).strip(), "domain": "odd"} for i in range(4)]
    docs += [{"id": "nodomain", "text": "word " * 30}]
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    out = tmp_path / "run"
    stages = [{"stage": "random_score_v1", "name": "r", "seed": 5},
              {"stage": "select_v1", "column": "score_r", "top_fraction": 0.5, "group_by": "domain",
               "sample_fraction": 0.05, "lowest": True}]
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], out, stages=stages))
    _, kept = query(out, "SELECT id, score_r FROM docs WHERE domain = 'odd'")
    _, dropped = query(out, "SELECT id, CAST(json_extract_string(details, '$.score') AS DOUBLE), "
                            "CAST(json_extract_string(details, '$.threshold') AS DOUBLE) FROM decisions "
                            "WHERE id LIKE 'odd%'")
    chars = {d["id"]: len(d["text"]) for d in docs if d["id"].startswith("odd")}
    # lowest: the odd group keeps its lowest scores, at least half of its characters, by an exact threshold
    assert sum(chars[i] for i, _ in kept) >= 0.5 * sum(chars.values()) and dropped
    assert max(s for _, s in kept) <= dropped[0][2] < min(s for _, s, _ in dropped)


@pytest.mark.ray
@pytest.mark.slow
def test_group_by_on_ray_data_matches_the_local_run(ray_cluster: None, tmp_path: Path) -> None:
    from curation.stats import query

    docs = [{**d, "id": f"a{i}", "domain": "big"} for i, d in enumerate(_docs(300))]
    docs += [{"id": f"odd{i}", "text": ("odd words " * (10 + i)).strip(), "domain": "odd"} for i in range(3)]
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    stages = [{"stage": "random_score_v1", "name": "r", "seed": 2},
              {"stage": "select_v1", "column": "score_r", "top_fraction": 0.4, "group_by": "domain",
               "sample_fraction": 0.05}]
    for kind in ("local", "ray"):
        data = pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / kind, stages=stages, kind=kind)
        if kind == "ray":
            data["executor"]["global_in_driver_mb"] = 0  # the global stage on Ray Data, not in the driver
        run_pipeline(data)
    sql = "SELECT id, reason, details FROM decisions ORDER BY id"
    assert query(tmp_path / "ray", sql) == query(tmp_path / "local", sql)
    assert query(tmp_path / "ray", "SELECT count(*) FROM docs WHERE domain = 'odd'")[1][0][0] >= 1
