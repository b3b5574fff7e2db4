"""Helpers to run pipelines in tests and compare their outputs by content."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation.executors import RunResult, make_executor
from curation.pipeline import PipelineConfig


def run_pipeline(data: dict[str, Any], **kwargs: Any) -> RunResult:
    ex = make_executor(PipelineConfig.from_mapping(data), **kwargs)
    try:
        return ex.run()
    finally:
        ex.close()


def content(run_dir: Path) -> list[tuple[str, str]]:
    """Sorted multiset of (doc id, sha256(text)) over the run's shards."""
    rows = []
    for f in sorted((run_dir / "shards").glob("*.parquet")):
        t = pq.read_table(f, columns=["id", "text"])
        rows += [(i, hashlib.sha256(x.encode()).hexdigest()) for i, x in zip(t.column("id").to_pylist(), t.column("text").to_pylist())]
    return sorted(rows)


def shard_bytes(run_dir: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((run_dir / "shards").glob("*"))}
