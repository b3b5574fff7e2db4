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

import re
from typing import Any

import numpy as np
import pandas as pd

_MASK = (1 << 64) - 1
_BASE = 1_000_003  # odd multiplier for the character hash
_BASE_INV = pow(_BASE, -1, 1 << 64)
_TUPLE_BASE = np.uint64(0x9E3779B97F4A7C15)


class NgramStats:
    """Per-document helper: word ids, word lengths and prefix hashes of the concatenated words."""

    def __init__(self, words: list[str]) -> None:
        self.n = len(words)
        # A word's id only has to be the same for equal words: its str hash, which Python caches on
        # the string (the tokenizer's memo hands out the same string objects), 64-bit wide.
        self.ids = np.fromiter(map(hash, words), dtype=np.int64, count=self.n).view(np.uint64)
        self.lens = np.fromiter(map(len, words), dtype=np.int64, count=self.n)
        self._cum = np.concatenate([[0], np.cumsum(self.lens)])
        # Prefix hashes of S = "".join(words): hash(S[a:b]) = B^(b-1) * (Q[b] - Q[a]) with
        # Q[k] = sum_{j<k} c_j * B^-j, all mod 2^64 (B is odd, so B^-1 exists).
        chars = np.frombuffer("".join(words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        chars = chars.astype(np.uint64) + np.uint64(1)
        one = np.ones(1, dtype=np.uint64)  # explicit dtype: mixing Python ints would promote to float
        with np.errstate(over="ignore"):
            inv = np.cumprod(np.full(len(chars), _BASE_INV, dtype=np.uint64))  # B^-1 .. B^-L
            weights = np.concatenate([one, inv[:-1]])  # B^0 .. B^-(L-1)
            q = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(chars * weights, dtype=np.uint64)])
            pw = np.concatenate([one, np.cumprod(np.full(len(chars), _BASE, dtype=np.uint64))])  # B^0..B^L
        # Only word boundaries are ever used: gather them once, so each n needs slices only.
        self._q_at = q[self._cum]
        self._pow_at = pw[np.maximum(self._cum - 1, 0)]

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
        with np.errstate(over="ignore"):
            h = self._pow_at[n:n + m] * (self._q_at[n:n + m] - self._q_at[:m])
        return np.where(self._cum[n:n + m] > self._cum[:m], h, np.uint64(0))

    def top_ngram_exceeds(self, n: int, max_fraction: float, text_chars: int) -> bool:
        """``top_ngram_chars(n) / text_chars > max_fraction``, usually without identifying the n-gram.

        The top n-gram covers (its length with spaces) x (its count) characters: at most the largest
        count times the longest n-gram, both from one sort. Only over the limit is it identified.
        """
        m = self.n - n + 1
        if m <= 0:
            return False
        s = np.sort(self.tuple_hashes(n))
        edges = np.empty(m + 1, dtype=bool)
        edges[0] = edges[m] = True
        np.not_equal(s[1:], s[:-1], out=edges[1:m])
        starts = np.flatnonzero(edges)  # runs of equal hashes start here (plus the end)
        most = int((starts[1:] - starts[:-1]).max())
        bound = most * (int((self._cum[n:n + m] - self._cum[:m]).max()) + n - 1)
        if bound / text_chars <= max_fraction:
            return False
        return self.top_ngram_chars(n) / text_chars > max_fraction  # type: ignore[operator]

    def top_ngram_chars(self, n: int) -> int | None:
        """Characters covered by the most frequent n-gram (its length with spaces times its count)."""
        if self.n - n + 1 <= 0:
            return None
        codes, _ = pd.factorize(self.tuple_hashes(n), sort=False)  # codes numbered in first-seen order
        counts = np.bincount(codes)
        k = int(counts.argmax())  # the first maximum = the earliest-seen n-gram, as Counter.most_common
        best = int(counts[k])
        i = int(np.argmax(codes == k))
        return int((self.span_chars(i, n) + n - 1) * best)

    def duplicated_ngram_exceeds(self, n: int, max_fraction: float, text_chars: int) -> bool:
        """``duplicated_ngram_chars(n) / text_chars > max_fraction``, usually without the greedy scan.

        The scan counts disjoint spans that each start at a repeated (not first) occurrence, so it
        never exceeds the characters under the union of all such spans, a few vectorised steps.
        Only when that bound is over the limit is the exact (sequential) count needed.
        """
        groups = self._groups(n)
        if groups is None:
            return 0 / text_chars > max_fraction
        h, order, start = groups
        repeats = order[~start]  # every occurrence but the first of each repeated n-gram
        cover = np.bincount(repeats, minlength=self.n + 1) - np.bincount(repeats + n, minlength=self.n + 1)
        bound = int(self.lens[np.cumsum(cover[:-1]) > 0].sum())
        if bound / text_chars <= max_fraction:
            return False
        return self._greedy(n, h, order, start) / text_chars > max_fraction

    def _groups(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(hashes, stable argsort, run starts in sorted order); None when no n-gram repeats."""
        if self.n - n + 1 <= 0:
            return None
        h = self.concat_hashes(n)
        s = np.sort(h)
        if not (s[1:] == s[:-1]).any():  # no repeat at all (the common case): a plain sort suffices
            return None
        order = np.argsort(h, kind="stable")
        s = h[order]
        start = np.empty(len(s), dtype=bool)
        start[0] = True
        np.not_equal(s[1:], s[:-1], out=start[1:])
        return h, order, start

    def duplicated_ngram_chars(self, n: int) -> int:
        """datatrove's ``find_all_duplicate``: greedy scan, a repeat counts its chars and skips n words."""
        groups = self._groups(n)
        return 0 if groups is None else self._greedy(n, *groups)

    def _greedy(self, n: int, h: np.ndarray, order: np.ndarray, start: np.ndarray) -> int:
        # Only positions whose n-gram occurs more than once can ever match: visit those in order.
        multi = ~start
        multi[:-1] |= ~start[1:]
        candidates = np.sort(order[multi])
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


_PARAGRAPH = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")


def _duplicates(parts: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    count = chars = 0
    for p in parts:
        if p in seen:
            count += 1
            chars += len(p)
        else:
            seen.add(p)
    return count, chars


def make_fast_filter(**kwargs: Any) -> Any:
    """datatrove's ``GopherRepetitionFilter`` with its n-gram statistics from ``NgramStats``: the same rules in the
    same order; a drop carries the measured fraction and its maximum."""
    from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter
    from datatrove.utils.text import split_into_words

    class FastGopherRepetitionFilter(GopherRepetitionFilter):  # type: ignore[misc, valid-type]
        #: Set by the stage for ``metrics: true``: a kept document comes back as (True, "", {column: value}).
        return_metrics: bool = False

        def filter(self, doc: Any) -> bool | tuple[bool, str] | tuple[bool, str, dict[str, Any]]:
            text = doc.text
            if not text:
                return False, "empty", {"chars": 0, "min": 1}  # no text: says so, as every drop
            paragraphs = _PARAGRAPH.split(text.strip())
            dups, chars = _duplicates(paragraphs)
            # Each fraction is None where its rule is off (datatrove does not compute it then).
            para = dups / len(paragraphs) if self.dup_para_frac else None
            if para is not None and para > self.dup_para_frac:
                return False, "dup_para_frac", {"dup_para_frac": para, "max": self.dup_para_frac}
            para_chars = chars / len(text) if self.dup_para_char_frac else None
            if para_chars is not None and para_chars > self.dup_para_char_frac:
                return False, "dup_para_char_frac", {"dup_para_char_frac": para_chars, "max": self.dup_para_char_frac}
            lines = _LINES.split(text)
            dups, chars = _duplicates(lines)
            line = dups / len(lines) if self.dup_line_frac else None
            if line is not None and line > self.dup_line_frac:
                return False, "dup_line_frac", {"dup_line_frac": line, "max": self.dup_line_frac}
            line_chars = chars / len(text) if self.dup_line_char_frac else None
            if line_chars is not None and line_chars > self.dup_line_char_frac:
                return False, "dup_line_char_frac", {"dup_line_char_frac": line_chars, "max": self.dup_line_char_frac}
            stats = NgramStats(split_into_words(text, self.language))  # shares datatrove's per-text cache
            if self.return_metrics:  # every exact fraction, which the decision alone only bounds
                return self._measured(stats, len(text), {
                    "gopher_rep_dup_para_frac": para, "gopher_rep_dup_para_char_frac": para_chars,
                    "gopher_rep_dup_line_frac": line, "gopher_rep_dup_line_char_frac": line_chars})
            for n, frac in self.top_n_grams:
                if stats.top_ngram_exceeds(n, frac, len(text)):  # (the exact fraction is computed for drops only)
                    return False, f"top_{n}_gram", {"top_ngram_char_frac": stats.top_ngram_chars(n) / len(text),
                                                     "n": n, "max": frac}
            for n, frac in self.dup_n_grams:
                if stats.duplicated_ngram_exceeds(n, frac, len(text)):
                    return False, f"duplicated_{n}_n_grams", {
                        "dup_ngram_char_frac": stats.duplicated_ngram_chars(n) / len(text), "n": n, "max": frac}
            return True

        def _measured(self, stats: NgramStats, text_chars: int, values: dict[str, float | None]
                      ) -> tuple[bool, str, dict[str, Any]]:
            """The n-gram rules on exact fractions (the same decisions and drop details), and a kept document's
            values (names: metrics.py). A top n-gram of a text with fewer than n words is None (datatrove skips
            the rule); a duplicated one is 0.0 (datatrove counts nothing)."""
            for n, frac in self.top_n_grams:
                chars = stats.top_ngram_chars(n)
                r = None if chars is None else chars / text_chars
                if r is not None and r > frac:
                    return False, f"top_{n}_gram", {"top_ngram_char_frac": r, "n": n, "max": frac}
                values[f"gopher_rep_top_{n}_gram_char_frac"] = r
            for n, frac in self.dup_n_grams:
                r = stats.duplicated_ngram_chars(n) / text_chars
                if r > frac:
                    return False, f"duplicated_{n}_n_grams", {"dup_ngram_char_frac": r, "n": n, "max": frac}
                values[f"gopher_rep_dup_{n}_gram_char_frac"] = r
            return True, "", values

    return FastGopherRepetitionFilter(**kwargs)
