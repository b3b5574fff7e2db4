"""Evaluate a ``train`` checkpoint on curation runs: mean next-token loss per domain, one pass.

    train eval runs/train-tiny/checkpoint.pt --runs runs/heldout --out runs/train-tiny/heldout.json

Unlike the loss ``train`` logs during training (a few fixed batches drawn by the mixture loader),
this reads every document of each domain of the given runs once, in manifest order, packs them as
the loader does (document tokens, then EOS) and scores non-overlapping windows of the checkpoint's
``seq_len`` (each token scored once, with the context of its window). ``max_tokens`` caps the
tokens scored per domain (the first ones in manifest order: deterministic). So the number is
reproducible and comparable between checkpoints trained on different data: what held-out
evaluation of a selection experiment needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from training.checkpoint import read_checkpoint
from training.data.loader import _Shards, build_index
from training.data.meco import IGNORE_INDEX
from training.data.tokenizer import make_tokenizer


def domain_tokens(runs: list[str], tokenizer: Any, group_by: str = "domain",
                  max_tokens: int | None = None) -> dict[str, np.ndarray]:
    """Per domain, the packed token stream (documents in manifest order, EOS after each)."""
    shards, index, _ = build_index(runs, group_by)
    reader = _Shards(shards, "text")
    out: dict[str, np.ndarray] = {}
    for dom in sorted(index):
        stream: list[int] = []
        refs = index[dom]
        for k in range(0, len(refs), 64):
            texts = [reader.get(int(s), int(r))[0] for s, r in refs[k:k + 64]]
            for toks in tokenizer.encode_batch(texts):
                stream.extend(toks)
                stream.append(tokenizer.eos_id)
            if max_tokens is not None and len(stream) > max_tokens:
                break
        out[dom] = np.array(stream[: (max_tokens + 1) if max_tokens is not None else None], dtype=np.int64)
    return out


def evaluate_checkpoint(checkpoint: str | Path, runs: list[str], max_tokens: int | None = None,
                        batch_size: int = 16, group_by: str = "domain") -> dict[str, Any]:
    """``{"domains": {d: {"loss", "tokens", "bits_per_token"}}, "all": {...}, "step", "tokens_trained"}``."""
    import torch

    from training.model import GPT, GPTConfig

    ckpt = read_checkpoint(checkpoint, map_location="cpu")
    cfg = ckpt["config"]
    mcfg = GPTConfig(**cfg["model"])
    model = GPT(mcfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    tokenizer = make_tokenizer(cfg["data"]["tokenizer"])
    if tokenizer.vocab_size != mcfg.vocab_size:
        raise ValueError(f"{checkpoint}: model vocabulary {mcfg.vocab_size} != tokenizer's {tokenizer.vocab_size}")
    seq = mcfg.seq_len
    result: dict[str, Any] = {"domains": {}}
    total_nll, total_n = 0.0, 0
    for dom, stream in domain_tokens(runs, tokenizer, group_by, max_tokens).items():
        # windows of seq_len + 1 tokens overlapping by one: every token after the first is a target once
        starts = list(range(0, max(1, len(stream) - 1), seq))
        nll, n = 0.0, 0
        with torch.no_grad():
            for k in range(0, len(starts), batch_size):
                rows = [stream[s: s + seq + 1] for s in starts[k:k + batch_size]]
                width = max(len(r) for r in rows)
                x = torch.zeros((len(rows), width - 1), dtype=torch.long)
                y = torch.full((len(rows), width - 1), IGNORE_INDEX, dtype=torch.long)  # padding: not a target
                for i, r in enumerate(rows):
                    x[i, : len(r) - 1] = torch.from_numpy(r[:-1])
                    y[i, : len(r) - 1] = torch.from_numpy(r[1:])
                _, loss = model(x, y, reduction="sum")
                nll += float(loss)
                n += int((y != IGNORE_INDEX).sum())
        if n == 0:
            continue
        result["domains"][dom] = {"loss": nll / n, "tokens": n, "bits_per_token": nll / n / math.log(2)}
        total_nll, total_n = total_nll + nll, total_n + n
    if total_n == 0:
        raise ValueError(f"runs {runs}: no tokens to evaluate")
    result["all"] = {"loss": total_nll / total_n, "tokens": total_n, "bits_per_token": total_nll / total_n / math.log(2)}
    result["step"] = int(ckpt["step"])
    steps_tokens = cfg["data"]["batch_size"] * cfg["data"]["seq_len"] * cfg.get("grad_accum", 1)
    result["tokens_trained"] = int(ckpt["step"]) * steps_tokens  # one rank's view; world size is not saved
    return result


def natural_mixture(runs: list[str], tokenizer: str = "bytes", group_by: str = "domain") -> dict[str, float]:
    """Token share of each domain in ``runs`` (a ``data.ratios_file`` for training on a run as it is).

    The loader samples domains by ratio; a selection run keeps its domains in uneven proportions,
    and training on "the selected data as selected" means ratios equal to those proportions."""
    tok = make_tokenizer(tokenizer)
    counts = {d: int(len(s)) for d, s in domain_tokens(runs, tok, group_by).items()}
    total = sum(counts.values())
    if total == 0:
        raise ValueError(f"runs {runs}: no tokens")
    return {d: round(n / total, 8) for d, n in counts.items() if n > 0}
