"""Tiny local artifacts the tests build themselves: a BPE tokenizer and small causal LMs."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import PROSE


def train_tokenizer(texts: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<bos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>")


def make_lm(out: Path, tokenizer, n_layer: int, n_embd: int, train_steps: int, seed: int,
            texts: list[str] | None = None) -> Path:
    """A GPT-2-style model with random weights, optionally trained a few steps on ``texts``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=n_embd, n_layer=n_layer, n_head=2,
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
