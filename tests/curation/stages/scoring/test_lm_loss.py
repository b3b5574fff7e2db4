"""lm_loss_v1: strided windows score every token once; values equal a direct forward pass."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation.stages.scoring.lm_loss import LMLoss, LMLossConfig, LMSpec, document_nll, load_lm, strided_windows
from tests.conftest import PROSE
from tests.curation.stages.filters.helpers import batch_of


@given(st.integers(1, 400), st.integers(2, 64), st.data())
def test_windows_score_each_token_once(n: int, block: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, block - 1))
    scored: list[int] = []
    for begin, end, n_targets in strided_windows(n, block, stride):
        assert 0 < end - begin <= block and n_targets <= end - begin - 1  # every target has context
        scored += list(range(end - n_targets, end))
    assert scored == list(range(1, n))


def direct_nll(path: Path, text: str) -> float:
    """Hand computation: one forward pass over BOS + the whole text, summed token NLL."""
    import torch

    tok, model = load_lm(str(path), "cpu", "float32")
    ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    return float(-logp.gather(1, ids[0, 1:, None]).sum())


def test_loss_matches_a_direct_forward_pass(tiny_lms: dict[str, Path]) -> None:
    texts = [PROSE[0], PROSE[1][:80], "x"]
    stage = LMLoss(LMLossConfig(models=[LMSpec(name="m", path=str(tiny_lms["medium"]))], block_size=512, stride=256))
    stage.setup()
    out = stage.process(batch_of(texts)).kept
    for i, text in enumerate(texts):
        expected = direct_nll(tiny_lms["medium"], text)
        assert out.column("nll_m")[i].as_py() == pytest.approx(expected, rel=1e-5)
        assert out.column("bpc_m")[i].as_py() == pytest.approx(expected / (len(text) * math.log(2)), rel=1e-5)


def test_short_windows_still_score_every_token(tiny_lms: dict[str, Path]) -> None:
    tok, model = load_lm(str(tiny_lms["small"]), "cpu", "float32")
    ids = [tok.bos_token_id] + tok(PROSE[2], add_special_tokens=False)["input_ids"]
    nll_full, n_full = document_nll(model, [ids], 512, 256, 4, "cpu")
    nll_win, n_win = document_nll(model, [ids, ids[:50]], 32, 8, 3, "cpu")  # batched with another document
    assert n_full[0] == n_win[0] == len(ids) - 1 and n_win[1] == 49
    # The small model is untrained (no use of context), so limited context changes little.
    assert nll_win[0] == pytest.approx(nll_full[0], rel=0.02)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LMLossConfig(models=[])
    with pytest.raises(ValueError, match="stride"):
        LMLossConfig(models=[LMSpec(name="a", path="x")], block_size=8, stride=8)
    with pytest.raises(ValueError, match="duplicate"):
        LMLossConfig(models=[LMSpec(name="a", path="x"), LMSpec(name="a", path="y")])
    assert np.isnan(float("nan"))
