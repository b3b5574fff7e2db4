"""Tiny local artifacts built on the spot, never downloaded: English prose, a BPE tokenizer, small causal LMs.

Used by the tests and by the benchmarks' CPU runs; it must not import pytest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Real English prose long enough for the Gopher/C4/FineWeb rules (>= 50 words, 5 sentences).
PROSE = [
    "The library keeps a record of every book that is borrowed by a member of the public. "
    "When a book is returned late, the member pays a small fine that goes to the reading fund. "
    "Most of the members are students who come to the library in the evening to study. "
    "The staff have noticed that the quiet rooms are full by seven o'clock on most days. "
    "They have asked the council for more money so that they can open a second floor for study. "
    "The council will make its decision at the meeting that is planned for the end of the month.",
    "Rivers carry water from the mountains to the sea, and along the way they shape the land. "
    "A fast river cuts a deep valley into the rock, while a slow one spreads out over a wide plain. "
    "Farmers have lived beside rivers for thousands of years because the soil there is rich. "
    "Floods bring new soil each year, but they can also destroy homes and fields in a single night. "
    "Engineers build walls and channels to control the water and to protect the towns nearby. "
    "Some scientists argue that these walls make the floods worse further down the river.",
    "Learning to cook is one of the most useful skills that a young person can have at home. "
    "It saves money, because a meal made at home costs much less than one bought in a shop. "
    "It is also healthier, since the cook can choose fresh food and use less salt and sugar. "
    "Many people say that they do not have the time to cook, but simple meals take only minutes. "
    "A pot of soup or a plate of pasta with vegetables can be ready in less than half an hour. "
    "With a little practice, anyone can learn to make a few good dishes that the family will enjoy.",
]


def train_tokenizer(texts: list[str], vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, with ``<bos>`` and ``<pad>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<bos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>")


def make_lm(out: Path, tokenizer: Any, n_layer: int, n_embd: int, train_steps: int, seed: int,
            texts: list[str] | None = None, n_positions: int = 512) -> Path:
    """A GPT-2-style model with random weights, optionally trained a few steps on ``texts``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.bos_token_id)
    model = GPT2LMHeadModel(cfg)
    if train_steps:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        ids = [[tokenizer.bos_token_id] + tokenizer(t)["input_ids"][:127] for t in (texts or PROSE)]
        model.train()
        for step in range(train_steps):
            batch = torch.tensor([ids[step % len(ids)]])
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
