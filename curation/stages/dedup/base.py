"""What the deduplication stages share: the resolved-row schema and dropping named duplicates.

The global-stage kernel itself (``GlobalStage``, ``row_positions``, the ``Frame`` algebra) lives in
``curation/stages/global_stage.py`` and ``curation/stages/frame.py``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.stages.base import StageResult, split
from curation.stages.global_stage import GlobalStage, row_positions

#: Columns ``resolve`` must return: which row is a duplicate, and of which kept document.
DUPLICATE_SCHEMA = pa.schema(
    [
        pa.field("_task", pa.int32(), nullable=False),
        pa.field("_row", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("dup_of", pa.string(), nullable=False),
    ]
)


class DuplicateStage(GlobalStage):
    """A global stage whose resolved rows name, per duplicate, the kept document (``dup_of``)."""

    reason = "duplicate"
    result_schema = DUPLICATE_SCHEMA

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
