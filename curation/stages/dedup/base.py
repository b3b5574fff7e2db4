"""Global stages: a keying pass per shard, a corpus-wide step, an applying pass.

The executor (local or Ray) does the data movement: it appends ``add_keys`` to the shard pass
before the stage, hands the key columns of every document to ``run_global`` as a ``Frame``
(Arrow tables in-process, or a Ray Data dataset), writes the resolved rows it returns per input
task, and in the next shard pass calls ``apply`` with each task's resolved rows. The stage only
sees Arrow tables and the ``Frame`` algebra, so it is unit-testable without Ray.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.base import Stage, StageResult, split
from curation.stages.dedup.frame import Frame

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
    #: Schema of the rows ``run_global`` returns (``_task``, ``_row``, ``id``, ``dup_of`` first).
    result_schema: pa.Schema = DUPLICATE_SCHEMA
    num_buckets: int = 64

    @abstractmethod
    def key_columns(self) -> dict[str, pa.DataType]:
        """Internal columns ``add_keys`` adds."""

    @abstractmethod
    def add_keys(self, batch: pa.Table) -> pa.Table:
        """Return ``batch`` (with ``_task``/``_row``) with the key columns appended."""

    @abstractmethod
    def run_global(self, keys: Frame) -> Frame:
        """From every document's ``id``, ``_task``, ``_row`` and key columns, return the resolved
        rows in ``result_schema``: at least one per document to drop (``dup_of`` set). The result
        must not depend on row order, block count or bucket count."""

    @property
    def warnings(self) -> list[dict[str, Any]]:
        """Findings of ``run_global`` that the run records (manifest ``warnings``) without failing;
        filled in the process that runs ``run_global`` (the driver), read by the executor."""
        return self.__dict__.setdefault("_warnings", [])

    def apply(self, batch: pa.Table, marks: pa.Table) -> StageResult:
        """Drop the rows of ``batch`` that ``marks`` (this task's resolved rows) names with a
        ``dup_of``; the decision details record which document was kept instead."""
        pos = row_positions(batch, marks)
        found = pos >= 0
        dup_of = marks.column("dup_of").to_pylist()
        keep = np.ones(len(batch), dtype=bool)
        details: list[dict[str, str] | None] = [None] * len(batch)
        for i in np.flatnonzero(found):
            d = dup_of[int(pos[i])]
            if d is not None:
                keep[i] = False
                details[i] = {"dup_of": d}
        return split(batch, keep, [None if k else self.reason for k in keep], details)

    def process(self, batch: pa.Table) -> StageResult:
        raise TypeError(f"{self.name} is a global stage; the executor runs it, not process()")


def row_positions(batch: pa.Table, marks: pa.Table) -> np.ndarray:
    """For each row of ``batch``, its index in ``marks`` (matched on ``_row``), or -1."""
    pos = pc.index_in(batch.column("_row"), value_set=marks.column("_row"))
    return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
