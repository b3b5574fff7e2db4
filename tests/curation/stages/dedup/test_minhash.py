"""MinHash signatures, band keys and the S-curve: exact small cases and estimates against exact Jaccard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.stages.dedup.minhash import (
    EMPTY, band_keys, candidate_probability, optimal_bands, shingle_hashes, shingle_strings, signatures,
)
from tests.conftest import PROSE


def arr(texts: list[str]) -> pa.Array:
    return pa.array(texts, pa.large_string())


def test_shingles_normalise_case_punctuation_digits_and_accents() -> None:
    a = shingle_strings(arr(["Café au lait, 1999 -- NOW!", "cafe AU lait 2024 now", "", "one two"]), 3)
    assert a[0] == {"cafe au lait", "au lait 0", "lait 0 now"}
    assert a[0] == a[1]  # same words after normalisation
    assert a[2] == set()  # no words: no shingles
    assert a[3] == {"one two"}  # shorter than one n-gram: one shingle of all its words
    h = shingle_hashes(arr(["Café au lait, 1999 -- NOW!", "cafe AU lait 2024 now", "", "one two"]), 3)
    assert list(np.diff(h.offsets)) == [3, 3, 0, 1]
    assert sorted(h.hashes[0:3]) == sorted(h.hashes[3:6])
    assert int(h.hashes.max()) < 2**32


def test_signature_estimates_jaccard() -> None:
    words = PROSE[0].split()
    edited = words.copy()
    for i in range(0, len(words), 15):  # change every 15th word
        edited[i] = "zzz"
    texts = [PROSE[0], " ".join(edited), PROSE[1]]
    sets = shingle_strings(arr(texts), 5)
    exact = len(sets[0] & sets[1]) / len(sets[0] | sets[1])
    sig = signatures(shingle_hashes(arr(texts), 5), 256, seed=1)
    est = float((sig[0] == sig[1]).mean())
    assert 0.3 < exact < 0.8 and abs(est - exact) < 0.1
    assert float((sig[0] == sig[2]).mean()) < 0.05
    again = signatures(shingle_hashes(arr(texts), 5), 256, seed=1)
    assert np.array_equal(sig, again)  # deterministic for a seed
    assert not np.array_equal(sig, signatures(shingle_hashes(arr(texts), 5), 256, seed=2))


def test_empty_document_signature_and_bands() -> None:
    sig = signatures(shingle_hashes(arr(["", PROSE[0]]), 5), 16, seed=0)
    assert (sig[0] == EMPTY).all() and (sig[1] != EMPTY).any()
    keys = band_keys(sig, 4, 4, seed=0)
    assert keys.shape == (2, 4) and keys.dtype == np.uint64
    # Equal bands give equal keys only within the same band index.
    same = np.tile(sig[1:2, :4], (1, 4))
    k = band_keys(same, 4, 4, seed=0)[0]
    assert len(set(k.tolist())) == 4


def test_s_curve_matches_the_formula_and_datatrove_numbers() -> None:
    # docs/methods.md, MinHash LSH: datatrove's 14 x 8 gives P(J=0.8) = 0.924, P(0.7) = 0.57, P(0.5) = 0.05.
    assert candidate_probability(0.8, 14, 8) == pytest.approx(0.924, abs=1e-3)
    assert candidate_probability(0.7, 14, 8) == pytest.approx(0.57, abs=0.01)
    assert candidate_probability(0.5, 14, 8) == pytest.approx(0.05, abs=0.01)


@pytest.mark.parametrize(("threshold", "num_perm", "expected"), [(0.7, 256, (25, 10)), (0.8, 256, (17, 15)),
                                                                  (0.7, 128, (14, 9)), (0.8, 128, (9, 13))])
def test_optimal_bands_agree_with_datasketch(threshold: float, num_perm: int, expected: tuple[int, int]) -> None:
    # Values computed with datasketch's _optimal_param (docs/methods.md, MinHash LSH), same weights 0.5/0.5.
    assert optimal_bands(threshold, num_perm) == expected
