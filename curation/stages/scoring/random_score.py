"""A uniform pseudo-random score per document, from its id: the random-selection baseline.

``random_score_v1`` followed by ``select_v1`` on its column keeps a random share of the pool's
characters: the baseline any selection method has to beat at equal tokens. The score is a hash of
``(seed, id)``, not of the row position, so it does not depend on sharding, batch size, executor
or which other documents are in the run: rerunning or resuming gives the same selection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.registry import register_stage
from curation.stages.base import Stage, StageResult, split


def id_uniform(ids: list[str], seed: int) -> np.ndarray:
    """A float in [0, 1) per id: the first 8 bytes of blake2b(seed/id), scaled (53 bits kept)."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, doc_id in enumerate(ids):
        h = int.from_bytes(hashlib.blake2b(f"{seed}/{doc_id}".encode(), digest_size=8).digest(), "little")
        out[i] = (h >> 11) / float(1 << 53)
    return out


@dataclass(kw_only=True)
class RandomScoreConfig:
    """``name``: the column is ``score_<name>``. ``seed``: another seed, another random selection."""

    name: str = "random"
    seed: int = 0


@register_stage("random_score_v1")
class RandomScore(Stage):
    """Adds ``score_<name>`` (float64, uniform in [0, 1), a function of the document id and seed)."""

    Config = RandomScoreConfig

    def output_columns(self) -> dict[str, pa.DataType]:
        return {f"score_{self.config.name}": pa.float64()}

    def process(self, batch: pa.Table) -> StageResult:
        ids = [str(x) for x in batch.column("id").to_pylist()]
        batch = batch.append_column(f"score_{self.config.name}", pa.array(id_uniform(ids, self.config.seed), pa.float64()))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))
