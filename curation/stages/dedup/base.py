"""What the deduplication stages share: the resolved-row schema and dropping named duplicates.

The global-stage kernel itself (``GlobalStage``, ``row_positions``, the ``Frame`` algebra) lives in
``curation/stages/global_stage.py`` and ``curation/stages/frame.py``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.stages.base import StageResult, split
from curation.stages.global_stage import GlobalStage, row_positions

#: Reason of a document dropped because an earlier run (``against``) kept a duplicate of it.
CORPUS_REASON = "duplicate_of_corpus"

#: Columns ``resolve`` must return: which row is a duplicate, and of which kept document.
DUPLICATE_SCHEMA = pa.schema(
    [
        pa.field("_task", pa.int32(), nullable=False),
        pa.field("_row", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("dup_of", pa.string(), nullable=False),
        pa.field("dup_run", pa.string()),  # the earlier run (``against``) that kept ``dup_of``; null within the run
    ]
)


class DuplicateStage(GlobalStage):
    """A global stage whose resolved rows name, per duplicate, the kept document (``dup_of``)."""

    reason = "duplicate"
    result_schema = DUPLICATE_SCHEMA

    def apply(self, batch: pa.Table, marks: pa.Table) -> StageResult:
        """Drop the rows of ``batch`` that ``marks`` (this task's resolved rows) names with a
        ``dup_of``; the decision details record which document was kept instead, and for a
        document an earlier run kept (``dup_run``), that run (reason ``duplicate_of_corpus``)."""
        pos = row_positions(batch, marks)
        found = pos >= 0
        dup_of = marks.column("dup_of").to_pylist()
        dup_run = marks.column("dup_run").to_pylist()
        keep = np.ones(len(batch), dtype=bool)
        reasons: list[str | None] = [None] * len(batch)
        details: list[dict[str, str] | None] = [None] * len(batch)
        for i in np.flatnonzero(found):
            d, run = dup_of[int(pos[i])], dup_run[int(pos[i])]
            if d is not None:
                keep[i] = False
                reasons[i] = self.reason if run is None else CORPUS_REASON
                details[i] = {"dup_of": d} if run is None else {"dup_of": d, "run": run}
        return split(batch, keep, reasons, details)
