"""skill_tag_v1: a ``skill`` column for Skill-It mixtures, from the domain, a metadata field, a
fastText topic classifier (its top label), or the nearest embedding k-means centroid (``curate
fit-skills``). The training loader groups by it (``group_by: skill``)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.errors import ConfigError
from curation.registry import register_stage
from curation.scoring.classifier import normalise
from curation.stages.base import Stage, StageResult, split
from curation.stages.scoring.fasttext_score import ScorerSpec, load_fasttext


@dataclass(kw_only=True)
class SkillTagConfig:
    """``source``: domain | metadata (``field`` of the input's extra fields) | fasttext (``model``:
    a model.bin or a train-scorer directory; the top label, ``__label__`` stripped) | embedding
    (``centroids``: a ``curate fit-skills`` JSON every worker can read; the name of the most
    cosine-similar centroid, embedded with ``model``, default the JSON's). Documents without a value
    (or with blank text) get ``default``. Embedding only: ``score_column`` (the cosine to that centroid, when set),
    ``batch_size``, ``max_tokens`` (default the JSON's), ``device`` (auto|cpu|cuda) and
    ``num_gpus`` (what a Ray task asks for: 1, or a fraction such as 0.5 to share a GPU; under
    Ray a task that asks for none sees no GPU, so set it on GPU clusters; ``device: cuda``
    requires it)."""

    source: Literal["domain", "embedding", "fasttext", "metadata"] = "domain"
    field: str | None = None
    model: str | None = None
    column: str = "skill"
    default: str = "unknown"
    centroids: str | None = None
    score_column: str | None = None
    batch_size: int = 64
    max_tokens: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        check_choices(self)
        if self.source == "metadata" and not self.field:
            raise ValueError("source metadata needs field")
        if self.source == "fasttext" and not self.model:
            raise ValueError("source fasttext needs model")
        if self.source == "embedding" and not self.centroids:
            raise ValueError("source embedding needs centroids (a `curate fit-skills` JSON)")
        if self.score_column and (self.source != "embedding" or self.score_column == self.column):
            raise ValueError("score_column needs source embedding and a name other than column")


@register_stage("skill_tag_v1")
class SkillTag(Stage):
    Config = SkillTagConfig

    artifact_keys = ("model", "centroids")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._centroids: Any = None
        self._emb: Any = None
        if self.config.source == "embedding":
            from curation.scoring.kmeans import SkillCentroids

            missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
            if missing:
                raise ConfigError(f"skill_tag_v1 source embedding needs {', '.join(missing)}: "
                                  f"pip install {' '.join(missing)}")
            self._centroids = SkillCentroids.load(self.config.centroids)  # fails early: missing or bad file

    def output_columns(self) -> dict[str, pa.DataType]:
        c = self.config
        return {c.column: pa.string(), **({c.score_column: pa.float64()} if c.score_column else {})}

    def resources(self) -> dict[str, float]:
        return {"num_gpus": self.config.num_gpus} if self.config.num_gpus else {}

    def cuda_demand(self) -> str | None:
        c = self.config
        return "device: cuda" if c.source == "embedding" and c.device == "cuda" else None

    def _embedder(self) -> Any:
        """The embedding model (loaded once per process), checked against the centroids' dim."""
        from curation.scoring.embed import Embedder

        if self._emb is not None:
            return self._emb
        c, cents = self.config, self._centroids
        emb = Embedder(model=c.model or cents.model, batch_size=c.batch_size, device=c.device,
                       max_tokens=c.max_tokens or cents.max_tokens)
        if emb.dim != cents.centroids.shape[1]:
            raise ConfigError(f"centroids file {c.centroids} has {cents.centroids.shape[1]}-dim centroids but model "
                              f"{emb.model!r} embeds in {emb.dim} dims: use the model the centroids were fit with")
        self._emb = emb
        return emb

    def setup(self) -> None:
        if self.config.source == "embedding":
            self._embedder()

    def _nearest(self, texts: list[str]) -> tuple[list[str], list[float | None]]:
        """Nearest centroid's name and its cosine per text; blank texts get the default and None."""
        c, cents = self.config, self._centroids
        live = [i for i, t in enumerate(texts) if t and t.strip()]
        tags: list[str] = [c.default] * len(texts)
        scores: list[float | None] = [None] * len(texts)
        if live:
            sims = self._embedder().embed([texts[i] for i in live]) @ cents.centroids.T
            best = sims.argmax(1)
            for i, j, s in zip(live, best, sims[np.arange(len(live)), best]):
                tags[i], scores[i] = cents.names[j], float(s)
        return tags, scores

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
        c = self.config
        if c.source == "embedding":
            tags, scores = self._nearest(batch.column("text").to_pylist())
            batch = batch.append_column(c.column, pa.array(tags, pa.string()))
            if c.score_column:
                batch = batch.append_column(c.score_column, pa.array(scores, pa.float64()))
        else:
            batch = batch.append_column(c.column, pa.array(self._tags(batch), pa.string()))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))
