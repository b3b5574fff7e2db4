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


def bigram_lm(vocab: int = 64, seed: int = 0) -> object:
    """A hand-built causal LM whose next-token distribution depends on the current token only.

    No transformer layers: logits = lm_head(norm(embed(token))). With random, fairly peaked weights its
    per-token NLL varies by several nats, so scoring the wrong tokens changes the sum, while any window
    that gives each target at least one token of context scores it exactly as a full pass does.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=0, num_attention_heads=2, num_key_value_heads=2,
                                         tie_word_embeddings=False)).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0, 1)
        model.lm_head.weight.normal_(0, 0.7)
    return model


def test_short_windows_score_the_right_tokens() -> None:
    import torch

    model = bigram_lm()
    rng = np.random.default_rng(0)
    docs = [[int(t) for t in rng.integers(0, 64, n)] for n in (300, 50, 33)]
    with torch.no_grad():  # per-token NLL of one full pass: the hand computation
        token_nll = [-torch.log_softmax(model(input_ids=torch.tensor([d])).logits[0, :-1], -1)
                     .gather(1, torch.tensor(d[1:])[:, None])[:, 0].double().numpy() for d in docs]
    assert token_nll[0].std() > 2.0  # far from uniform: wrong tokens give a different sum
    # 300 tokens in windows of 32 advancing by 8: 37 windows, all but the first scoring their last 8 tokens,
    # batched with the other documents' windows.
    nll, count = document_nll(model, docs, 32, 8, 3, "cpu")
    assert count.tolist() == [299, 49, 32]
    assert nll == pytest.approx([t.sum() for t in token_nll], rel=1e-6)
    # Each document scored alone, and with one window, gives the same.
    for d, t in zip(docs, token_nll):
        assert document_nll(model, [d], 512, 256, 4, "cpu")[0][0] == pytest.approx(t.sum(), rel=1e-6)
        assert document_nll(model, [d], 32, 8, 1, "cpu")[0][0] == pytest.approx(t.sum(), rel=1e-6)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LMLossConfig(models=[])
    with pytest.raises(ValueError, match="stride"):
        LMLossConfig(models=[LMSpec(name="a", path="x")], block_size=8, stride=8)
    with pytest.raises(ValueError, match="duplicate"):
        LMLossConfig(models=[LMSpec(name="a", path="x"), LMSpec(name="a", path="y")])
    with pytest.raises(ValueError, match="device"):
        LMLossConfig(models=[LMSpec(name="a", path="x")], device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        LMLossConfig(models=[LMSpec(name="a", path="x")], dtype="fp8")


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_models_load_in_the_requested_dtype(tiny_lms: dict[str, Path], dtype: str) -> None:
    # from_pretrained(dtype=...): the keyword transformers 4.56 introduced in place of torch_dtype=.
    import torch

    _, model = load_lm(str(tiny_lms["small"]), "cpu", dtype)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}


def test_transformers_lower_bound_knows_the_dtype_keyword() -> None:
    import tomllib

    from tests.conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [s for deps in [project["dependencies"], *project["optional-dependencies"].values()] for s in deps
             if s.startswith("transformers")]
    assert specs and all(s.startswith("transformers>=") for s in specs), specs
    lows = [tuple(int(x) for x in s.split(">=")[1].split(",")[0].split(".")[:2]) for s in specs]
    assert all(low >= (4, 56) for low in lows), specs
