"""Exact deduplication by a hash of whitespace-normalised text.

Of each group of identical texts the document first in input order (task, then row) is kept,
so the result is the same for any number of workers, blocks or retries.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import xxhash

from curation.config import check_choices
from curation.registry import register_stage
from curation.stages.dedup.base import DUPLICATE_SCHEMA, DuplicateStage
from curation.stages.frame import Frame

_WS = re.compile(r"\s+")


@dataclass(kw_only=True)
class ExactDedupConfig:
    """``normalize``: ``none`` (bytes), ``whitespace`` (NFC, collapse and strip whitespace) or
    ``lower`` (whitespace plus lowercase). ``num_buckets`` sets the parallelism of the resolve."""

    normalize: Literal["none", "whitespace", "lower"] = "whitespace"
    num_buckets: int = 64

    def __post_init__(self) -> None:
        check_choices(self)
        if self.num_buckets < 1:
            raise ValueError("num_buckets must be >= 1")


@register_stage("exact_dedup_v1")
class ExactDedup(DuplicateStage):
    """Keeps one document per normalised-text hash; drops the rest as ``exact_duplicate``."""

    Config = ExactDedupConfig
    reason = "exact_duplicate"

    def __init__(self, config: ExactDedupConfig | None = None) -> None:
        super().__init__(config)
        self.num_buckets = self.config.num_buckets

    def _norm(self, text: str) -> str:
        mode = self.config.normalize
        if mode == "none":
            return text
        text = _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()
        return text.lower() if mode == "lower" else text

    def key_columns(self) -> dict[str, pa.DataType]:
        return {"_exact_hash": pa.uint64()}

    def add_keys(self, batch: pa.Table) -> pa.Table:
        hashes = np.fromiter(
            (xxhash.xxh3_64_intdigest(self._norm(t).encode("utf-8", "surrogatepass")) for t in batch.column("text").to_pylist()),
            dtype=np.uint64, count=len(batch),
        )
        return batch.append_column("_exact_hash", pa.array(hashes))

    def run_global(self, keys: Frame) -> Frame:
        return keys.group("_exact_hash", self.resolve)

    def resolve(self, group: pa.Table) -> pa.Table:
        """Duplicates among rows that share a bucket of ``_exact_hash`` (all copies of a text do)."""
        h = group.column("_exact_hash").to_numpy()
        task = group.column("_task").to_numpy()
        row = group.column("_row").to_numpy()
        order = np.lexsort((row, task, h))  # by hash, then input order
        hs = h[order]
        first = np.ones(len(hs), dtype=bool)
        first[1:] = hs[1:] != hs[:-1]
        # Index of the run's first (kept) element for every position.
        keeper_pos = np.maximum.accumulate(np.where(first, np.arange(len(hs)), 0))
        dup = order[~first]
        keeper = order[keeper_pos[~first]]
        ids = group.column("id")
        return pa.table(
            {
                "_task": pa.array(task[dup], pa.int32()),
                "_row": pa.array(row[dup], pa.int64()),
                "id": ids.take(pa.array(dup, pa.int64())),
                "dup_of": ids.take(pa.array(keeper, pa.int64())),
            },
            schema=DUPLICATE_SCHEMA,
        )
