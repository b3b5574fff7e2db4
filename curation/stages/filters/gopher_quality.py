"""Gopher quality rules (Rae et al. 2021, App. A) via datatrove's ``GopherQualityFilter``."""

from __future__ import annotations

from dataclasses import dataclass

from curation.registry import register_stage
from curation.stages.filters._datatrove import DatatroveFilter, DatatroveImplOptions


@dataclass(kw_only=True)
class GopherQualityConfig(DatatroveImplOptions):
    """Thresholds as in docs/methods.md, Gopher quality rules (datatrove defaults). ``None`` disables a rule."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: int | None = 3
    max_avg_word_length: int | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: list[str] | None = None


@register_stage("gopher_quality_v1")
class GopherQuality(DatatroveFilter):
    """Drops documents failing Gopher's word-count, word-length, symbol and stop-word rules."""

    Config = GopherQualityConfig
    datatrove_filter = "GopherQualityFilter"
    fast_filter = "curation.stages.filters._gopher_quality"  # memoised per-word checks, same decisions
