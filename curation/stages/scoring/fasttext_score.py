"""Score documents with one or more fastText classifiers: a ``score_<name>`` column each.

The column is P(__label__1) from the model, on the text normalised exactly as at training time
(``curation.scoring.classifier.normalise``). Each model file is loaded once per worker process.
Nothing is dropped here; ``select_v1`` selects on a score column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curation.errors import ConfigError
from curation.registry import register_stage
from curation.scoring.classifier import positive_probability
from curation.stages.base import Stage, StageResult, split
from curation.stages.scoring.lm_loss import check_model_names

_MODELS: dict[str, Any] = {}


def load_fasttext(path: str) -> Any:
    if path not in _MODELS:
        import fasttext

        _MODELS[path] = fasttext.load_model(path)
    return _MODELS[path]


@dataclass(kw_only=True)
class ScorerSpec:
    """``name``: column suffix; ``path``: a model.bin, or the directory ``curate train-scorer`` wrote."""

    name: str
    path: str

    def model_file(self) -> str:
        p = Path(self.path)
        return str(p / "model.bin") if p.is_dir() else str(p)


@dataclass(kw_only=True)
class FastTextScoreConfig:
    models: list[ScorerSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_model_names([m.name for m in self.models])


@register_stage("fasttext_score_v1")
class FastTextScore(Stage):
    """Adds ``score_<name>`` (float32, P(positive)) for each model."""

    Config = FastTextScoreConfig
    requires = ("fasttext",)

    artifact_keys = ("models.*.path",)

    def __init__(self, config: FastTextScoreConfig | None = None) -> None:
        super().__init__(config)
        for m in self.config.models:
            if not Path(m.model_file()).is_file():
                raise ConfigError(f"fasttext_score_v1: model {m.name!r}: no file at {m.model_file()} "
                                  "(train one with `curate train-scorer`)")

    def setup(self) -> None:
        for m in self.config.models:
            load_fasttext(m.model_file())

    def output_columns(self) -> dict[str, pa.DataType]:
        return {f"score_{m.name}": pa.float32() for m in self.config.models}

    def process(self, batch: pa.Table) -> StageResult:
        texts = batch.column("text").to_pylist()
        for m in self.config.models:
            p = positive_probability(load_fasttext(m.model_file()), texts)
            batch = batch.append_column(f"score_{m.name}", pa.array(p.astype(np.float32)))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))
