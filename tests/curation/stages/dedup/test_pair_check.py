"""verify.group_pairs: the fast path (distinct vertices told apart by the set hash) against whole rows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.stages.dedup.minhash import Shingles, shingle_sets
from curation.stages.dedup.pair_check import group_pairs


def _pairs(out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple[int, int, bool]]:
    return sorted(zip(*[x.tolist() for x in out]))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(2, 40), max_group=st.sampled_from([1, 3, 1000]))
def test_set_hash_path_equals_whole_row_path(seed: int, m: int, max_group: int) -> None:
    """All-zero hash columns make every row collide, which forces the whole-row ``np.unique``
    (the code before the fast path); with real set hashes the pairs must be the same."""
    rng = np.random.default_rng(seed)
    k = 16
    base = rng.integers(0, 40, (int(rng.integers(1, 5)), k)).astype(np.uint32)
    sig = base[rng.integers(0, len(base), m)]
    flip = rng.random((m, k)) < rng.random() * 0.4
    sig[flip] = rng.integers(0, 40, int(flip.sum()))
    sh = Shingles(sig.reshape(-1).astype(np.uint64), np.arange(0, (m + 1) * k, k, dtype=np.int64))
    set_hash = shingle_sets(sh)[2]  # the hash the key pass stores (of the row's values as a set)
    # Rows with equal values but a different order are distinct rows with an equal set hash: the
    # collision check must catch them too.
    good = np.concatenate([sig, set_hash.view(np.uint32).reshape(-1, 2)], axis=1)
    zero = np.concatenate([sig, np.zeros((m, 2), np.uint32)], axis=1)
    node = np.sort(rng.choice(10_000, m, replace=False)).astype(np.int64)
    fast = _pairs(group_pairs(node, good, k, 11, 14, max_group))
    assert fast == _pairs(group_pairs(node, zero, k, 11, 14, max_group))


def test_shingle_sets_sorted_unique_per_document() -> None:
    hashes = np.array([5, 3, 5, 9, 1, 1, 7], np.uint64)
    offsets, values, set_hash = shingle_sets(Shingles(hashes, np.array([0, 4, 4, 7], np.int64)))
    assert offsets.tolist() == [0, 3, 3, 5]
    assert values.tolist() == [3, 5, 9, 1, 7]
    assert set_hash[1] == 0 and set_hash[0] != set_hash[2]
