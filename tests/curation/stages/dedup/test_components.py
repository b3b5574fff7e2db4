"""Connected components on a Frame (Large-Star/Small-Star) against networkx, for any bucket count."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.stages.dedup.components import connected_components, edges
from curation.stages.frame import LocalFrame


def expected_stars(a: list[int], b: list[int]) -> dict[int, int]:
    g = nx.Graph()
    g.add_edges_from((x, y) for x, y in zip(a, b) if x != y)
    out = {}
    for comp in nx.connected_components(g):
        root = min(comp)
        out.update({n: root for n in comp if n != root})
    return out


def stars(a: list[int], b: list[int], buckets: int) -> dict[int, int]:
    t = connected_components(LocalFrame(edges(np.array(a, np.int64), np.array(b, np.int64)), num_buckets=buckets)).table
    got = dict(zip(t.column("a").to_pylist(), t.column("b").to_pylist()))
    assert len(got) == len(t)  # one edge per non-root node
    return got


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=120), st.integers(1, 9))
def test_matches_networkx(pairs: list[tuple[int, int]], buckets: int) -> None:
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    assert stars(a, b, buckets) == expected_stars(a, b)


@pytest.mark.parametrize("buckets", [1, 4])
def test_long_chain_and_large_ids(buckets: int) -> None:
    rng = np.random.default_rng(3)
    nodes = (rng.permutation(400).astype(np.int64) << 32) + 7  # node ids as (task << 32) | row
    a, b = nodes[:-1].tolist(), nodes[1:].tolist()
    got = stars(a, b, buckets)
    assert set(got.values()) == {int(nodes.min())} and len(got) == 399
