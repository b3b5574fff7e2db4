"""PreSelect predictive strength: the formula on hand-made losses, then end to end with three tiny LMs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from curation.stages.scoring.lm_loss import LMLoss, LMLossConfig, LMSpec
from curation.stages.scoring.predictive import ModelScore, PredictiveStrength, PredictiveStrengthConfig, predictive_strength
from tests.conftest import PROSE
from tests.curation.stages.filters.helpers import batch_of
from tests.curation.stages.scoring.test_lm_loss import direct_nll


def test_formula_with_ties() -> None:
    scores = [70.0, 75.0, 80.0, 80.0]  # models c and d tie on the benchmark: pair (c, d) is left out
    losses = np.array([
        [3.0, 2.0, 1.0, 1.5],  # all 5 counted pairs concordant
        [1.0, 2.0, 3.0, 0.5],  # only d beats a and b
        [2.0, 2.0, 1.0, 1.0],  # a=b tie on loss: discordant
        [1.0, np.nan, 1.0, 1.0],  # missing loss -> null
    ])
    conc, s = predictive_strength(losses, scores)
    # Counted pairs (better, worse): (b,a) (c,a) (d,a) (c,b) (d,b) -> Z = 5.
    # doc1: b<a no, c<a no, d<a yes, c<b no, d<b yes -> 2.  doc2: b<a no (tie), c<a, d<a, c<b, d<b -> 4.
    assert conc.tolist() == [5, 2, 4, -1]
    assert s[:3].tolist() == [1.0, 0.4, 0.8] and math.isnan(s[3])
    with pytest.raises(ValueError):
        predictive_strength(losses, [1.0, 1.0, 1.0, 1.0])


def test_three_tiny_lms_end_to_end_against_hand_computation(tiny_lms: dict[str, Path]) -> None:
    bench = {"small": 20.0, "medium": 35.0, "large": 50.0}
    texts = [PROSE[0], PROSE[1], PROSE[2], "Completely different words about quantum chromodynamics.", "aaaa bbbb cccc"]
    lm = LMLoss(LMLossConfig(models=[LMSpec(name=n, path=str(p)) for n, p in tiny_lms.items()], block_size=256, stride=128))
    lm.setup()
    scored = lm.process(batch_of(texts)).kept
    ps = PredictiveStrength(PredictiveStrengthConfig(models=[ModelScore(name=n, score=s) for n, s in bench.items()]))
    out = ps.process(scored).kept
    order = sorted(bench, key=bench.get, reverse=True)  # large > medium > small
    for i, text in enumerate(texts):
        bpc = {n: direct_nll(tiny_lms[n], text) / (len(text) * math.log(2)) for n in bench}
        hand = sum(bpc[order[a]] < bpc[order[b]] for a in range(3) for b in range(a + 1, 3)) / 3
        assert out.column("predictive_strength")[i].as_py() == pytest.approx(hand)
        assert out.column("predictive_concordant")[i].as_py() == round(hand * 3)
    # The trained models fit the training prose better: perfect concordance there.
    assert out.column("predictive_strength").to_pylist()[:3] == [1.0, 1.0, 1.0]


def test_missing_loss_columns_are_named() -> None:
    ps = PredictiveStrength(PredictiveStrengthConfig(models=[ModelScore(name="a", score=1), ModelScore(name="b", score=2)]))
    with pytest.raises(ValueError, match=r"bpc_a"):
        ps.process(batch_of(["x"]))


def test_seed_replicas_are_averaged_before_pairs_are_ordered() -> None:
    import pyarrow as pa

    # a (score 1) and b (score 2), each trained with two seeds. Seed 0 alone orders doc 0 the wrong way
    # (b 2.0 > a 1.9: discordant); the seed means (a 1.95, b 1.5) order it the right way.
    t = batch_of(["doc0", "doc1"])
    for name, vals in {"a0": [1.9, 1.0], "a1": [2.0, 1.0], "b0": [2.0, 2.0], "b1": [1.0, None]}.items():
        t = t.append_column(f"bpc_{name}", pa.array(vals, pa.float64()))
    single = PredictiveStrength(PredictiveStrengthConfig(models=[ModelScore(name="a0", score=1), ModelScore(name="b0", score=2)]))
    assert single.process(t).kept.column("predictive_strength").to_pylist() == [0.0, 0.0]
    avg = PredictiveStrength(PredictiveStrengthConfig(models=[ModelScore(name="a0", score=1, replicas=["a1"]),
                                                              ModelScore(name="b0", score=2, replicas=["b1"])]))
    # doc 1 lacks b's second seed: null, as any missing loss
    assert avg.process(t).kept.column("predictive_strength").to_pylist() == [1.0, None]
    with pytest.raises(ValueError, match="bpc_b2"):
        PredictiveStrength(PredictiveStrengthConfig(models=[ModelScore(name="a0", score=1),
                                                            ModelScore(name="b0", score=2, replicas=["b2"])])).process(t)
    with pytest.raises(ValueError, match="repeat"):
        ModelScore(name="a0", score=1, replicas=["a0"])
