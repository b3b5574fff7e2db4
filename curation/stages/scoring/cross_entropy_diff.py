"""Moore–Lewis cross-entropy difference: how much more a document looks like the target than the pool.

For an LM trained on target text and one trained on the pool, both run by ``lm_loss_v1`` first,
``score_<name> = bpc_<general> - bpc_<target>`` (bits per character). A document the target LM finds
easy and the pool LM finds hard scores high; ``select_v1`` then keeps the top share. Per character,
not per document, so a long document is not favoured for its length (docs/methods.md, Moore–Lewis).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.registry import register_stage
from curation.stages.base import Stage, StageResult, split


@dataclass(kw_only=True)
class CrossEntropyDiffConfig:
    """``target``/``general``: the ``lm_loss_v1`` model names of the target LM and the pool LM.
    ``name``: the column is ``score_<name>``."""

    target: str
    general: str
    name: str = "moore_lewis"

    def __post_init__(self) -> None:
        if self.target == self.general:
            raise ValueError("target and general must name two different lm_loss_v1 models")


@register_stage("cross_entropy_diff_v1")
class CrossEntropyDiff(Stage):
    """Adds ``score_<name>`` (float64): general-LM bpc minus target-LM bpc; null where either is null."""

    Config = CrossEntropyDiffConfig

    def output_columns(self) -> dict[str, pa.DataType]:
        return {f"score_{self.config.name}": pa.float64()}

    def process(self, batch: pa.Table) -> StageResult:
        c = self.config
        cols = [f"bpc_{c.general}", f"bpc_{c.target}"]
        missing = [n for n in cols if n not in batch.column_names]
        if missing:
            raise ValueError(f"cross_entropy_diff_v1 needs columns {missing}: run lm_loss_v1 with these model names first")
        general, target = (batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in cols)
        batch = batch.append_column(f"score_{c.name}", pa.array(general - target, pa.float64(), from_pandas=True))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))
