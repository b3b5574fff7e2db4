"""Three tiny LMs of different sizes and training amounts, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PROSE
from curation.testing.tiny import make_lm, train_tokenizer


@pytest.fixture(scope="session")
def tiny_lms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lms")
    tok = train_tokenizer(PROSE * 3)
    return {
        "small": make_lm(root / "small", tok, n_layer=1, n_embd=16, train_steps=0, seed=0),
        "medium": make_lm(root / "medium", tok, n_layer=1, n_embd=32, train_steps=10, seed=1),
        "large": make_lm(root / "large", tok, n_layer=2, n_embd=32, train_steps=40, seed=2),
    }
