"""lm_loss_v1: strided windows score every token once; values equal a direct forward pass."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation.stages.scoring.lm_loss import (LMLoss, LMLossConfig, LMSpec, document_nll, load_lm, scored_chars,
                                             strided_windows)
from curation.testing.tiny import train_tokenizer
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


def _lm_stage(path: Path, max_tokens: int | None) -> LMLoss:
    stage = LMLoss(LMLossConfig(models=[LMSpec(name="m", path=str(path))], block_size=256, stride=128,
                                max_tokens=max_tokens))
    stage.setup()
    return stage


def test_truncated_bpc_is_per_character_scored(tmp_path: Path) -> None:
    # A long repetitive document scored by a model without position effects (the bigram LM): its first
    # 300 tokens are as hard per character as the whole, so truncation must not change bpc.
    tok = _byte_bpe()
    path = tmp_path / "bigram"
    bigram_lm(vocab=len(tok)).save_pretrained(path)  # type: ignore[attr-defined]
    tok.save_pretrained(path)
    text = "The river carries water from the mountains to the sea. " * 300
    full = _lm_stage(path, None).process(batch_of([text])).kept
    cut = _lm_stage(path, 300).process(batch_of([text])).kept
    assert len(tok(text)["input_ids"]) > 8 * 300  # the cut scores under an eighth of the document
    assert cut.column("nll_m")[0].as_py() < full.column("nll_m")[0].as_py() / 8  # only the prefix's loss
    assert cut.column("bpc_m")[0].as_py() == pytest.approx(full.column("bpc_m")[0].as_py(), rel=0.01)


def test_truncated_bpc_does_not_fall_with_length(tiny_lms: dict[str, Path]) -> None:
    # Documents of one style (sentences drawn from the same paragraphs) from 3 to 60 sentences long,
    # scored on their first 64 tokens: most are cut, a few are not.
    sentences = [s.strip() + "." for p in PROSE for s in p.split(".") if s.strip()]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(sentences, size=int(n))) for n in rng.integers(3, 60, size=40)]
    out = _lm_stage(tiny_lms["large"], 64).process(batch_of(texts)).kept
    bpc = np.array(out.column("bpc_m").to_pylist())
    n_chars = np.array([len(t) for t in texts], dtype=float)
    assert np.corrcoef(bpc, 1 / n_chars)[0, 1] ** 2 < 0.1
    assert np.corrcoef(bpc, n_chars)[0, 1] ** 2 < 0.1
    # Dividing the prefix's loss by the whole length (the fault this guards against) is dominated by length.
    whole = np.array(out.column("nll_m").to_pylist()) / (n_chars * math.log(2))
    assert np.corrcoef(whole, 1 / n_chars)[0, 1] > 0.9


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=200),
       st.integers(0, 80), st.booleans())
def test_offsets_and_decoding_count_the_same_characters(text: str, n_kept: int, has_bos: bool) -> None:
    tok = _byte_bpe()
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    n_kept = min(n_kept, len(ids))
    by_offsets = scored_chars(tok, text, ids, n_kept, has_bos, enc["offset_mapping"])
    assert by_offsets == scored_chars(tok, text, ids, n_kept, has_bos, None)
    expected = len(tok.decode(ids[:n_kept])) - (0 if has_bos or n_kept == 0 else len(tok.decode(ids[:1])))
    assert by_offsets == expected
    if n_kept == len(ids):
        assert by_offsets == len(text) - (0 if has_bos else len(tok.decode(ids[:1])))


_TOK: list[object] = []


def _byte_bpe() -> Any:
    """The tests' byte-level BPE tokenizer, trained once."""
    if not _TOK:
        _TOK.append(train_tokenizer(PROSE * 3))
    return _TOK[0]
