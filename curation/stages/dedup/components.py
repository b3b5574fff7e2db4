"""Connected components of an edge list held in a ``Frame``, without one process holding the graph.

Alternating Large-Star / Small-Star (Kiveris et al., "Connected Components in MapReduce and
Beyond", SoCC 2014): each step groups edges by one endpoint (a shuffle), and the graph contracts
to one star per component whose centre is the component's smallest node, in O(log^2 n) rounds.
A round ends with a dedup shuffle so an order-independent checksum of the edge *set* can tell
when a round changed nothing.

Memory: a group holds the adjacency of the nodes in its bucket; the largest single adjacency is
the largest component (every member points at its centre at the end). Nothing else is held
outside the frame.

Edge tables have two int64 columns ``a`` and ``b``; results have ``b < a``, ``b`` = component min.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curation.stages.frame import Frame

log = logging.getLogger(__name__)

EDGE_SCHEMA = pa.schema([pa.field("a", pa.int64(), nullable=False), pa.field("b", pa.int64(), nullable=False)])


def edges(a: np.ndarray, b: np.ndarray) -> pa.Table:
    return pa.table({"a": pa.array(a, pa.int64()), "b": pa.array(b, pa.int64())}, schema=EDGE_SCHEMA)


def _sorted_unique(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(src) == 0:
        return src, dst
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    keep = np.r_[True, (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])]
    return src[keep], dst[keep]


def run_starts(values: np.ndarray) -> np.ndarray:
    """True where a run of equal values in sorted ``values`` begins (empty for empty input)."""
    first = np.ones(len(values), dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return first


def _runs(src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index of each run of equal values in sorted ``src``, and each element's run number."""
    first = run_starts(src)
    return np.flatnonzero(first), np.cumsum(first) - 1


def _both_directions(t: pa.Table) -> pa.Table:
    a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
    return edges(np.concatenate([a, b]), np.concatenate([b, a]))


def _large_star(t: pa.Table) -> pa.Table:
    """Per node u with neighbours N(u): m = min(N(u) + u); link every larger neighbour to m."""
    u, v = _sorted_unique(t.column("a").to_numpy(), t.column("b").to_numpy())
    if len(u) == 0:
        return EDGE_SCHEMA.empty_table()
    starts, run_of = _runs(u)
    m = np.minimum(np.minimum.reduceat(v, starts), u[starts])[run_of]
    sel = v > u
    return edges(v[sel], m[sel])


def _orient_down(t: pa.Table) -> pa.Table:
    a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
    loop = a == b
    if loop.any():
        a, b = a[~loop], b[~loop]
    return edges(np.maximum(a, b), np.minimum(a, b))


def _small_star(t: pa.Table) -> pa.Table:
    """Per node u with smaller neighbours N: m = min(N); link u and every member of N to m."""
    u, v = _sorted_unique(t.column("a").to_numpy(), t.column("b").to_numpy())
    if len(u) == 0:
        return EDGE_SCHEMA.empty_table()
    starts, run_of = _runs(u)
    m = np.minimum.reduceat(v, starts)
    mv = m[run_of]
    sel = v != mv
    return edges(np.concatenate([v[sel], u[starts]]), np.concatenate([mv[sel], m]))


def _dedup(t: pa.Table) -> pa.Table:
    a, b = _sorted_unique(t.column("a").to_numpy(), t.column("b").to_numpy())
    return edges(a, b)


def connected_components(frame: Frame, max_rounds: int = 64) -> Frame:
    """Star form of ``frame``'s undirected edges ``(a, b)``: one edge ``(node, component_min)`` per
    node that is not its component's minimum. Self-loops are ignored."""
    current = frame.map(_orient_down).group("a", _dedup).materialize()
    previous = current.checksum()
    for rounds in range(1, max_rounds + 1):
        large = current.map(_both_directions).group("a", _large_star)
        small = large.map(_orient_down).group("a", _small_star)
        current = small.group("a", _dedup).materialize()
        check = current.checksum()
        log.info("connected components: round %d, %d edges", rounds, check[0])
        if check == previous:
            return current
        previous = check
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
