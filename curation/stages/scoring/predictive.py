"""PreSelect's predictive strength S(d), from per-model losses already in columns.

See docs/methods.md, PreSelect: predictive strength.

For models sorted by downstream score, S(d) is the share of model pairs whose loss order on d
matches their score order (better model, lower loss). Tie rules, as in the released code: a pair
of models with equal downstream scores is left out (it is in neither numerator nor Z); a pair
with equal losses on d counts as discordant. A document missing any loss gets null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.registry import register_stage
from curation.stages.base import Stage, StageResult, split


def predictive_strength(losses: np.ndarray, scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(concordant pair counts, S)`` for a ``(documents, models)`` loss matrix."""
    s = np.asarray(scores, dtype=np.float64)
    pairs = [(i, j) for i in range(len(s)) for j in range(i + 1, len(s)) if s[i] != s[j]]
    if not pairs:
        raise ValueError("predictive strength needs at least two models with different scores")
    concordant = np.zeros(losses.shape[0], dtype=np.int64)
    for i, j in pairs:
        better, worse = (i, j) if s[i] > s[j] else (j, i)
        concordant += losses[:, better] < losses[:, worse]
    missing = np.isnan(losses).any(axis=1)
    strength = np.where(missing, np.nan, concordant / len(pairs))
    return np.where(missing, -1, concordant), strength


@dataclass(kw_only=True)
class ModelScore:
    """A model whose loss column is ``<loss>_<name>`` and its downstream benchmark score.
    ``replicas``: names of the same model trained with other seeds; the model's loss on a document
    is then the mean of its own column and theirs. Small reference models trained once order
    close pairs by seed noise; averaging seeds makes each pair's order on a document the model's."""

    name: str
    score: float
    replicas: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name in self.replicas or len(set(self.replicas)) != len(self.replicas):
            raise ValueError(f"models: {self.name}: replicas {self.replicas} repeat a name")


@dataclass(kw_only=True)
class PredictiveStrengthConfig:
    """``models``: names, downstream scores (at least two distinct) and optional seed ``replicas``. ``loss``: which
    columns to compare, ``bpc`` or ``nll`` (same order per document; bpc also across documents)."""

    models: list[ModelScore] = field(default_factory=list)
    loss: Literal["bpc", "nll"] = "bpc"

    def __post_init__(self) -> None:
        check_choices(self)
        if len({m.score for m in self.models}) < 2:
            raise ValueError("models: give at least two models with different downstream scores")


@register_stage("predictive_strength_v1")
class PredictiveStrength(Stage):
    """Adds ``predictive_strength`` (S in [0, 1]) and ``predictive_concordant`` (pair count)."""

    Config = PredictiveStrengthConfig

    def output_columns(self) -> dict[str, pa.DataType]:
        return {"predictive_strength": pa.float64(), "predictive_concordant": pa.int32()}

    def process(self, batch: pa.Table) -> StageResult:
        c = self.config
        groups = [[f"{c.loss}_{n}" for n in (m.name, *m.replicas)] for m in c.models]
        missing = [n for g in groups for n in g if n not in batch.column_names]
        if missing:
            raise ValueError(f"predictive_strength_v1 needs columns {missing}: run lm_loss_v1 with these model names first")

        def column(n: str) -> np.ndarray:
            return batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64)

        # a missing replica loss makes the mean NaN, so the document gets null like any missing loss
        losses = np.column_stack([np.mean([column(n) for n in g], axis=0) for g in groups])
        conc, strength = predictive_strength(losses, [m.score for m in c.models])
        batch = batch.append_column("predictive_strength", pa.array(strength, pa.float64(), from_pandas=True))
        batch = batch.append_column("predictive_concordant", pa.array(np.where(conc < 0, None, conc), pa.int32()))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))
