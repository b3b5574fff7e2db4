"""MinHash signatures and LSH band keys, vectorised over a whole batch of documents with numpy.

Why not a per-document library: measured on the sample corpus (``benchmarks/dedup_speed.py``),
building Python shingle strings per document costs more than the hashing itself, so datasketch
and rensa both spend most of their time in Python. Here a batch is tokenised by Arrow's RE2
kernels, words are hashed once per distinct word, n-gram hashes come from array arithmetic, and
each permutation is one multiply-add-shift over every shingle of the batch.

Hash family: word n-grams are hashed to 32 bits ``x``; permutation ``k`` is
``h_k(x) = ((a_k * x + b_k) mod 2**64) >> 32`` with random 64-bit ``a_k`` (odd) and ``b_k``, the
multiply-add-shift scheme, which is 2-independent for 32-bit keys (Dietzfelbinger 1996) as the
``(a x + b) mod p`` family datatrove and datasketch use.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation.stages.frame import mix64

_SPLIT = r"[^\pL\pN]+"  # words are runs of letters and digits; everything else separates
_DIGITS = re.compile(r"\d+")
_NGRAM_MULT = np.uint64(0x9E3779B97F4A7C15)


def normalise_word(word: str) -> str:
    """Lowercase (done before), strip accents, each run of digits to 0 (as datatrove's TextNormConfig)."""
    if not word.isascii():
        word = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    return _DIGITS.sub("0", word) if any(c.isdigit() for c in word) else word


@dataclass
class Shingles:
    """Hashes of every shingle of a batch, flat, with ``offsets[i]:offsets[i+1]`` for document i."""

    hashes: np.ndarray  # uint64, values < 2**32
    offsets: np.ndarray  # int64, len = docs + 1


def split_words(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Lowercased words of every text, flat, and per-document offsets (Arrow's RE2 kernels)."""
    lists = pc.split_pattern_regex(pc.utf8_lower(texts), _SPLIT)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    nonempty = pc.greater(pc.utf8_length(flat), 0)
    flat = flat.filter(nonempty)
    parents = parents[nonempty.to_numpy(zero_copy_only=False)]
    counts = np.bincount(parents, minlength=len(texts)) if len(parents) else np.zeros(len(texts), np.int64)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return flat, offsets


def shingle_strings(texts: pa.Array, ngram: int) -> list[set[str]]:
    """The exact shingle sets ``shingle_hashes`` hashes (for an exact-Jaccard oracle)."""
    flat, offsets = split_words(texts)
    words = [normalise_word(w) for w in flat.to_pylist()]
    out = []
    for i in range(len(offsets) - 1):
        w = words[offsets[i]: offsets[i + 1]]
        if len(w) >= ngram:
            out.append({" ".join(w[j: j + ngram]) for j in range(len(w) - ngram + 1)})
        else:
            out.append({" ".join(w)} if w else set())
    return out


def word_ids(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per-word 64-bit hashes of every word of every text (flat) and per-document word offsets."""
    flat, offsets = split_words(texts)
    if len(flat) == 0:
        return np.zeros(0, np.uint64), offsets
    enc = pc.dictionary_encode(flat).combine_chunks() if isinstance(flat, pa.ChunkedArray) else pc.dictionary_encode(flat)
    vocab = enc.dictionary.to_pylist()
    # Hash each distinct word once; normalisation happens on the vocabulary, not per occurrence.
    word_hash = np.fromiter((xxhash.xxh3_64_intdigest(normalise_word(w).encode("utf-8", "surrogatepass")) for w in vocab),
                            dtype=np.uint64, count=len(vocab))
    return word_hash[enc.indices.to_numpy()], offsets


def shingle_hashes(texts: pa.Array, ngram: int) -> Shingles:
    """32-bit hashes of the word ``ngram``-grams of each text. A text with 1..ngram-1 words has one
    shingle (all its words); a text with no words has none."""
    words, woff = word_ids(texts)
    lengths = np.diff(woff)
    n_sh = np.where(lengths >= ngram, lengths - ngram + 1, np.minimum(lengths, 1))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(n_sh, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        # Polynomial combination over the flat word array; windows crossing a document end are
        # computed and then not selected.
        acc = words.copy()
        padded = np.concatenate([words, np.zeros(ngram, np.uint64)])
        for j in range(1, ngram):
            acc = acc * _NGRAM_MULT + padded[j: j + len(words)]
        long_docs = np.flatnonzero(lengths >= ngram)
        if len(long_docs):
            cnt = n_sh[long_docs]
            within = _ranges(cnt)
            out[np.repeat(offsets[long_docs], cnt) + within] = acc[np.repeat(woff[long_docs], cnt) + within]
        short_docs = np.flatnonzero((lengths > 0) & (lengths < ngram))
        for i in short_docs:  # rare: texts shorter than one n-gram
            h = np.uint64(0)
            for w in words[woff[i]: woff[i + 1]]:
                h = h * _NGRAM_MULT + w
            out[offsets[i]] = h
        out = mix64(out) >> np.uint64(32)
    return Shingles(out, offsets)


def shingle_sets(sh: Shingles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each document's shingle hashes as a sorted set: ``(offsets, uint32 values, uint64 set hash)``.

    One sort of ``(document, hash)`` keys for the whole batch; the set hash is a sum of mixed
    values, so equal sets (and only those, up to 2**-64) get equal hashes."""
    docs = len(sh.offsets) - 1
    doc_of = np.repeat(np.arange(docs, dtype=np.uint64), np.diff(sh.offsets))
    # Sort and drop repeats by hand: numpy 2.4's np.unique hashes first and is ~100x slower here
    # (4.1 s vs 0.04 s on 1.7M keys, measured), which made this the costliest step of the key pass.
    uniq = np.sort((doc_of << np.uint64(32)) | sh.hashes)
    if len(uniq):
        uniq = uniq[np.r_[True, uniq[1:] != uniq[:-1]]]
    values = (uniq & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    counts = np.bincount((uniq >> np.uint64(32)).astype(np.int64), minlength=docs)
    offsets = np.zeros(docs + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    set_hash = np.zeros(docs, dtype=np.uint64)
    has = counts > 0
    if has.any():
        with np.errstate(over="ignore"):
            set_hash[has] = np.add.reduceat(mix64(values.astype(np.uint64)), offsets[:-1][has])
    return offsets, values, set_hash


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(c) for each c in counts."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - counts, counts)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` parameters of ``num_perm`` hash functions, fixed by ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 2**64 - 1, size=num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, 2**64 - 1, size=num_perm, dtype=np.uint64, endpoint=True)
    return a, b


EMPTY = np.uint32(0xFFFFFFFF)


def signatures(sh: Shingles, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures ``(docs, num_perm)`` uint32. Documents without shingles get all
    ``0xFFFFFFFF`` (callers exclude them from banding)."""
    docs = len(sh.offsets) - 1
    sig = np.full((docs, num_perm), EMPTY, dtype=np.uint32)
    has = np.diff(sh.offsets) > 0
    if not has.any():
        return sig
    starts = sh.offsets[:-1][has]
    a, b = permutations(num_perm, seed)
    x = sh.hashes
    # One permutation at a time into a reused buffer: 8x faster than a (perms x shingles) block,
    # which spills out of cache (measured on the sample corpus).
    buf = np.empty_like(x)
    shift = np.uint64(32)
    with np.errstate(over="ignore"):
        for k in range(num_perm):
            np.multiply(x, a[k], out=buf)
            np.add(buf, b[k], out=buf)
            np.right_shift(buf, shift, out=buf)
            sig[has, k] = np.minimum.reduceat(buf, starts)
    return sig


def band_keys(sig: np.ndarray, bands: int, rows: int, seed: int) -> np.ndarray:
    """``(docs, bands)`` uint64 keys: one hash of each band's ``rows`` values and its band index,
    so equal keys mean (up to a 2**-64 collision) an equal band."""
    docs = sig.shape[0]
    view = sig[:, : bands * rows].reshape(docs, bands, rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        acc = np.broadcast_to(mix64(np.arange(bands, dtype=np.uint64) + np.uint64(seed)), (docs, bands)).copy()
        for j in range(rows):
            acc = mix64(acc ^ view[:, :, j])
    return acc


def minhash_columns(texts: pa.Array, num_perm: int, ngram: int, seed: int, bands: int, rows: int,
                    with_sets: bool) -> tuple[pa.ListArray, pa.FixedSizeListArray, pa.ListArray | None]:
    """What near-dedup hashes per document, as Arrow columns: the ``bands`` band keys (a null list for a
    text without words: it is never a candidate), the signature followed by two uint32 of the shingle
    set's 64-bit hash (zeros without ``with_sets``), and with ``with_sets`` the sorted shingle hashes.

    The one function both the stage's key pass and a run's dedup index use, so that a document of
    an earlier run and a new one are hashed alike."""
    sh = shingle_hashes(texts, ngram)
    sig = signatures(sh, num_perm, seed)
    keys = band_keys(sig, bands, rows, seed)
    n = len(texts)
    has = np.diff(sh.offsets) > 0
    offsets = np.arange(0, (n + 1) * bands, bands, dtype=np.int32)
    band_list = pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys.reshape(-1), pa.uint64()),
                                         mask=pa.array(~has))
    sets = None
    if with_sets:
        set_offsets, set_values, set_hash = shingle_sets(sh)
        # The signature travels with a 64-bit hash of the shingle set (two more uint32), so that
        # only documents with equal sets (not merely equal signatures) share a vertex in a group.
        wide = np.concatenate([sig, set_hash.view(np.uint32).reshape(-1, 2)], axis=1)
        sets = pa.ListArray.from_arrays(pa.array(set_offsets.astype(np.int32)), pa.array(set_values, pa.uint32()))
    else:
        wide = np.concatenate([sig, np.zeros((len(sig), 2), np.uint32)], axis=1)
    sigs = pa.FixedSizeListArray.from_arrays(pa.array(wide.reshape(-1), pa.uint32()), num_perm + 2)
    return band_list, sigs, sets


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """P(two documents with this Jaccard share at least one band) = 1 - (1 - J^r)^b."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """``(bands, rows)`` with bands * rows <= num_perm minimising the weighted areas of false
    positives (J < threshold) and false negatives (J >= threshold) under the S-curve, the rule
    datasketch and text-dedup use (trapezoid integration on 200 steps)."""
    lo = np.linspace(0.0, threshold, 201)
    hi = np.linspace(threshold, 1.0, 201)

    def trapezoid(xs: np.ndarray, ys: np.ndarray) -> float:
        return float(((ys[1:] + ys[:-1]) / 2 * np.diff(xs)).sum())

    best, best_err = (1, num_perm), math.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = trapezoid(lo, 1.0 - (1.0 - lo**r) ** b)
            fn = trapezoid(hi, (1.0 - hi**r) ** b)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err - 1e-12:
                best, best_err = (b, r), err
    return best
