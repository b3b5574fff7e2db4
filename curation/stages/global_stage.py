"""Global stages: a keying pass per shard, a corpus-wide step, an applying pass.

The executor (local or Ray) does the data movement: it appends ``add_keys`` to the shard pass
before the stage, hands the key columns of every document to ``run_global`` as a ``Frame``
(Arrow tables in-process, or a Ray Data dataset), writes the resolved rows it returns per input
task, and in the next shard pass calls ``apply`` with each task's resolved rows. The stage only
sees Arrow tables and the ``Frame`` algebra (``curation/stages/frame.py``), so it is unit-testable
without Ray. Deduplication (``stages/dedup/``) and score selection (``select_v1``) are built on it.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.base import Stage, StageResult
from curation.stages.frame import Frame


class GlobalStage(Stage):
    """Base of corpus-wide stages: key each document, resolve over all of them, apply per task.

    A subclass sets ``result_schema`` (``_task``, ``_row``, ``id`` first, then what ``apply``
    needs) and ``reason`` (recorded for the rows it drops), and implements ``key_columns``,
    ``add_keys``, ``run_global`` and ``apply``.
    """

    #: Reason recorded in the decisions table for rows this stage drops.
    reason: str = "global"
    #: Schema of the rows ``run_global`` returns; the executor casts them to it before writing.
    result_schema: ClassVar[pa.Schema]
    #: Buckets of the corpus-wide step (its parallelism); the result never depends on it.
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
        rows in ``result_schema``. The result must not depend on row order, block count or
        bucket count."""

    @abstractmethod
    def apply(self, batch: pa.Table, marks: pa.Table) -> StageResult:
        """Decide the rows of ``batch`` (one input task, with ``_row``) given ``marks``: the
        resolved rows of that task (``row_positions`` matches them up)."""

    @property
    def warnings(self) -> list[dict[str, Any]]:
        """Findings of ``run_global`` that the run records (manifest ``warnings``) without failing;
        filled in the process that runs ``run_global`` (the driver), read by the executor."""
        return self.__dict__.setdefault("_warnings", [])

    @property
    def report(self) -> dict[str, Any]:
        """Figures of ``run_global`` the run records in its manifest (e.g. what each earlier run a
        dedup stage ran ``against`` removed); filled in the driver like ``warnings``."""
        return self.__dict__.setdefault("_report", {})

    def process(self, batch: pa.Table) -> StageResult:
        raise TypeError(f"{self.name} is a global stage; the executor runs it, not process()")


def row_positions(batch: pa.Table, marks: pa.Table) -> np.ndarray:
    """For each row of ``batch``, its index in ``marks`` (matched on ``_row``), or -1."""
    pos = pc.index_in(batch.column("_row"), value_set=marks.column("_row"))
    return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
