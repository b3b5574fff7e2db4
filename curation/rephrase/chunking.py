"""Split documents into chunks of at most N tokens on natural boundaries, and put them back together.

WRAP rephrases passages of ~300 tokens (longer inputs lose information); ProX refines line-aligned
chunks of <= 1,500 tokens. Chunks break at paragraph, then line, then sentence boundaries; a
single unit longer than the budget is cut by tokens. Joining the chunks' texts with their
recorded separators gives the original text back exactly (tested), so a rewrite can be
reassembled in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_SENTENCE = re.compile(r"(?<=[.!?])\s+")

CountFn = Callable[[str], int]


@dataclass
class Chunk:
    index: int
    text: str
    sep: str  # what followed this chunk in the original ("" for the last)
    tokens: int


def _units(text: str, mode: str) -> list[str]:
    """Pieces that keep their trailing separators, so ''.join(pieces) == text."""
    if mode == "lines":
        return text.splitlines(keepends=True)
    pieces = re.split(r"(\n\s*\n)", text)  # paragraphs, separators kept as their own pieces
    out: list[str] = []
    for i in range(0, len(pieces), 2):
        out.append(pieces[i] + (pieces[i + 1] if i + 1 < len(pieces) else ""))
    return [p for p in out if p]


def _split_long(unit: str, max_tokens: int, count: CountFn, encode_decode: Callable[[str, int], list[str]] | None) -> list[str]:
    if count(unit) <= max_tokens:
        return [unit]
    lines = unit.splitlines(keepends=True)
    if len(lines) > 1:
        return [p for line in lines for p in _split_long(line, max_tokens, count, encode_decode)]
    parts, pos = [], 0
    for m in _SENTENCE.finditer(unit):
        parts.append(unit[pos: m.end()])
        pos = m.end()
    parts.append(unit[pos:])
    parts = [p for p in parts if p]
    if len(parts) > 1:
        return [p for part in parts for p in _split_long(part, max_tokens, count, encode_decode)]
    if encode_decode is None:  # no tokenizer slicing: cut by characters proportionally
        n = max(1, int(len(unit) * max_tokens / max(1, count(unit))))
        return [unit[i: i + n] for i in range(0, len(unit), n)]
    return encode_decode(unit, max_tokens)


def chunk_text(text: str, max_tokens: int, count: CountFn, mode: str = "paragraphs",
               encode_decode: Callable[[str, int], list[str]] | None = None) -> list[Chunk]:
    """Greedy packing of boundary-aligned units into chunks of at most ``max_tokens`` tokens."""
    units = [p for u in _units(text, mode) for p in _split_long(u, max_tokens, count, encode_decode)]
    chunks: list[str] = []
    current, current_tokens = "", 0
    for u in units:
        t = count(u)
        if current and current_tokens + t > max_tokens:
            chunks.append(current)
            current, current_tokens = "", 0
        current += u
        current_tokens += t
    if current or not chunks:
        chunks.append(current)
    out = []
    for i, c in enumerate(chunks):
        body = c.rstrip()
        out.append(Chunk(index=i, text=body, sep=c[len(body):], tokens=count(body)))
    return out


def join_chunks(texts: Sequence[str], chunks: Sequence[Chunk]) -> str:
    """Reassemble rewritten chunk texts with the original separators between them."""
    return "".join(t + c.sep for t, c in zip(texts, chunks))


def hf_counter(tokenizer: object) -> tuple[CountFn, Callable[[str, int], list[str]]]:
    """Token counting and token-exact splitting with a Hugging Face tokenizer."""

    def count(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

    def encode_decode(s: str, n: int) -> list[str]:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        return [tokenizer.decode(ids[i: i + n]) for i in range(0, len(ids), n)]  # type: ignore[attr-defined]

    return count, encode_decode
