"""``Frame`` on Ray Data: ``group`` is a shuffle (``groupby(...).map_groups``) across workers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from curation.stages.frame import TableFn, bucket_of, sum_checksums, table_checksum


def _with_bucket(t: pa.Table, key: str, num_buckets: int) -> pa.Table:
    return t.append_column("_bucket", pa.array(bucket_of(t.column(key).to_numpy(), num_buckets), pa.int32()))


def _without_bucket(t: pa.Table, fn: TableFn) -> pa.Table:
    return fn(t.drop_columns(["_bucket"]))


def _apply(t: pa.Table, fn: TableFn) -> pa.Table:
    return fn(t)


def _checksum_block(t: pa.Table) -> pa.Table:
    rows, total = table_checksum(t)
    return pa.table({"rows": pa.array([rows], pa.int64()), "sum": pa.array([total], pa.uint64())})


class RayFrame:
    """A Ray Data dataset seen as a ``Frame``; ``num_partitions`` bounds the shuffle width."""

    def __init__(self, ds: Any, num_buckets: int, num_partitions: int) -> None:
        self.ds = ds
        self.num_buckets = num_buckets
        self.num_partitions = num_partitions

    def _new(self, ds: Any) -> RayFrame:
        return RayFrame(ds, self.num_buckets, self.num_partitions)

    def map(self, fn: TableFn) -> RayFrame:
        return self._new(self.ds.map_batches(_apply, fn_kwargs={"fn": fn}, batch_format="pyarrow", batch_size=None))

    def group(self, key: str, fn: TableFn) -> RayFrame:
        keyed = self.ds.map_batches(_with_bucket, fn_kwargs={"key": key, "num_buckets": self.num_buckets},
                                    batch_format="pyarrow", batch_size=None)
        grouped = keyed.groupby("_bucket", num_partitions=self.num_partitions)
        return self._new(grouped.map_groups(_without_bucket, fn_kwargs={"fn": fn}, batch_format="pyarrow"))

    def union(self, *others: RayFrame) -> RayFrame:
        return self._new(self.ds.union(*[o.ds for o in others]))

    def materialize(self) -> RayFrame:
        return self._new(self.ds.materialize())

    def count(self) -> int:
        return int(self.ds.count())

    def collect(self) -> pa.Table:
        import ray

        tables = [t for t in ray.get(self.ds.to_arrow_refs()) if t.num_columns]
        return pa.concat_tables(tables) if tables else pa.table({})

    def checksum(self) -> tuple[int, int]:
        rows = self.ds.map_batches(_checksum_block, batch_format="pyarrow", batch_size=None).take_all()
        return sum_checksums([(int(r["rows"]), int(np.uint64(r["sum"]))) for r in rows])
