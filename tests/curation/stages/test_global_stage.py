"""The global-stage kernel (``curation/stages/global_stage.py`` + ``frame.py``) as an extension point.

A stage outside dedup ("keep the longest document per domain") is written against the kernel
alone and run end to end with ``LocalFrame``, the way a new global stage is unit-tested.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pytest

from curation.stages.base import StageResult, split
from curation.stages.frame import LocalFrame, bucket_of
from curation.stages.global_stage import GlobalStage, row_positions

SCHEMA = pa.schema([pa.field("_task", pa.int32()), pa.field("_row", pa.int64()), pa.field("id", pa.string())])


class LongestPerDomain(GlobalStage):
    reason = "not_longest"
    result_schema = SCHEMA
    num_buckets = 4

    def key_columns(self) -> dict[str, pa.DataType]:
        return {"_len": pa.int64(), "_dom": pa.int64()}

    def add_keys(self, batch: pa.Table) -> pa.Table:
        lengths = [len(t) for t in batch.column("text").to_pylist()]
        domains = [zlib.crc32(d.encode()) for d in batch.column("domain").to_pylist()]  # group keys are integers
        return (batch.append_column("_len", pa.array(lengths, pa.int64()))
                .append_column("_dom", pa.array(domains, pa.int64())))

    def run_global(self, keys: LocalFrame) -> LocalFrame:  # type: ignore[override]
        def losers(t: pa.Table) -> pa.Table:
            rows = sorted(t.to_pylist(), key=lambda r: (r["_dom"], -r["_len"], r["id"]))
            best = {}
            for r in rows:
                best.setdefault(r["_dom"], r["id"])
            lost = [r for r in rows if best[r["_dom"]] != r["id"]]
            return pa.Table.from_pylist([{k: r[k] for k in SCHEMA.names} for r in lost], schema=SCHEMA)

        return keys.group("_dom", losers)

    def apply(self, batch: pa.Table, marks: pa.Table) -> StageResult:
        keep = row_positions(batch, marks) < 0
        return split(batch, keep, [None if k else self.reason for k in keep])


def test_a_global_stage_built_on_the_kernel_alone_runs_with_local_frames() -> None:
    docs = [("a", "web", "xx"), ("b", "web", "xxxx"), ("c", "code", "x"), ("d", "web", "x"), ("e", "code", "xyz")]
    batch = pa.table({"id": [d[0] for d in docs], "domain": [d[1] for d in docs], "text": [d[2] for d in docs],
                      "_task": pa.array([0] * len(docs), pa.int32()), "_row": pa.array(range(len(docs)), pa.int64())})
    stage = LongestPerDomain()
    keyed = stage.add_keys(batch)
    marks = stage.run_global(LocalFrame(keyed, num_buckets=stage.num_buckets)).collect()
    assert sorted(marks.column("id").to_pylist()) == ["a", "c", "d"]
    res = stage.apply(batch, marks)
    assert res.kept.column("id").to_pylist() == ["b", "e"] and res.reasons == ["not_longest"] * 3
    with pytest.raises(TypeError, match="global stage"):
        stage.process(batch)


def test_apply_is_part_of_the_kernel_contract() -> None:
    # Dropping named duplicates is dedup's business (DuplicateStage); the kernel has no default apply.
    class NoApply(GlobalStage):
        result_schema = SCHEMA

        def key_columns(self) -> dict[str, pa.DataType]:
            return {}

        def add_keys(self, batch: pa.Table) -> pa.Table:
            return batch

        def run_global(self, keys: LocalFrame) -> LocalFrame:  # type: ignore[override]
            return keys

    with pytest.raises(TypeError, match="apply"):
        NoApply()


def test_bucket_of_is_stable_and_in_range() -> None:
    keys = np.arange(1000, dtype=np.uint64)  # sequential keys still spread over every bucket
    got = bucket_of(keys, 8)
    assert np.array_equal(got, bucket_of(keys.copy(), 8)) and set(got.tolist()) == set(range(8))
