"""Sequential in-process executor: same tasks and outputs as Ray, for debugging and unit tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.executors.base import Executor
from curation.executors.plan import Plan, Segment
from curation.executors.shard import run_shard
from curation.io.storage import read_parquet
from curation.io.writers import RollingParquetWriter
from curation.stages.global_stage import GlobalStage
from curation.stages.frame import LocalFrame


def key_read_columns(stage: GlobalStage) -> list[str]:
    return ["id", "_task", "_row", *stage.key_columns()]


def write_duplicates(plan: Plan, stage_index: int, dups: pa.Table) -> None:
    """Write resolved rows as ``_task=K/part-000.parquet`` folders (the layout Ray's partitioned write uses)."""
    if len(dups) == 0:
        return
    tasks = dups.column("_task").to_numpy()
    body = dups.drop_columns(["_task"])
    for t in np.unique(tasks):
        folder = plan.layout.dups_for_task(stage_index, int(t))
        w = RollingParquetWriter(folder, "", body.schema, single_name="part-000.parquet")
        w.write(body.filter(pa.array(tasks == t)))
        w.close()


def resolve_in_process(plan: Plan, seg: Segment, stage: GlobalStage, stage_index: int) -> None:
    """A global step in this process: every key of ``seg``'s work files in one table, resolved on a
    ``LocalFrame`` and written as ``write_duplicates`` does. The local executor's global step, and
    the Ray executor's when the keys are small (``executor.global_in_driver_mb``)."""
    cols = key_read_columns(stage)
    table = pa.concat_tables(
        [read_parquet(str(plan.layout.work(seg.index, t.index)), columns=cols) for t in plan.tasks]
    )
    result = stage.run_global(LocalFrame(table, num_buckets=stage.num_buckets)).table
    write_duplicates(plan, stage_index, result.cast(stage.result_schema))


class LocalExecutor(Executor):
    """Runs every task in this process, one after another."""

    def run_tasks(self, plan: Plan, seg: Segment, tasks: list[int]) -> None:
        for t in tasks:
            self.progress(run_shard(plan, seg.index, t))

    def run_global(self, plan: Plan, seg: Segment, stage: GlobalStage, stage_index: int) -> None:
        resolve_in_process(plan, seg, stage, stage_index)
