"""The small table algebra global stages are written in, so they never see Ray.

A global stage receives a ``Frame`` of keyed rows and returns a ``Frame`` of resolved rows. The
executor supplies the implementation: ``LocalFrame`` (Arrow tables in this process, for tests
and small runs) or ``RayFrame`` (a Ray Data dataset; ``group`` is a shuffle across workers).
Both give identical results: ``group`` calls its function once per bucket with every row of
that bucket, and a stage's functions never depend on row order or bucket count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import pyarrow as pa

TableFn = Callable[[pa.Table], pa.Table]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-spread hash of uint64/int64 values."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64, copy=True)
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def bucket_of(values: np.ndarray, num_buckets: int) -> np.ndarray:
    """Bucket index (int32) of integer keys; spread even when keys are sequential."""
    return (mix64(values) % np.uint64(num_buckets)).astype(np.int32)


class Frame(Protocol):
    """A distributed table. Operations are lazy where the backend allows it."""

    def map(self, fn: TableFn) -> Frame:
        """Apply ``fn`` to every block (any split of the rows); ``fn`` must be row-local."""

    def group(self, key: str, fn: TableFn) -> Frame:
        """Call ``fn`` once per bucket of the integer column ``key`` with all rows of that bucket."""

    def union(self, *others: Frame) -> Frame:
        """Rows of this frame and of ``others`` (same schema)."""

    def materialize(self) -> Frame:
        """Compute now (the result is reused by several later steps)."""

    def count(self) -> int:
        """Number of rows."""

    def collect(self) -> pa.Table:
        """All rows as one table in this process: only for results known to be small."""

    def checksum(self) -> tuple[int, int]:
        """(rows, order-independent 64-bit sum of row hashes) of integer columns: a cheap
        convergence test for iterative algorithms."""


def table_checksum(table: pa.Table) -> tuple[int, int]:
    """Order-independent checksum of a table of integer columns."""
    if len(table) == 0:
        return 0, 0
    acc = np.zeros(len(table), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, col in enumerate(table.columns):
            acc = mix64(acc * np.uint64(0x9E3779B97F4A7C15 + 2 * i) + col.to_numpy().astype(np.uint64))
        return len(table), int(acc.sum(dtype=np.uint64))


def sum_checksums(parts: Sequence[tuple[int, int]]) -> tuple[int, int]:
    rows = sum(p[0] for p in parts)
    total = sum(p[1] for p in parts) % (1 << 64)
    return rows, total


class LocalFrame:
    """``Frame`` over Arrow tables held in this process."""

    def __init__(self, table: pa.Table, num_buckets: int = 16) -> None:
        self.table = table
        self.num_buckets = num_buckets

    def _new(self, table: pa.Table) -> LocalFrame:
        return LocalFrame(table, self.num_buckets)

    def map(self, fn: TableFn) -> LocalFrame:
        return self._new(fn(self.table))

    def group(self, key: str, fn: TableFn) -> LocalFrame:
        t = self.table
        if len(t) == 0:
            return self._new(fn(t))
        buckets = bucket_of(t.column(key).to_numpy(), self.num_buckets)
        order = np.argsort(buckets, kind="stable")
        t, buckets = t.take(pa.array(order)), buckets[order]
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        ends = np.r_[starts[1:], len(t)]
        return self._new(pa.concat_tables([fn(t.slice(s, e - s)) for s, e in zip(starts, ends)]))

    def union(self, *others: LocalFrame) -> LocalFrame:
        return self._new(pa.concat_tables([self.table, *[o.table for o in others]], promote_options="none"))

    def materialize(self) -> LocalFrame:
        return self

    def count(self) -> int:
        return len(self.table)

    def collect(self) -> pa.Table:
        return self.table

    def checksum(self) -> tuple[int, int]:
        return table_checksum(self.table)
