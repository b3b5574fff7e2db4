"""Run a stage on a few texts and return (kept texts, [(id, reason)])."""

from __future__ import annotations

import pyarrow as pa

from curation.schema import base_schema
from curation.stages.base import Stage


def batch_of(texts: list[str], urls: list[str | None] | None = None) -> pa.Table:
    n = len(texts)
    return pa.table({
        "id": [f"d{i}" for i in range(n)], "text": texts, "source": ["t"] * n, "domain": ["web"] * n,
        "url": urls or [None] * n, "metadata": [None] * n, "n_chars": [len(t) for t in texts],
    }, schema=base_schema())


def run(stage: Stage, texts: list[str], urls: list[str | None] | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    stage.setup()
    res = stage.process(batch_of(texts, urls))
    return res.kept.column("text").to_pylist(), list(zip(res.dropped.column("id").to_pylist(), res.reasons))
