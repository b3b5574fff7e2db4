"""cross_entropy_diff_v1 (Moore–Lewis): general-LM bpc minus target-LM bpc, on hand-made columns and real LMs."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest

from curation.stages.scoring.cross_entropy_diff import CrossEntropyDiff, CrossEntropyDiffConfig
from curation.stages.scoring.lm_loss import LMLoss, LMLossConfig, LMSpec
from tests.conftest import PROSE
from tests.curation.stages.filters.helpers import batch_of


def test_difference_of_columns_with_nulls() -> None:
    batch = batch_of(["a", "b", "c"]).append_column("bpc_pool", pa.array([3.0, 2.0, None], pa.float64())) \
        .append_column("bpc_tgt", pa.array([1.0, 2.5, 1.0], pa.float64()))
    out = CrossEntropyDiff(CrossEntropyDiffConfig(target="tgt", general="pool")).process(batch)
    assert len(out.kept) == 3 and len(out.dropped) == 0
    col = out.kept.column("score_moore_lewis").to_pylist()
    assert col[:2] == [2.0, -0.5] and (col[2] is None or math.isnan(col[2]))


def test_missing_columns_and_config_errors() -> None:
    with pytest.raises(ValueError, match="bpc_pool"):
        CrossEntropyDiff(CrossEntropyDiffConfig(target="tgt", general="pool")).process(batch_of(["a"]))
    with pytest.raises(ValueError, match="different"):
        CrossEntropyDiffConfig(target="m", general="m")


def test_with_two_real_lms(tiny_lms: dict[str, Path]) -> None:
    texts = [PROSE[0], "zq xv kj wp"]
    lm = LMLoss(LMLossConfig(models=[LMSpec(name="tgt", path=str(tiny_lms["large"])),
                                     LMSpec(name="pool", path=str(tiny_lms["small"]))], block_size=256, stride=128))
    lm.setup()
    scored = lm.process(batch_of(texts)).kept
    out = CrossEntropyDiff(CrossEntropyDiffConfig(target="tgt", general="pool", name="ml")).process(scored).kept
    for i in range(2):
        expected = scored.column("bpc_pool")[i].as_py() - scored.column("bpc_tgt")[i].as_py()
        assert out.column("score_ml")[i].as_py() == pytest.approx(expected)
    # the large LM was trained on PROSE: prose is more target-like than noise
    assert out.column("score_ml")[0].as_py() > out.column("score_ml")[1].as_py()
