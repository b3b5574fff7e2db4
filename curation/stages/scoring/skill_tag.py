"""skill_tag_v1: a ``skill`` column for Skill-It mixtures, from the domain, a metadata field, or a
fastText topic classifier (its top label). The training loader groups by it (``group_by: skill``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.registry import register_stage
from curation.scoring.classifier import normalise
from curation.stages.base import Stage, StageResult, split
from curation.stages.scoring.fasttext_score import ScorerSpec, load_fasttext


@dataclass(kw_only=True)
class SkillTagConfig:
    """``source``: domain | metadata (``field`` of the input's extra fields) | fasttext (``model``:
    a model.bin or a train-scorer directory; the top label, ``__label__`` stripped). Documents
    without a value get ``default``."""

    source: str = "domain"
    field: str | None = None
    model: str | None = None
    column: str = "skill"
    default: str = "unknown"

    def __post_init__(self) -> None:
        if self.source not in ("domain", "metadata", "fasttext"):
            raise ValueError(f"source: {self.source!r} is not one of ['domain', 'fasttext', 'metadata']")
        if self.source == "metadata" and not self.field:
            raise ValueError("source metadata needs field")
        if self.source == "fasttext" and not self.model:
            raise ValueError("source fasttext needs model")


@register_stage("skill_tag_v1")
class SkillTag(Stage):
    Config = SkillTagConfig

    def output_columns(self) -> dict[str, pa.DataType]:
        return {self.config.column: pa.string()}

    def _tags(self, batch: pa.Table) -> list[str]:
        c = self.config
        if c.source == "domain":
            return [d or c.default for d in batch.column("domain").to_pylist()]
        if c.source == "metadata":
            out = []
            for m in batch.column("metadata").to_pylist():
                value: Any = json.loads(m).get(c.field) if m else None  # type: ignore[arg-type]
                out.append(c.default if value in (None, "") else str(value))
            return out
        model = load_fasttext(ScorerSpec(name="skill", path=c.model or "").model_file())
        labels, _ = model.predict([normalise(t) for t in batch.column("text").to_pylist()], k=1)
        return [ls[0].removeprefix("__label__") if ls else c.default for ls in labels]

    def process(self, batch: pa.Table) -> StageResult:
        batch = batch.append_column(self.config.column, pa.array(self._tags(batch), pa.string()))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))
