"""Global stages: a keying pass per shard, a corpus-wide resolve per bucket, a dropping pass.

The executor (local or Ray) does the data movement: it appends ``add_keys`` to the shard pass
before the stage, groups the key columns of every document by ``_bucket`` across the corpus,
calls ``resolve`` once per bucket, and drops the returned rows in the next shard pass. The
stage itself only sees Arrow tables, so it is unit-testable without Ray.
"""

from __future__ import annotations

from abc import abstractmethod

import pyarrow as pa

from curation.stages.base import Stage, StageResult

#: Columns ``resolve`` must return: which row is a duplicate, and of which kept document.
DUPLICATE_SCHEMA = pa.schema(
    [
        pa.field("_task", pa.int32(), nullable=False),
        pa.field("_row", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("dup_of", pa.string(), nullable=False),
    ]
)


class GlobalStage(Stage):
    """Base of corpus-wide stages (exact dedup, MinHash near-dedup)."""

    #: Reason recorded in the decisions table for rows this stage drops.
    reason: str = "duplicate"
    num_buckets: int = 64

    @abstractmethod
    def key_columns(self) -> dict[str, pa.DataType]:
        """Internal columns ``add_keys`` adds (``_bucket`` int32 among them)."""

    @abstractmethod
    def add_keys(self, batch: pa.Table) -> pa.Table:
        """Return ``batch`` with the key columns appended."""

    @abstractmethod
    def resolve(self, group: pa.Table) -> pa.Table:
        """Given every keyed row of one bucket (key columns, ``id``, ``_task``, ``_row``),
        return the rows to drop in ``DUPLICATE_SCHEMA``. Must not depend on row order."""

    def process(self, batch: pa.Table) -> StageResult:
        raise TypeError(f"{self.name} is a global stage; the executor runs it, not process()")
