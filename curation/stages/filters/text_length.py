"""Length bounds in characters; a cheap first filter before the tokenising ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.registry import register_stage
from curation.stages.base import Decisions, Filter


@dataclass(kw_only=True)
class TextLengthConfig:
    """Keep documents with ``min_chars <= n_chars <= max_chars``."""

    min_chars: int = 1
    max_chars: int | None = None

    def __post_init__(self) -> None:
        if self.min_chars < 0 or (self.max_chars is not None and self.max_chars < self.min_chars):
            raise ValueError("need 0 <= min_chars <= max_chars")


@register_stage("text_length_v1")
class TextLength(Filter):
    """Drops documents shorter than ``min_chars`` (``too_short``) or longer than ``max_chars``."""

    Config = TextLengthConfig

    def decide(self, batch: pa.Table) -> Decisions:
        n = batch.column("n_chars").to_numpy()
        short = n < self.config.min_chars
        long = n > self.config.max_chars if self.config.max_chars is not None else np.zeros(len(n), bool)
        reasons = ["too_short" if s else "too_long" if lg else None for s, lg in zip(short, long)]
        details = [{"n_chars": int(c)} if r else None for c, r in zip(n, reasons)]
        return Decisions(keep=~(short | long), reasons=reasons, details=details)
