"""Gopher repetition statistics, computed exactly as datatrove's ``GopherRepetitionFilter`` does,
but with integer n-gram hashes instead of building every n-gram string.

datatrove builds ``len(words)`` strings for each n in 2..10 (72% of the heuristic chain's time on
the sample corpus). Here n-grams are 64-bit polynomial hashes computed with numpy:
- top n-gram: identity is the word sequence (datatrove joins with spaces); its character length is
  ``sum(word lengths) + n - 1``; ties go to the n-gram seen first (``Counter.most_common``'s order).
- duplicated n-grams: identity is the words concatenated *without* separator, as datatrove does, and
  the greedy scan (skip n words after a repeat) only needs to visit positions whose hash occurs
  more than once; all other positions can never match.
``tests/curation/stages/filters/test_repetition_parity.py`` checks decisions equal datatrove's.
"""

from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1
_BASE = 1_000_003  # odd multiplier for the character hash
_TUPLE_BASE = np.uint64(0x9E3779B97F4A7C15)


class NgramStats:
    """Per-document helper holding word ids, lengths and character hashes."""

    def __init__(self, words: list[str]) -> None:
        ids: dict[str, int] = {}
        self.n = len(words)
        self.ids = np.fromiter((ids.setdefault(w, len(ids)) for w in words), dtype=np.uint64, count=self.n)
        vocab = list(ids)
        lens = np.array([len(w) for w in vocab], dtype=np.int64)
        hashes = np.array([_char_hash(w) for w in vocab], dtype=np.uint64)
        pows = np.array([pow(_BASE, int(n), 1 << 64) for n in lens], dtype=np.uint64)
        idx = self.ids.astype(np.int64)
        self.lens = lens[idx]
        self.char_hash = hashes[idx]
        self.char_pow = pows[idx]
        self._cum = np.concatenate([[0], np.cumsum(self.lens)])

    def span_chars(self, start: np.ndarray | int, n: int) -> np.ndarray | int:
        """Characters of words[start:start+n] concatenated without separators."""
        return self._cum[np.asarray(start) + n] - self._cum[start]

    def tuple_hashes(self, n: int) -> np.ndarray:
        m = self.n - n + 1
        h = np.zeros(m, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = h * _TUPLE_BASE + self.ids[k:k + m] + np.uint64(1)
        return h

    def concat_hashes(self, n: int) -> np.ndarray:
        m = self.n - n + 1
        h = np.zeros(m, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):  # hash(a + b) = hash(a) * BASE^len(b) + hash(b), all mod 2^64
                h = h * self.char_pow[k:k + m] + self.char_hash[k:k + m]
        return h

    def top_ngram_chars(self, n: int) -> int | None:
        """Characters covered by the most frequent n-gram (its length with spaces times its count)."""
        if self.n - n + 1 <= 0:
            return None
        h = self.tuple_hashes(n)
        _, first, counts = np.unique(h, return_index=True, return_counts=True)
        best = counts.max()
        i = int(first[counts == best].min())  # Counter.most_common keeps first-seen order on ties
        return int((self.span_chars(i, n) + n - 1) * best)

    def duplicated_ngram_chars(self, n: int) -> int:
        """datatrove's ``find_all_duplicate``: greedy scan, a repeat counts its chars and skips n words."""
        if self.n - n + 1 <= 0:
            return 0
        h = self.concat_hashes(n)
        _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
        candidates = np.flatnonzero(counts[inverse] > 1)
        if len(candidates) == 0:
            return 0
        seen: set[int] = set()
        repeated, next_allowed = 0, 0
        chars = self.span_chars(candidates, n)
        for p, hv, c in zip(candidates.tolist(), h[candidates].tolist(), chars.tolist()):
            if p < next_allowed:
                continue  # jumped over by the previous repeat, as in the sequential scan
            if hv in seen:
                repeated += c
                next_allowed = p + n
            else:
                seen.add(hv)
        return repeated


def _char_hash(word: str) -> int:
    h = 0
    for ch in map(ord, word):
        h = (h * _BASE + ch + 1) & _MASK
    return h
