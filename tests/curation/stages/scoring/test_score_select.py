"""fasttext_score_v1 and select_v1: columns equal raw fastText, top-by-characters threshold, decisions, stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation.errors import ConfigError
from curation.scoring.classifier import FastTextSettings, normalise, train_classifier
from curation.stages.scoring.fasttext_score import FastTextScore, FastTextScoreConfig, ScorerSpec
from curation.stages.scoring.select import SelectConfig, top_fraction_threshold
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.scoring.test_classifier import sample_texts
from tests.curation.stages.filters.helpers import batch_of


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scorer")
    train_classifier(out, sample_texts("code"), sample_texts("python_docs")[:300], FastTextSettings(epoch=25, lr=0.5, bucket=200_000),
                     {"method": "test"}, valid_fraction=0.0)
    return out


def test_score_column_equals_raw_fasttext(scorer: Path) -> None:
    import fasttext

    texts = sample_texts("code")[:5] + PROSE
    stage = FastTextScore(FastTextScoreConfig(models=[ScorerSpec(name="code", path=str(scorer))]))
    stage.setup()
    got = stage.process(batch_of(texts)).kept.column("score_code").to_numpy()
    raw = fasttext.load_model(str(scorer / "model.bin"))
    for t, g in zip(texts, got):
        labels, probs = raw.predict(normalise(t), k=-1)
        # fastText's softmax can exceed 1 by ~1e-5; the column is clipped to [0, 1].
        assert g == pytest.approx(min(1.0, dict(zip(labels, probs))["__label__1"]), abs=1e-6)
    assert (got[:5] > 0.5).all() and (got[5:] < 0.5).all()


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train-scorer"):
        FastTextScore(FastTextScoreConfig(models=[ScorerSpec(name="x", path=str(tmp_path / "nope"))]))


def test_top_fraction_threshold_by_characters() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1, np.nan])
    chars = np.array([100.0, 100.0, 100.0, 700.0, 50.0])
    assert top_fraction_threshold(scores, chars, 0.3) == 0.7  # 300 of 1,000 characters
    assert top_fraction_threshold(scores, chars, 0.25) == 0.7  # the document that crosses the line is kept
    assert top_fraction_threshold(scores, chars, 1.0) == 0.1
    with pytest.raises(ValueError):
        SelectConfig(column="s", threshold=0.5, top_fraction=0.1)


def test_nearest_boundary_leaves_out_a_crossing_document_that_overshoots() -> None:
    # a source whose second document is 23% of it: a 15% share with `include` keeps 33%
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    chars = np.array([10.0, 23.0, 30.0, 37.0])
    assert top_fraction_threshold(scores, chars, 0.15) == 0.8  # include: 33 of 100 characters
    assert top_fraction_threshold(scores, chars, 0.15, "nearest") == 0.9  # 10 is nearer 15 than 33 is
    assert top_fraction_threshold(scores, chars, 0.25, "nearest") == 0.8  # 33 is nearer 25 than 10 is
    # before the first document: keeping nothing is nearest to 4%
    assert top_fraction_threshold(scores, chars, 0.04, "nearest") == float("inf")
    # a tie cannot be split: the crossing document's whole tie block is kept or dropped, whichever is nearer
    assert top_fraction_threshold(np.array([0.9, 0.9, 0.5]), np.array([10.0, 23.0, 67.0]), 0.15, "nearest") == float("inf")
    assert top_fraction_threshold(np.array([0.9, 0.9, 0.5]), np.array([10.0, 23.0, 67.0]), 0.25, "nearest") == 0.9
    # the tie block can reach past the crossing document: include then keeps all of it (100), nearest 10
    tied = (np.array([0.9, 0.5, 0.5, 0.5]), np.array([10.0, 10.0, 40.0, 40.0]))
    assert top_fraction_threshold(*tied, 0.2) == 0.5 and top_fraction_threshold(*tied, 0.2, "nearest") == 0.9
    # no threshold lies above +inf: a first block of +inf scores is kept, as include keeps it
    inf = float("inf")
    assert top_fraction_threshold(np.array([inf, 0.5]), np.array([50.0, 50.0]), 0.2, "nearest") == inf
    with pytest.raises(ValueError, match="boundary must be one of"):
        SelectConfig(column="s", top_fraction=0.1, boundary="closest")
    with pytest.raises(ValueError, match="boundary needs top_fraction"):
        SelectConfig(column="s", threshold=0.5, boundary="nearest")


def test_nearest_boundary_that_keeps_nothing_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import pyarrow as pa

    from curation.stages.scoring.select import Select

    stage = Select(SelectConfig(column="s", top_fraction=0.3, boundary="nearest"))
    one = pa.table({"_sel_score": pa.array([0.7]), "_sel_chars": pa.array([100], pa.int64())})
    with caplog.at_level(logging.WARNING, logger="curation.stages.scoring.select"):
        assert stage._threshold_of(one, "solo") == float("inf")
    assert "keeps nothing of group 'solo'" in caplog.text
    caplog.clear()
    unscored = pa.table({"_sel_score": pa.array([float("nan")]), "_sel_chars": pa.array([100], pa.int64())})
    with caplog.at_level(logging.WARNING, logger="curation.stages.scoring.select"):
        assert stage._threshold_of(unscored, "none") == float("inf")
    assert "keeps nothing" not in caplog.text  # no scored document: nothing to keep, no warning


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 50)), min_size=1, max_size=30),
       st.floats(0.01, 1.0))
def test_nearest_boundary_lands_at_least_as_near_the_share_as_include(docs: list[tuple[int, int]],
                                                                       fraction: float) -> None:
    scores = np.array([float(s) for s, _ in docs])
    chars = np.array([float(c) for _, c in docs])
    target = fraction * chars.sum()

    def kept(thr: float) -> float:
        return float(chars[scores >= thr].sum())

    inc, near = kept(top_fraction_threshold(scores, chars, fraction)), kept(
        top_fraction_threshold(scores, chars, fraction, "nearest"))
    assert inc >= target - 1e-9  # include always reaches the share
    assert abs(near - target) <= abs(inc - target) + 1e-9
    # nearest differs from include only by the block of documents tied at the boundary score, and it is the
    # nearer of the two block boundaries around the share
    assert near <= inc
    levels = sorted(set(scores.tolist()), reverse=True)
    ends = [0.0] + [kept(v) for v in levels]  # every share a threshold can produce
    below = max(e for e in ends if e < target - 1e-9) if any(e < target - 1e-9 for e in ends) else None
    above = min(e for e in ends if e >= target - 1e-9)
    best = above if below is None or abs(above - target) < abs(below - target) else below
    assert abs(abs(near - target) - abs(best - target)) <= 1e-9


def test_score_then_select_pipeline_records_decisions_and_histograms(scorer: Path, tmp_path: Path) -> None:
    from curation.stats import query, summary

    code, prose = sample_texts("code")[:6], sample_texts("python_docs")[:14]
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"c{i}", "text": t, "domain": "code"} for i, t in enumerate(code)]
                + [{"id": f"p{i}", "text": t, "domain": "docs"} for i, t in enumerate(prose)])
    stages = [{"stage": "fasttext_score_v1", "models": [{"name": "code", "path": str(scorer)}]},
              {"stage": "select_v1", "column": "score_code", "top_fraction": 0.5}]
    out = tmp_path / "run"
    res = run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], out, stages=stages))
    chars = {f"c{i}": len(t) for i, t in enumerate(code)} | {f"p{i}": len(t) for i, t in enumerate(prose)}
    _, kept = query(out, "SELECT id, score_code FROM docs")
    _, dropped = query(out, "SELECT id, reason, CAST(json_extract_string(details, '$.score') AS DOUBLE), "
                            "CAST(json_extract_string(details, '$.threshold') AS DOUBLE) FROM decisions")
    thr = dropped[0][3]
    assert all(s >= thr for _, s in kept) and all(r == "below_threshold" and s < thr for _, r, s, _ in dropped)
    kept_chars = sum(chars[i] for i, _ in kept)
    assert kept_chars >= 0.5 * sum(chars.values())  # at least the top half of characters ...
    smallest = min(chars[i] for i, _ in kept if _ == min(s for _, s in kept))
    assert kept_chars - smallest < 0.5 * sum(chars.values())  # ... and no more than the document that crosses it
    assert res.manifest["stages"][-1]["dropped"] == {"below_threshold": len(dropped)}
    hist = summary(out)["scores"]["score_code"]
    assert sum(n for *_, n, _ in hist) == 20 and sum(k for *_, k in hist) == len(kept)


def _keys(scores: list[float | None], chars: list[int]) -> "pa.Table":
    import pyarrow as pa

    n = len(scores)
    return pa.table({"id": [f"d{i}" for i in range(n)], "_task": pa.array([0] * n, pa.int32()),
                     "_row": pa.array(range(n), pa.int64()), "_sel_score": pa.array(scores, pa.float64()),
                     "_sel_chars": pa.array(chars, pa.int64())})


def test_fixed_threshold_and_null_scores() -> None:
    from curation.stages.frame import LocalFrame
    from curation.stages.scoring.select import Select

    stage = Select(SelectConfig(column="s", threshold=0.5))
    out = stage.run_global(LocalFrame(_keys([0.9, 0.5, 0.49, None], [10, 10, 10, 10]))).collect()
    assert out.select(["id", "reason", "threshold"]).to_pylist() == [
        {"id": "d2", "reason": "below_threshold", "threshold": 0.5}, {"id": "d3", "reason": "no_score", "threshold": 0.5}]


def test_sampled_threshold_is_close_to_the_exact_one() -> None:
    from curation.stages.frame import LocalFrame
    from curation.stages.scoring.select import Select

    rng = np.random.default_rng(0)
    scores, chars = rng.random(20_000).tolist(), rng.integers(100, 1000, 20_000).tolist()
    exact = Select(SelectConfig(column="s", top_fraction=0.1)).thresholds(LocalFrame(_keys(scores, chars)))[None]
    sampled = Select(SelectConfig(column="s", top_fraction=0.1, sample_fraction=0.1)).thresholds(
        LocalFrame(_keys(scores, chars)))[None]
    assert exact == pytest.approx(0.9, abs=0.01) and sampled == pytest.approx(exact, abs=0.02)
    with pytest.raises(ValueError, match="sample"):
        Select(SelectConfig(column="s", top_fraction=0.1, sample_fraction=1e-6)).thresholds(LocalFrame(_keys(scores[:5], chars[:5])))


def test_a_retrained_model_behind_the_same_path_is_not_resumed_into(tmp_path: Path) -> None:
    from curation.errors import FatalError

    model = tmp_path / "model"
    train_classifier(model, sample_texts("code")[:50], sample_texts("python_docs")[:50], FastTextSettings(epoch=2),
                     {"method": "test"}, valid_fraction=0.0)
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "p", "text": PROSE[0]}])
    data = pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run",
                         stages=[{"stage": "fasttext_score_v1", "models": [{"name": "code", "path": str(model)}]}])
    run_pipeline(data)
    assert run_pipeline(data).nothing_to_do
    train_classifier(model, sample_texts("code")[:60], sample_texts("python_docs")[:60], FastTextSettings(epoch=3),
                     {"method": "test"}, valid_fraction=0.0)
    with pytest.raises(FatalError, match=r"changed: artifacts\.stages\.0\.models\.0\.path"):
        run_pipeline(data)
