"""The eval n-gram index: sorted uint64 hashes per n-gram length, and batch lookups against it.

An index holds, for each length k (the configured n, plus the word counts of eval items shorter
than n that are used whole), a sorted ``uint64`` array of n-gram hashes and a parallel ``int32``
array naming the first eval item (in file order) that contains each hash. That is 12 bytes per
distinct eval n-gram, picklable, and looked up with ``np.searchsorted``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from curation.stages.decontam.evalsets import EvalFileSpec, read_items
from curation.stages.decontam.ngrams import ngram_hashes, word_hashes, words


@dataclass
class EvalIndex:
    """Eval n-grams of some eval files.

    Args:
        n: The n-gram length.
        tables: ``{k: (sorted hashes, item index per hash)}`` for each length k.
        items: ``(eval file, item id)`` per item index.
        skipped_short: Eval texts with fewer than ``min_item_words`` words (not indexed).
    """

    n: int
    tables: dict[int, tuple[np.ndarray, np.ndarray]]
    items: list[tuple[str, str]]
    skipped_short: int = 0
    bitmaps: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A bit per slot of the hashes' top bits, ~16 slots per n-gram (2 bytes each): it fits in
        # cache and rejects ~94% of document n-grams before the binary search, whose random reads
        # of the 8-byte array cost most of a lookup (lookups measured 2.8x faster over 1M eval n-grams).
        for k, (table, _) in self.tables.items():
            bits = max(10, int(np.ceil(np.log2(max(1, 16 * len(table))))))
            slots = table >> np.uint64(64 - bits)
            bitmap = np.zeros(1 << (bits - 3), dtype=np.uint8)
            np.bitwise_or.at(bitmap, slots >> np.uint64(3), (1 << (slots & np.uint64(7))).astype(np.uint8))
            self.bitmaps[k] = (bitmap, bits)

    @property
    def num_ngrams(self) -> int:
        return sum(len(h) for h, _ in self.tables.values())

    @property
    def nbytes(self) -> int:
        """Bytes of the hash, item and bitmap arrays (the item names are extra: one tuple per item)."""
        return sum(h.nbytes + i.nbytes for h, i in self.tables.values()) + sum(
            b.nbytes for b, _ in self.bitmaps.values())

    def match(self, docs: Sequence[list[str]]) -> "BatchMatch":
        """Find every eval n-gram occurring in each document (given as normalised words)."""
        nd = len(docs)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=nd)
        offsets = np.zeros(nd + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # One hash pass over the concatenated batch; positions whose n-gram crosses into the
        # next document are masked out below.
        wh = word_hashes(list(itertools.chain.from_iterable(docs)))
        doc_of = np.repeat(np.arange(nd, dtype=np.int64), lengths)
        pos, size, item = [], [], []
        for k, (table, item_of) in self.tables.items():
            h = ngram_hashes(wh, k)
            if len(h) == 0 or len(table) == 0:
                continue
            starts = np.arange(len(h), dtype=np.int64)
            valid = starts + k <= offsets[1:][doc_of[: len(h)]]
            bitmap, bits = self.bitmaps[k]
            slots = h >> np.uint64(64 - bits)
            maybe = ((bitmap[slots >> np.uint64(3)] >> (slots & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)
            cand = np.flatnonzero(valid & maybe)
            idx = np.minimum(np.searchsorted(table, h[cand]), len(table) - 1)
            found = table[idx] == h[cand]
            p, idx = cand[found], idx[found]
            pos.append(p)
            size.append(np.full(len(p), k, dtype=np.int64))
            item.append(item_of[idx])
        return BatchMatch.of(self, offsets, doc_of, pos, size, item)


@dataclass
class BatchMatch:
    """Matches of one batch. Arrays over hits are sorted by position in the concatenated words.

    Args:
        offsets: Start of each document's words in the concatenation (plus the total at the end).
        covered: Per word of the concatenation: inside some matched n-gram.
        ngrams: Matched n-grams per document (n-gram positions, all lengths together).
        covered_words: Covered words per document.
        hit_pos, hit_size, hit_item, hit_doc: One entry per matched n-gram position.
    """

    index: EvalIndex
    offsets: np.ndarray
    covered: np.ndarray
    ngrams: np.ndarray
    covered_words: np.ndarray
    hit_pos: np.ndarray
    hit_size: np.ndarray
    hit_item: np.ndarray
    hit_doc: np.ndarray
    _sources: dict[int, tuple[tuple[str, str], int]] = field(default_factory=dict)

    @classmethod
    def of(cls, index: EvalIndex, offsets: np.ndarray, doc_of: np.ndarray, pos: list[np.ndarray],
           size: list[np.ndarray], item: list[np.ndarray]) -> "BatchMatch":
        nd, total = len(offsets) - 1, int(offsets[-1])
        p = np.concatenate(pos) if pos else np.zeros(0, np.int64)
        s = np.concatenate(size) if size else np.zeros(0, np.int64)
        it = np.concatenate(item) if item else np.zeros(0, np.int32)
        order = np.argsort(p, kind="stable")
        p, s, it = p[order], s[order], it[order]
        diff = np.zeros(total + 1, dtype=np.int64)
        np.add.at(diff, p, 1)
        np.add.at(diff, p + s, -1)
        covered = np.cumsum(diff[:total]) > 0
        hit_doc = doc_of[p]
        return cls(index=index, offsets=offsets, covered=covered,
                   ngrams=np.bincount(hit_doc, minlength=nd),
                   covered_words=np.bincount(doc_of, weights=covered, minlength=nd).astype(np.int64),
                   hit_pos=p, hit_size=s, hit_item=it, hit_doc=hit_doc)

    def fraction(self) -> np.ndarray:
        """Share of each document's words inside a matched n-gram (0 for a document without words)."""
        n_words = np.diff(self.offsets)
        return np.where(n_words > 0, self.covered_words / np.maximum(n_words, 1), 0.0)

    def source(self, d: int) -> tuple[tuple[str, str], int]:
        """``((eval file, item id), number of distinct items)`` of document d: the item with the
        most matched n-grams (ties: the one matched first in the document)."""
        if d not in self._sources:
            lo, hi = np.searchsorted(self.hit_doc, [d, d + 1])
            counts = Counter(self.hit_item[lo:hi].tolist())  # insertion order = position order
            best = max(counts, key=lambda i: counts[i])  # max keeps the first of equal counts
            self._sources[d] = (self.index.items[best], len(counts))
        return self._sources[d]


def build_index(specs: Sequence[EvalFileSpec], n: int, min_item_words: int) -> EvalIndex:
    """Read eval files and hash their n-grams. A text shorter than n words (but with at least
    ``min_item_words``) is indexed whole, as one n-gram of its own length; shorter ones are skipped."""
    items: list[tuple[str, str]] = []
    parts: dict[int, list[tuple[np.ndarray, int]]] = {}
    skipped = 0
    for spec in specs:
        for item_id, texts in read_items(spec):
            items.append((spec.path, item_id))
            for text in texts:
                ws = words(text)
                k = min(len(ws), n)
                if k < min_item_words or k == 0:
                    skipped += 1
                    continue
                parts.setdefault(k, []).append((ngram_hashes(word_hashes(ws), k), len(items) - 1))
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k, chunks in sorted(parts.items()):
        hashes = np.concatenate([h for h, _ in chunks])
        item_of = np.concatenate([np.full(len(h), i, dtype=np.int32) for h, i in chunks])
        uniq, first = np.unique(hashes, return_index=True)  # first occurrence: the first item in file order
        tables[k] = (uniq, item_of[first])
    return EvalIndex(n=n, tables=tables, items=items, skipped_short=skipped)
