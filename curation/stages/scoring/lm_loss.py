"""Per-document language-model loss (total NLL and bits per character) for a list of causal LMs.

PreSelect (docs/methods.md, PreSelect: per-document loss) scores each document with several
reference models. Here every token of a document is scored exactly once with HF-style strided
windows: a window of ``block_size`` tokens advances by ``stride``, and only tokens no earlier
window scored are counted, so each has at least ``block_size - stride`` tokens of left context
(or all of the document before it).
Unlike the paper's script, windows never cross into the previous document: a document's loss
does not depend on which documents precede it in a shard, so it is reproducible per document.
The tokenizer's BOS token (when it has one) is prepended so the first real token is scored too;
total NLL of the same characters is then comparable across tokenizers.

Each model is loaded once per worker process (a process-level cache, reused by every task that
process runs), on CUDA when the process sees a GPU (bf16), else on CPU in float32. Under the Ray
executor a task sees a GPU only when it asks for one (``num_gpus``, fractions share a GPU): Ray
then limits the task to the GPU it assigned, and the executor hides every GPU from tasks that ask
for none, so ``device: auto`` runs on CPU there and ``device: cuda`` without ``num_gpus`` is
refused when the run is planned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.registry import register_stage
from curation.scoring.hf import load_pretrained
from curation.stages.base import Stage, StageResult, split


def check_model_names(names: list[str]) -> None:
    """A model list is non-empty and its names (column suffixes) are unique."""
    if not names:
        raise ValueError("models: give at least one {name, path}")
    if len(set(names)) != len(names):
        raise ValueError(f"models: duplicate names in {names}")


@dataclass(kw_only=True)
class LMSpec:
    """One reference model: ``name`` (column suffix), ``path`` (hub id or local directory) and
    optionally its downstream benchmark ``score`` (used by ``predictive_strength_v1``)."""

    name: str
    path: str
    score: float | None = None


@dataclass(kw_only=True)
class LMLossConfig:
    """``models``: reference LMs. ``block_size``/``stride``: strided scoring windows (the paper's
    1900/512). ``batch_size``: windows per forward pass. ``device``: auto|cpu|cuda. ``dtype``:
    auto (bf16 on CUDA, float32 on CPU)|float32|bfloat16|float16. ``max_tokens``: score at most
    this many tokens per document (None: all). ``num_gpus``: GPUs a Ray task running this stage
    asks for (1, or a fraction such as 0.5 to share a GPU between tasks). Under Ray a task that
    asks for none sees no GPU: set it on GPU clusters, ``device: cuda`` requires it."""

    models: list[LMSpec] = field(default_factory=list)
    block_size: int = 1900
    stride: int = 512
    batch_size: int = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_tokens: int | None = None
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        check_choices(self)
        check_model_names([m.name for m in self.models])
        if not 0 < self.stride <= self.block_size - 1:
            raise ValueError("stride must be in [1, block_size - 1]")


def load_lm(path: str, device: str, dtype: str) -> tuple[Any, Any]:
    """(tokenizer, causal LM) for ``path``, loaded once per process."""
    return load_pretrained(path, device, dtype, "AutoModelForCausalLM")


def strided_windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, n_targets)`` windows over ``n_tokens`` tokens: the last ``n_targets``
    tokens of ``[begin, end)`` are scored, and every token but the first is scored once."""
    out, prev_end = [], 1  # token 0 (BOS, or the first token) has no context: never a target
    for begin in range(0, n_tokens, stride):
        end = min(begin + block_size, n_tokens)
        if end > prev_end:
            out.append((begin, end, end - prev_end))
            prev_end = end
        if end == n_tokens:
            break
    return out


def document_nll(model: Any, token_lists: list[list[int]], block_size: int, stride: int, batch_size: int,
                 device: str) -> tuple[np.ndarray, np.ndarray]:
    """Total NLL (nats) and scored-token count of each token list, windows batched across lists."""
    import torch

    jobs = [(d, b, e, n) for d, ids in enumerate(token_lists) for b, e, n in strided_windows(len(ids), block_size, stride)]
    jobs.sort(key=lambda j: j[2] - j[1])  # similar lengths together: less padding
    nll = np.zeros(len(token_lists), dtype=np.float64)
    count = np.zeros(len(token_lists), dtype=np.int64)
    with torch.inference_mode():
        for k in range(0, len(jobs), batch_size):
            chunk = jobs[k: k + batch_size]
            width = max(e - b for _, b, e, _ in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (d, b, e, _) in enumerate(chunk):
                ids[r, : e - b] = torch.tensor(token_lists[d][b:e])
                mask[r, : e - b] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for r, (d, b, e, n) in enumerate(chunk):
                # Row by row: one (length x vocab) log-softmax at a time bounds memory.
                lp = torch.log_softmax(logits[r, : e - b - 1].float(), dim=-1)
                tgt = ids[r, 1: e - b].to(lp.device)
                tok_nll = -lp.gather(1, tgt[:, None])[:, 0]
                nll[d] += float(tok_nll[-n:].sum())
                count[d] += n
    return nll, count


def scored_chars(tok: Any, text: str, ids: list[int], n_kept: int, has_bos: bool,
                 offsets: list[tuple[int, int]] | None) -> int:
    """Characters of ``text`` covered by the tokens whose NLL is summed: the first ``n_kept`` tokens,
    less the first one when there is no BOS (it has no context and is never a target).

    Bits per character must divide by these, not by the whole text: with ``max_tokens`` a long
    document's NLL covers only a prefix, and dividing by all its characters made bpc fall as
    1/length. ``offsets`` (a fast tokenizer's character spans) give the span exactly; otherwise
    the kept tokens are decoded and their length counted."""
    if n_kept == 0:
        return 0
    if offsets is not None:
        end = len(text) if n_kept == len(ids) else offsets[n_kept - 1][1]
        start = 0 if has_bos else offsets[0][1]
    else:
        end = len(text) if n_kept == len(ids) else len(tok.decode(ids[:n_kept]))
        start = 0 if has_bos else len(tok.decode(ids[:1]))
    return max(0, end - start)


@register_stage("lm_loss_v1")
class LMLoss(Stage):
    """Adds ``nll_<name>`` (total nats of the scored tokens) and ``bpc_<name>`` (those nats in bits, per
    character those tokens cover) per model. Without ``max_tokens`` every token is scored; with it,
    only a document's first ``max_tokens`` tokens, and bpc is per character of that prefix."""

    Config = LMLossConfig
    requires = ("torch", "transformers")

    artifact_keys = ("models.*.path",)

    def _device(self) -> tuple[str, str]:
        import torch

        c = self.config
        device = ("cuda" if torch.cuda.is_available() else "cpu") if c.device == "auto" else c.device
        dtype = ("bfloat16" if device == "cuda" else "float32") if c.dtype == "auto" else c.dtype
        return device, dtype

    def resources(self) -> dict[str, float]:
        return {"num_gpus": self.config.num_gpus} if self.config.num_gpus else {}

    def cuda_demand(self) -> str | None:
        return "device: cuda" if self.config.device == "cuda" else None

    def setup(self) -> None:
        device, dtype = self._device()
        for m in self.config.models:
            load_lm(m.path, device, dtype)

    def output_columns(self) -> dict[str, pa.DataType]:
        cols: dict[str, pa.DataType] = {}
        for m in self.config.models:
            cols[f"nll_{m.name}"] = pa.float64()
            cols[f"bpc_{m.name}"] = pa.float64()
        return cols

    def process(self, batch: pa.Table) -> StageResult:
        c = self.config
        device, dtype = self._device()
        texts = batch.column("text").to_pylist()
        for m in c.models:
            tok, model = load_lm(m.path, device, dtype)
            enc = tok(texts, add_special_tokens=False, return_offsets_mapping=bool(getattr(tok, "is_fast", False)))
            bos = tok.bos_token_id
            lists, chars = [], np.zeros(len(texts), dtype=np.float64)
            for i, (text, ids) in enumerate(zip(texts, enc["input_ids"])):
                kept = ids if c.max_tokens is None else ids[: c.max_tokens]
                offsets = enc["offset_mapping"][i] if "offset_mapping" in enc else None
                chars[i] = scored_chars(tok, text, ids, len(kept), bos is not None, offsets)
                lists.append(([bos] if bos is not None else []) + kept)
            nll, _ = document_nll(model, lists, c.block_size, c.stride, c.batch_size, device)
            with np.errstate(divide="ignore", invalid="ignore"):
                bpc = np.where(chars > 0, nll / (chars * math.log(2)), np.nan)
            batch = batch.append_column(f"nll_{m.name}", pa.array(nll, pa.float64()))
            batch = batch.append_column(f"bpc_{m.name}", pa.array(bpc, pa.float64(), from_pandas=True))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))
